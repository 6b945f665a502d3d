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

``--lower-only`` allocates nothing and runs nothing: the model, cache, draws and text keys/values
are ``jax.ShapeDtypeStruct`` s (``abstract_model`` / ``jax.eval_shape``), the block step is lowered
and compiled for them, and XLA's ``compiled.memory_analysis()`` (temporaries, arguments, outputs)
is reported next to the bytes of one float32 self-attention score tensor ``[B, H, Sq, Sk]``
(``Sq`` = the block's tokens, ``Sk`` = the window's: cache slots + the block). So the full model's
peak temporary memory can be checked on a machine that could not hold it:

  python experiments/bench_stream.py --preset wan2.1-t2v-1.3b --dtype bfloat16 --attention chunked \
    --lower-only --out experiments/results/bench_stream_lower_only.json

Normal mode also reports: time to first frame without compilation (``first_block_seconds_warm``: block 0
from a fresh cache, run after the step is compiled; the text encoding is ``encode_seconds_warm``, VAE
decoding is not included), the recache latency of a prompt switch past the window (``Streamer.recache``
with a new prompt's text K/V, median of ``--recache-runs`` after its own compile), and MFU from an analytic
FLOP count (:func:`block_flops`; XLA's ``cost_analysis`` counts a ``lax.scan`` body once, so it is not
used) against ``--peak-tflops`` (default: :data:`PEAK_TFLOPS` by device kind; none on CPU: MFU omitted).
``--quantize {int8,w8a8,fp8}`` quantises the DiT's linear layers (``quantize_dit``) before the run.

With ``--lower-only``, ``--out`` merges the run into the file's ``runs`` list (replacing a run of the same
preset, dtype, attention, latent size and stream shape), so one file collects several configurations.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import math
import os
import platform
import re
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax.config import ATTENTION_IMPLS, WanConfig, get_preset, tiny_config
from longlive_jax.model.attention.dispatch import resolve_impl
from longlive_jax.model.wan import abstract_model, count_params, init_model
from longlive_jax.quant import QUANT_MODES
from longlive_jax.stream.cache import StreamSpec
from longlive_jax.stream.driver import Streamer
from longlive_jax.stream.flops import block_flops, recache_flops, score_dims, score_tensor_bytes
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


# Fields of ``compiled.memory_analysis()`` worth reporting (bytes; backends may lack some).
MEMORY_FIELDS = (
  "temp_size_in_bytes",
  "argument_size_in_bytes",
  "output_size_in_bytes",
  "alias_size_in_bytes",
  "generated_code_size_in_bytes",
)


# Dense bfloat16 peak TFLOP/s by a substring of ``jax.Device.device_kind`` (first match wins). MFU is
# always against this bfloat16 peak, also for --quantize modes (int8 / fp8 peaks are about twice it).
PEAK_TFLOPS = (
  ("H200", 989.0),
  ("H100 PCIe", 756.0),
  ("H100", 989.0),  # SXM
  ("A100", 312.0),
  ("L40S", 362.0),
  ("TPU v6", 918.0),
  ("TPU v5p", 459.0),
  ("TPU v5 lite", 197.0),
  ("TPU v5e", 197.0),
  ("TPU v4", 275.0),
)


def peak_tflops(device_kind: str) -> float | None:
  """The :data:`PEAK_TFLOPS` entry of a device kind, or None (CPU, unknown accelerators)."""
  return next((p for name, p in PEAK_TFLOPS if name.lower() in device_kind.lower()), None)


def resolved_attention(cfg: WanConfig, spec: StreamSpec, *, batch: int = 1) -> dict:
  """What ``cfg.attention_impl`` resolves to (:func:`resolve_impl`, this backend) for the block's two calls.

  Self-attention: ``q [B, Sq, H, Dh]`` against the window's ``Sk`` keys; cross-attention: against
  the ``text_len`` text rows. Only shapes and dtypes are read.
  """
  dt = jnp.dtype(cfg.dtype)
  tpf = spec.tokens_per_frame
  heads = (cfg.num_heads, cfg.head_dim)
  q = jax.ShapeDtypeStruct((batch, spec.block_frames * tpf, *heads), dt)  # [B, Sq, H, Dh]
  k_self = jax.ShapeDtypeStruct((batch, spec.window_frames * tpf, *heads), dt)  # [B, Sk, H, Dh]
  k_cross = jax.ShapeDtypeStruct((batch, cfg.text_len, *heads), dt)  # [B, T, H, Dh]
  return {
    "self": resolve_impl(cfg.attention_impl, q=q, k=k_self),
    "cross": resolve_impl(cfg.attention_impl, q=q, k=k_cross),
  }


