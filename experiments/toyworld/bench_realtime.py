"""Real time on a laptop CPU: the shipped toy-world model's steady video frames/s with the VAE decode included,
and the time to the first frame after the model is loaded, on a first and a second run.

  python experiments/toyworld/bench_realtime.py --out experiments/results/toyworld_realtime.json

* Steady rate (in process): the CLI's path, block by block: the compiled block step (4 denoising steps + the
  cache-writing pass, with the sink and window it was trained with) and the streaming VAE decode of the block, synchronised on the
  pixels; blocks 5..N timed, median and mean reported as video frames/s (12 frames per block).
* Time to first frame (subprocesses of ``longlive-jax generate``): the CLI's "first block" time, which runs
  from the loaded model to the first decoded block, in a fresh process with an empty JAX compilation cache
  (first run) and again with the cache it left (second run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

PROMPT = "a red circle moves right on a blue background"


def steady(ckpt: str, blocks: int, rope_horizon: int | None = None) -> dict:
  from longlive_jax import checkpoint, pipeline
  from longlive_jax.stream import run as srun
  from longlive_jax.stream.noise import BlockShape, KeyNoise
  from longlive_jax.vae.stream import decode_step, init_decode_cache

  info = checkpoint.read_meta(ckpt)
  meta = info["meta"]
  h, w = checkpoint.native_latent_size(info)  # pixels / the VAE's stride
  stream = checkpoint.trained_stream(info)  # as `generate`
  if rope_horizon is not None:
    stream["rope_horizon"] = rope_horizon
  opts = srun.StreamOptions(frames=3 * blocks, height=h, width=w, **stream)
  st = srun.load_streamer(ckpt, opts)
  ctx = pipeline.TextEncoder(ckpt, text_len=st.cfg.text_len)([PROMPT])
  vae = pipeline.load_vae(ckpt)
  shape = BlockShape(batch=1, frames=3, height=h, width=w, channels=st.cfg.in_dim)
  sess = st.session(KeyNoise(jax.random.key(0), shape=shape, num_steps=4), jnp.asarray(ctx), batch=1)
  cache = init_decode_cache(vae, batch=1, height=h, width=w)
  times, frames = [], []
  for _ in range(blocks):
    t = time.perf_counter()
    _, x0, _ = sess.next_block()
    px, cache = decode_step(vae, cache, x0)
    px.block_until_ready()
    times.append(time.perf_counter() - t)
    frames.append(px.shape[1])
  body = times[5:]
  per_block = [f / t for f, t in zip(frames[5:], body, strict=True)]
  return {
    "blocks": blocks,
    "block_seconds": times,
    "median_block_ms": 1000 * statistics.median(body),
    "video_fps_median": statistics.median(per_block),
    "video_fps_mean": sum(frames[5:]) / sum(body),
    "resolution": meta["native_resolution"],
    "rope_horizon": opts.rope_horizon,
  }


def first_frame(ckpt: str, cache_dir: str) -> float:
  with tempfile.TemporaryDirectory() as tmp:
    env = {**os.environ, "LONGLIVE_JAX_CACHE": cache_dir}
    cmd = [sys.executable, "-m", "longlive_jax", "generate", PROMPT, "--checkpoint", ckpt, "--frames", "6", "--quiet"]
    r = subprocess.run([*cmd, "--out", str(Path(tmp) / "x.mp4")], env=env, capture_output=True, text=True, check=True)
  return float(re.search(r"first block ([0-9.]+) s", r.stdout).group(1))


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--checkpoint", help="whole-model checkpoint (default: the shipped toy-world model)")
  ap.add_argument("--blocks", type=int, default=60)
  ap.add_argument(
    "--compare-horizon",
    type=int,
    help="also time the steady rate with this RoPE horizon (0: absolute positions), right after the checkpoint's own",
  )
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  from longlive_jax.toyworld.model import default_checkpoint

  ckpt = a.checkpoint or str(default_checkpoint())
  with tempfile.TemporaryDirectory() as cache:
    ttff = {"first_run_s": first_frame(ckpt, cache), "second_run_s": first_frame(ckpt, cache)}
  res = {
    "checkpoint": ckpt,
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__},
    "steady": steady(ckpt, a.blocks),
    "time_to_first_frame": ttff,
  }
  if a.compare_horizon is not None:
    res["steady_compared"] = steady(ckpt, a.blocks, a.compare_horizon)
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(res, indent=2))
  s = res["steady"]
  print(
    f"steady: {s['video_fps_median']:.1f} video frames/s (median block {s['median_block_ms']:.0f} ms, 12 frames); "
    f"first frame: {ttff['first_run_s']:.1f} s (cold), {ttff['second_run_s']:.1f} s (cached)"
  )
  if "steady_compared" in res:
    c = res["steady_compared"]
    print(
      f"rope horizon {c['rope_horizon']}: {c['video_fps_median']:.1f} video frames/s (median block {c['median_block_ms']:.0f} ms)"
    )
  return 0 if np.isfinite(s["video_fps_median"]) else 1


if __name__ == "__main__":
  sys.exit(main())
