"""Streaming VAE decode of a long latent video: per-block latency and memory versus length.

Decodes ``--blocks`` blocks of ``--block-frames`` random latents (random weights) through
:func:`longlive_jax.vae.stream.decode_step`, discarding each block's pixels once computed
(as a player would), and records:
  * the latency of every block (block 0 includes the first-latent and steady-state compiles,
    block 1 is the first steady block that is already compiled when block 0 has >= 2 latents);
  * at blocks 10, 50, 100, 200, 500, 1000, 2000 (those <= --blocks): process RSS now and its peak
    (``ru_maxrss``), live JAX array bytes, device ``bytes_in_use`` where the backend reports
    it, and the number of compiled steady-state programs; the claim to check is that none of
    them grows with the video's length.

Examples (CPU):
  python experiments/bench_vae_stream.py --config tiny --blocks 200 --height 8 --width 8 --out /tmp/vae_tiny.json
  python experiments/bench_vae_stream.py --config wan2.1-vae --blocks 50 --height 4 --width 4 --out /tmp/vae_full.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from longlive_jax.vae import stream
from longlive_jax.vae.config import get_preset
from longlive_jax.vae.model import count_params, init_vae

CHECKPOINTS = (10, 50, 100, 200, 500, 1000, 2000)


def rss_bytes() -> int:
  """Resident set size now (Linux ``/proc/self/statm``), in bytes."""
  import os

  with open("/proc/self/statm") as fh:
    return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def live_array_bytes() -> int:
  return sum(a.nbytes for a in jax.live_arrays())


def device_bytes_in_use() -> int | None:
  stats = jax.devices()[0].memory_stats()
  return None if not stats else int(stats.get("bytes_in_use", 0))


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="tiny", help="VAE preset: tiny | wan2.1-vae")
  ap.add_argument("--blocks", type=int, default=200)
  ap.add_argument("--block-frames", type=int, default=3, help="latent frames per block")
  ap.add_argument("--height", type=int, default=8, help="latent height (video height / 8)")
  ap.add_argument("--width", type=int, default=8, help="latent width (video width / 8)")
  ap.add_argument("--dim", type=int, default=None, help="override the preset's base width (a mid-size model on CPU)")
  ap.add_argument("--dtype", default="float32", help="compute and parameter dtype: float32 | bfloat16")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", type=Path, default=None, help="JSON output path")
  args = ap.parse_args(argv)
  if args.blocks < 2 or args.block_frames < 1:
    ap.error("--blocks must be >= 2 and --block-frames >= 1")

  cfg = get_preset(args.config).replace(dtype=args.dtype, param_dtype=args.dtype)
  if args.dim is not None:
    cfg = cfg.replace(dim=args.dim)
  vae = init_vae(cfg, seed=args.seed)
  b, n, h, w = 1, args.block_frames, args.height, args.width
  cache = stream.init_decode_cache(vae, batch=b, height=h, width=w)
  cache_bytes = cache.nbytes
  key = jax.random.key(args.seed + 1)
  make_z = jax.jit(
    lambda i: jax.random.normal(jax.random.fold_in(key, i), (b, n, h, w, cfg.z_dim), jnp.dtype(cfg.dtype))
  )
  jax.block_until_ready(make_z(0))
  base = {"rss": rss_bytes(), "live_array_bytes": live_array_bytes(), "device_bytes_in_use": device_bytes_in_use()}

  latency, frames, marks = [], 0, []
  for i in range(args.blocks):
    z = jax.block_until_ready(make_z(i))
    t0 = time.perf_counter()
    px, cache = stream.decode_step(vae, cache, z)
    px = jax.block_until_ready(px)
    latency.append(time.perf_counter() - t0)
    frames += px.shape[1]
    del px  # a player would display and drop the block
    if i + 1 in CHECKPOINTS:
      marks.append(
        {
          "block": i + 1,
          "latents": int(cache.latents),
          "pixel_frames": frames,
          "rss_bytes": rss_bytes(),
          "peak_rss_bytes": peak_rss_bytes(),
          "live_array_bytes": live_array_bytes(),
          "device_bytes_in_use": device_bytes_in_use(),
          "cache_bytes": cache.nbytes,
          "steady_programs": stream.decode_steady._cache_size(),
        }
      )
      print(json.dumps(marks[-1]), flush=True)

  steady = latency[2:] if len(latency) > 2 else latency[1:]
  px_per_block = 4 * n
  result = {
    "config": args.config,
    "vae_config": cfg.to_dict(),
    "params": count_params(vae),
    "device": str(jax.devices()[0]),
    "backend": jax.default_backend(),
    "host": platform.node(),
    "blocks": args.blocks,
    "block_frames": n,
    "latent_hw": [h, w],
    "video_hw": [h * cfg.space_stride, w * cfg.space_stride],
    "cache_bytes": cache_bytes,
    "baseline": base,
    "first_block_s": latency[0],
    "second_block_s": latency[1],
    "steady_block_s": {
      "median": statistics.median(steady),
      "mean": statistics.fmean(steady),
      "p90": sorted(steady)[int(0.9 * (len(steady) - 1))],
      "max": max(steady),
    },
    "steady_pixel_fps": px_per_block / statistics.median(steady),
    "pixel_frames": frames,
    "checkpoints": marks,
    "latency_s": latency,
  }
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
  summary = {k: v for k, v in result.items() if k not in ("latency_s", "vae_config", "checkpoints")}
  print(json.dumps(summary, indent=1))
  return result


if __name__ == "__main__":
  main()