def abstract_block_args(st: Streamer, shape: BlockShape) -> tuple:
  """``jax.ShapeDtypeStruct`` s of every block-step argument, in ``Streamer._block``'s order.

  Shapes and dtypes are those the normal mode passes: parameters of the (abstract) model, the
  cache of ``st.init_cache``, float32 draws of :class:`KeyNoise` (no context draw), the text K/V
  of ``st.encode`` for a float32 prompt embedding, and the schedule.
  """
  cfg = st.cfg
  cache = jax.eval_shape(functools.partial(st.init_cache, batch=shape.batch))
  ctx = jax.ShapeDtypeStruct((shape.batch, cfg.text_len, cfg.text_dim), jnp.float32)
  ck, cv = jax.eval_shape(st._cross, st.params, ctx)  # [L, B, T, H, Dh] each
  noise = jax.ShapeDtypeStruct(shape.shape, jnp.float32)  # [B, n, H, W, C]
  renoise = jax.ShapeDtypeStruct((st.num_steps - 1, *shape.shape), jnp.float32)  # [steps - 1, B, n, H, W, C]
  ts, sig = (jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (st.timesteps, st.sigmas))  # [steps]
  return (st.params, cache, noise, renoise, None, ck, cv, ts, sig)


def run_info(a, *, attention_resolved: dict) -> dict:
  """The machine and the run's options, the head of both modes' JSON."""
  return {
    "device": str(jax.devices()[0].device_kind),
    "platform": jax.devices()[0].platform,
    "host": platform.processor() or platform.machine(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "preset": a.preset,
    "dtype": a.dtype,
    "attention": a.attention,
    "attention_resolved": attention_resolved,
  }


def tree_bytes(tree) -> int:
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


# Bytes per element of the HLO element types that occur in the block step.
_HLO_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4}
_HLO_ARRAY = re.compile(r"\b(" + "|".join(_HLO_BYTES) + r")\[([0-9,]*)\]")


def hlo_arrays(hlo_text: str) -> dict[str, int]:
  """Every distinct array type ``"f32[1,12,4680,18720]"`` of an HLO module's text with its bytes."""
  out = {}
  for ty, dims in _HLO_ARRAY.findall(hlo_text):
    shape = [int(d) for d in dims.split(",") if d]
    out[f"{ty}[{dims}]"] = math.prod(shape) * _HLO_BYTES[ty]
  return out


def score_sized_arrays(arrays: dict[str, int], *, sq: int, sk: int) -> list[str]:
  """The array types with both a query (``sq``) and a key (``sk``) axis: whole score tensors (or transposes)."""
  out = []
  for name in arrays:
    dims = [int(d) for d in name[name.index("[") + 1 : -1].split(",") if d]
    if sq in dims and sk in dims and (sq != sk or dims.count(sq) > 1):
      out.append(name)
  return sorted(out)


