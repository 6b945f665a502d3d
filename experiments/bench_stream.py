"""Streaming benchmark: per-block latency against block index, compile time, memory, cache bytes.

Runs the compiled block step (4 denoising steps + the cache-writing pass) for ``--blocks``
blocks, well past the attention window, and records each block's wall time (synchronised with
``block_until_ready``). The claim under test: with the frame sink + short window the cost of a
block does not depend on how long the video already is, so ``block 200 / block 10 ~ 1`` and
memory stays flat. Random weights (speed does not depend on their values).

  # CPU (the README's table):
  python experiments/bench_stream.py --preset cpu-small --blocks 210 --out bench_stream_cpu.json
  # GPU, full model, 480x832, bf16:
  python experiments/bench_stream.py --preset wan2.1-t2v-1.3b --dtype bfloat16 --blocks 210 --out bench_stream_gpu.json

Latencies of "block 10" and "block 200" are medians over blocks 5..15 and 195..205 of the run
(the raw per-block times are in the JSON), and, because background load on a shared machine
drifts during a run, also medians of a paired re-measurement: the caches of blocks 10 and 200
are snapshotted and the two blocks re-run alternately ``--paired-rounds`` times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax.config import ATTENTION_IMPLS, WanConfig, get_preset, tiny_config
from longlive_jax.model.wan import count_params, init_model
from longlive_jax.stream.cache import StreamSpec
from longlive_jax.stream.driver import Streamer
from longlive_jax.stream.noise import BlockShape, KeyNoise

# A CPU-sized model: every code path of the real one, small enough for 2 cores.
CPU_SMALL = dataclasses.replace(
  tiny_config(), dim=256, ffn_dim=1024, num_heads=4, num_layers=4, text_dim=256, text_len=64, freq_dim=64
)


def model_config(name: str, dtype: str) -> WanConfig:
  cfg = {"cpu-small": CPU_SMALL, "tiny": tiny_config()}.get(name) or get_preset(name)
  return dataclasses.replace(cfg, dtype=dtype)


def rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_bytes() -> dict:
  stats = jax.devices()[0].memory_stats() or {}
  live = sum(a.nbytes for a in jax.live_arrays())
  return {
    "live_array_bytes": int(live),
    **{k: int(v) for k, v in stats.items() if k in ("bytes_in_use", "peak_bytes_in_use")},
  }


def window_median(times: list[float], center: int, half: int = 5) -> float:
  lo, hi = max(center - half, 0), min(center + half + 1, len(times))
  return statistics.median(times[lo:hi])


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--preset", default="cpu-small", help="cpu-small | tiny | wan2.1-t2v-1.3b | wan2.1-t2v-14b")
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  ap.add_argument("--blocks", type=int, default=210)
  ap.add_argument("--height", type=int, help="latent height (default: 16 on cpu presets, 60 otherwise)")
  ap.add_argument("--width", type=int, help="latent width (default: 16 on cpu presets, 104 otherwise)")
  ap.add_argument("--block-frames", type=int, default=3)
  ap.add_argument("--sink", type=int, default=3)
  ap.add_argument("--window", type=int, default=12)
  ap.add_argument("--relative-rope", action="store_true")
  ap.add_argument("--attention", choices=ATTENTION_IMPLS, default="auto", help="WanConfig.attention_impl")
  ap.add_argument("--paired-rounds", type=int, default=15, help="interleaved re-measurements of blocks 10 and 200")
  ap.add_argument("--out", help="JSON output path")
  a = ap.parse_args(argv)

  small = a.preset in ("cpu-small", "tiny")
  h = a.height or (16 if small else 60)
  w = a.width or (16 if small else 104)
  cfg = dataclasses.replace(model_config(a.preset, a.dtype), attention_impl=a.attention)
  if not a.relative_rope and a.blocks * a.block_frames > cfg.rope_max_len:
    sys.exit(f"--blocks {a.blocks} exceeds the {cfg.rope_max_len}-frame absolute RoPE table; add --relative-rope")
  spec = StreamSpec(
    block_frames=a.block_frames,
    sink_frames=a.sink,
    window_frames=a.window,
    tokens_per_frame=(h // 2) * (w // 2),
    relative_rope=a.relative_rope,
  )
  t0 = time.perf_counter()
  model = init_model(cfg, seed=0)
  init_s = time.perf_counter() - t0
  st = Streamer(model, spec)
  shape = BlockShape(batch=1, frames=a.block_frames, height=h, width=w, channels=cfg.in_dim)
  draws = KeyNoise(jax.random.key(0), shape=shape, num_steps=st.num_steps)
  ctx = jax.random.normal(jax.random.key(1), (1, cfg.text_len, cfg.text_dim), jnp.float32)
  cross = st.encode(ctx)
  cache = st.init_cache(batch=1)

  # Compile time: ahead-of-time lowering + compilation of the block step.
  noise, renoise, ctx_eps = draws(0)
  t0 = time.perf_counter()
  st._block.lower(st.params, cache, noise, renoise, ctx_eps, cross[0], cross[1], st.timesteps, st.sigmas).compile()
  compile_s = time.perf_counter() - t0

  probe = (10, min(200, a.blocks - 1))
  times, mem, snaps = [], {}, {}
  for b in range(a.blocks):
    noise, renoise, ctx_eps = draws(b)
    if b in probe:
      snaps[b] = jax.tree.map(jnp.copy, cache)
    jax.block_until_ready(noise)
    t0 = time.perf_counter()
    x0, cache, _ = st.block(cache, noise, renoise, cross, ctx_eps)
    jax.block_until_ready((x0, cache))
    times.append(time.perf_counter() - t0)
    if b in (10, 50, 100, 200) or b == a.blocks - 1:
      mem[str(b)] = {"rss_peak_mb": rss_mb(), **device_bytes(), "cache_bytes": cache.nbytes}
  assert np.all(np.isfinite(np.asarray(x0))), "non-finite output"

  # Paired, interleaved re-measurement of blocks 10 and 200 from snapshots of their caches: background load on a
  # shared machine drifts over the run and would bias a sequential comparison; alternating cancels it.
  paired = {b: [] for b in probe}
  for _ in range(a.paired_rounds):
    for b in probe:
      c = jax.tree.map(jnp.copy, snaps[b])
      noise, renoise, ctx_eps = draws(b)
      jax.block_until_ready((c, noise))
      t0 = time.perf_counter()
      jax.block_until_ready(st.block(c, noise, renoise, cross, ctx_eps))
      paired[b].append(time.perf_counter() - t0)
  p10, p200 = (statistics.median(paired[b]) for b in probe)

  b10 = window_median(times, 10)
  b200 = window_median(times, min(200, a.blocks - 6))
  steady = statistics.median(times[5:])
  pixel_frames_per_block = 4 * a.block_frames  # after the first block, each latent frame decodes to 4 video frames
  result = {
    "device": str(jax.devices()[0].device_kind),
    "platform": jax.devices()[0].platform,
    "host": platform.processor() or platform.machine(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "preset": a.preset,
    "dtype": a.dtype,
    "params": count_params(model),
    "latent_hw": [h, w],
    "tokens_per_frame": spec.tokens_per_frame,
    "spec": dataclasses.asdict(spec),
    "blocks": a.blocks,
    "init_seconds": init_s,
    "compile_seconds": compile_s,
    "first_block_seconds": times[0],
    "block10_ms": 1e3 * b10,
    "block200_ms": 1e3 * b200,
    "ratio_block200_over_block10": b200 / b10,
    "paired_block10_ms": 1e3 * p10,
    "paired_block200_ms": 1e3 * p200,
    "paired_ratio_block200_over_block10": p200 / p10,
    "paired_rounds": a.paired_rounds,
    "steady_block_ms": 1e3 * steady,
    "latent_frames_per_s": a.block_frames / steady,
    "video_frames_per_s": pixel_frames_per_block / steady,
    "executables_compiled": st._block._cache_size(),
    "cache_bytes": cache.nbytes,
    "memory": mem,
    "per_block_ms": [round(1e3 * t, 3) for t in times],
  }
  summary = {k: v for k, v in result.items() if k != "per_block_ms"}
  print(json.dumps(summary, indent=2))
  if a.out:
    with open(a.out, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