def memory_fields(compiled) -> dict:
  """The :data:`MEMORY_FIELDS` of ``compiled.memory_analysis()`` ({} where the backend reports none)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  return {k: int(getattr(stats, k)) for k in MEMORY_FIELDS if getattr(stats, k, None) is not None}


def lower_only(*, a, cfg: WanConfig, spec: StreamSpec, h: int, w: int) -> dict:
  """Lowers and compiles the block step for abstract inputs and reports its compiled memory analysis."""
  model = abstract_model(cfg)
  st = Streamer(model, spec)
  shape = BlockShape(batch=1, frames=a.block_frames, height=h, width=w, channels=cfg.in_dim)
  args = abstract_block_args(st, shape)
  t0 = time.perf_counter()
  lowered = st._block.lower(*args)
  lower_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  mem = memory_fields(compiled)
  score = score_tensor_bytes(spec=spec, num_heads=cfg.num_heads, batch=shape.batch)
  temp = mem.get("temp_size_in_bytes")
  sq, sk = score_dims(spec)
  arrays = hlo_arrays(compiled.as_text())  # the optimised program's arrays (parameters included)
  largest = sorted(arrays.items(), key=lambda kv: -kv[1])[:8]
  scores_in_hlo = score_sized_arrays(arrays, sq=sq, sk=sk)
  impls = resolved_attention(cfg, spec, batch=shape.batch)
  result = {
    "mode": "lower-only",
    **run_info(a, attention_resolved=impls),
    "params": count_params(model),
    "param_bytes": tree_bytes(st.params),
    "cache_bytes": tree_bytes(args[1]),
    "latent_hw": [h, w],
    "tokens_per_frame": spec.tokens_per_frame,
    "spec": dataclasses.asdict(spec),
    "score_shape": [shape.batch, cfg.num_heads, sq, sk],
    "score_tensor_bytes": score,
    "memory_analysis": mem,
    "temp_over_score_tensor": None if temp is None else temp / score,
    "score_sized_arrays_in_hlo": scores_in_hlo,
    "largest_arrays_in_hlo": dict(largest),
    "lower_seconds": lower_s,
    "compile_seconds": compile_s,
    "rss_peak_mb": rss_mb(),
  }
  gb = 1e-9
  temp_s = "n/a" if temp is None else f"{gb * temp:.3f} GB = {temp / score:.3f} score tensors"
  print(
    f"lower-only {a.preset} {a.dtype} attention={a.attention} (self: {impls['self']}, cross: {impls['cross']}): "
    f"temp {temp_s} ({gb * score:.3f} GB each), arguments {gb * mem.get('argument_size_in_bytes', 0):.3f} GB, "
    f"outputs {gb * mem.get('output_size_in_bytes', 0):.3f} GB; score-sized arrays in the compiled HLO: "
    f"{', '.join(scores_in_hlo) or 'none'}; lower {lower_s:.1f} s, compile {compile_s:.1f} s"
  )
  print(json.dumps(result, indent=2))
  if a.out:
    merge_run(a.out, result)
  return result


def merge_run(path: str, run: dict) -> None:
  """Adds ``run`` to the ``runs`` list of the JSON at ``path``, replacing a run of the same configuration."""
  key = ("preset", "dtype", "attention", "latent_hw", "spec")
  runs = []
  if os.path.exists(path):
    with open(path) as f:
      runs = json.load(f).get("runs", [])
  runs = [r for r in runs if any(r.get(k) != run[k] for k in key)] + [run]
  with open(path, "w") as f:
    json.dump({"runs": runs}, f, indent=2)


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
  ap.add_argument("--quantize", choices=QUANT_MODES, help="quantise the DiT's linear layers (quantize_dit) first")
  ap.add_argument(
    "--peak-tflops", type=float, help="device peak TFLOP/s for MFU (default: PEAK_TFLOPS by device kind; CPU: none)"
  )
  ap.add_argument("--warm-runs", type=int, default=3, help="timed runs of block 0 from a fresh cache (median)")
  ap.add_argument(
    "--recache-runs", type=int, default=3, help="timed recaches past the window (median; 0: skip the recache)"
  )
  ap.add_argument(
    "--lower-only",
    action="store_true",
    help="allocate nothing: lower + compile the block step for abstract shapes, report compiled.memory_analysis()",
  )
  a = ap.parse_args(argv)

  small = a.preset in ("cpu-small", "tiny")
  h = a.height or (16 if small else 60)
  w = a.width or (16 if small else 104)
  cfg = dataclasses.replace(model_config(a.preset, a.dtype), attention_impl=a.attention)
  if not a.lower_only and not a.relative_rope and a.blocks * a.block_frames > cfg.rope_max_len:
    sys.exit(f"--blocks {a.blocks} exceeds the {cfg.rope_max_len}-frame absolute RoPE table; add --relative-rope")
  spec = StreamSpec(
    block_frames=a.block_frames,
    sink_frames=a.sink,
    window_frames=a.window,
    tokens_per_frame=(h // 2) * (w // 2),
    relative_rope=a.relative_rope,
  )
  if a.lower_only and a.quantize:
    sys.exit("--quantize applies to the normal mode only, not --lower-only")
  if a.lower_only:
    return lower_only(a=a, cfg=cfg, spec=spec, h=h, w=w)
  t0 = time.perf_counter()
  model = init_model(cfg, seed=0)
  if a.quantize:
    from longlive_jax.quant.dit import quantize_dit

    model = quantize_dit(model, a.quantize)
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

  probe = (min(10, a.blocks // 2), min(200, a.blocks - 1))  # blocks 10 and 200 (earlier ones in a short run)
  times, mem, snaps = [], {}, {}
  history = collections.deque(maxlen=-(-spec.window_frames // spec.block_frames))  # latest x0 blocks, for recache
  for b in range(a.blocks):
    noise, renoise, ctx_eps = draws(b)
    if b in probe:
      snaps[b] = jax.tree.map(jnp.copy, cache)
    jax.block_until_ready(noise)
    t0 = time.perf_counter()
    x0, cache, _ = st.block(cache, noise, renoise, cross, ctx_eps)
    jax.block_until_ready((x0, cache))
    times.append(time.perf_counter() - t0)
    history.append(x0)
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

  # Time to first frame without compilation: block 0 from a fresh cache with the already compiled step
  # (times[0] above includes the jit's own compile). The prompt's text K/V are timed separately.
  warm = []
  for _ in range(a.warm_runs):
    c = st.init_cache(batch=1)
    noise, renoise, ctx_eps = draws(0)
    jax.block_until_ready((c, noise))
    t0 = time.perf_counter()
    jax.block_until_ready(st.block(c, noise, renoise, cross, ctx_eps))
    warm.append(time.perf_counter() - t0)
  enc = []
  for _ in range(a.warm_runs):
    t0 = time.perf_counter()
    jax.block_until_ready(st.encode(ctx))
    enc.append(time.perf_counter() - t0)

  # Recache on a prompt switch at the end of the run (past the window: the traced-frame program every later
  # switch reuses), with a new prompt's text K/V; the first call compiles, the next ones are timed.
  rec = {}
  switch = a.blocks * a.block_frames
  if switch > spec.window_frames and a.recache_runs > 0:
    latents = jnp.concatenate(list(history), axis=1)[:, -spec.window_frames :]  # [B, window, H, W, C]
    ctx2 = jax.random.normal(jax.random.key(2), (1, cfg.text_len, cfg.text_dim), jnp.float32)
    cross2 = jax.block_until_ready(st.encode(ctx2))
    rec_times = []
    for _ in range(1 + a.recache_runs):
      c = jax.tree.map(jnp.copy, cache)
      jax.block_until_ready(c)
      t0 = time.perf_counter()
      jax.block_until_ready(st.recache(c, latents, cross2, switch_frame=switch))
      rec_times.append(time.perf_counter() - t0)
    rec_s = statistics.median(rec_times[1:])
    rec = {
      "recache_switch_frame": switch,
      "recache_first_call_seconds": rec_times[0],
      "recache_compile_seconds_approx": rec_times[0] - rec_s,
      "recache_ms": 1e3 * rec_s,
      "recache_runs_ms": [round(1e3 * t, 3) for t in rec_times[1:]],
      "recache_flops": recache_flops(cfg, spec),
    }

  b10 = window_median(times, 10)
  b200 = window_median(times, min(200, a.blocks - 6))
  steady = statistics.median(times[5:])
  flops = block_flops(cfg, spec, num_steps=st.num_steps)
  kind = str(jax.devices()[0].device_kind)
  peak = a.peak_tflops if a.peak_tflops is not None else peak_tflops(kind)
  pixel_frames_per_block = 4 * a.block_frames  # after the first block, each latent frame decodes to 4 video frames
  result = {
    **run_info(a, attention_resolved=resolved_attention(cfg, spec)),
    "quantize": a.quantize,
    "params": count_params(model),
    "latent_hw": [h, w],
    "tokens_per_frame": spec.tokens_per_frame,
    "spec": dataclasses.asdict(spec),
    "blocks": a.blocks,
    "init_seconds": init_s,
    "compile_seconds": compile_s,
    "first_block_seconds": times[0],
    "first_block_seconds_warm": statistics.median(warm),
    "encode_seconds_warm": statistics.median(enc),
    "block10_ms": 1e3 * b10,
    "block200_ms": 1e3 * b200,
    "ratio_block200_over_block10": b200 / b10,
    "paired_block10_ms": 1e3 * p10,
    "paired_block200_ms": 1e3 * p200,
    "paired_ratio_block200_over_block10": p200 / p10,
    "paired_rounds": a.paired_rounds,
    "paired_blocks": list(probe),
    "steady_block_ms": 1e3 * steady,
    "latent_frames_per_s": a.block_frames / steady,
    "video_frames_per_s": pixel_frames_per_block / steady,
    "flops_per_block": flops["per_block"],
    "flops_per_pass": flops["per_pass"],
    "flops_passes": flops["passes"],
    "achieved_tflops": 1e-12 * flops["per_block"] / steady,
    "peak_tflops": peak,
    "mfu": None if peak is None else flops["per_block"] / steady / (1e12 * peak),
    **rec,
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
