"""Where does one CPU core spend peer_bench's medium attention call, and do XLA:CPU's options help?

  taskset -c 1 python experiments/cpu_kernels.py [--rounds 15] [--out experiments/results/cpu_kernels.json]

Shapes: one medium self-attention call of the streaming block (8 heads of 64, the block's 768 queries against
the 3840-slot window of which 3072 are valid, the last 768 masked: the steady state of the 12-frame window).
Every program is compiled in this process and the programs are timed in turns (round-robin, ``--rounds``
rounds, median per program; each timed call follows an untimed one of the same program), so machine drift
hits them alike. Reported:

  * ``attention``: the project's ``chunked_attention`` (masked, empty chunks skipped) against the bare
    online-softmax loop on the 3072 valid keys (no mask, no skipping: the least any 256x256-chunked kernel
    does), the same loop with the softmax replaced by the identity (the two matmuls alone), and the
    reference einsum path;
  * ``compiler_options``: the chunked call and a dense layer ``[768, 512] x [512, 2048]`` compiled with XLA:CPU
    options that route dots to other libraries (XNNPACK, oneDNN) or relax float semantics (fast math);
  * ``dtypes``: that dense layer in float32 and bfloat16 (does XLA:CPU use the core's bf16 units?).

Run it with the Eigen thread pool off (set here) on one pinned core, like peer_bench's workers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from longlive_jax.model.attention.chunked import chunked_attention  # noqa: E402
from longlive_jax.model.attention.reference import reference_attention  # noqa: E402

B, SQ, SK, VALID, H, D, DIM, FFN, CHUNK = 1, 768, 3840, 3072, 8, 64, 512, 2048, 256
OPTIONS = {
  "default": {},
  "xnnpack": {"xla_cpu_use_xnnpack": True},
  "onednn": {"xla_cpu_use_onednn": True},
  "fast_math": {"xla_cpu_enable_fast_math": True},
}


def online_softmax_loop(q, k, v, *, softmax: bool = True):
  """Bare 256x256 online softmax over head-major copies (no mask): the floor of a chunked kernel."""
  qh = jnp.transpose(q, (0, 2, 1, 3)) * (1.0 / np.sqrt(D))  # [B, H, Sq, Dh]
  kh, vh = jnp.transpose(k, (0, 2, 1, 3)), jnp.transpose(v, (0, 2, 1, 3))  # [B, H, Sk, Dh]

  def one(i):
    qi = jax.lax.dynamic_slice_in_dim(qh, i * CHUNK, CHUNK, axis=2)  # [B, H, qc, Dh]

    def update(carry, j):
      m, denom, acc = carry
      kj = jax.lax.dynamic_slice_in_dim(kh, j * CHUNK, CHUNK, axis=2)  # [B, H, kc, Dh]
      vj = jax.lax.dynamic_slice_in_dim(vh, j * CHUNK, CHUNK, axis=2)
      s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj)  # [B, H, qc, kc]
      if not softmax:
        return (m, denom, acc + jnp.einsum("bhqk,bhkd->bhqd", s, vj)), None
      m_new = jnp.maximum(m, jnp.max(s, -1))
      alpha, p = jnp.exp(m - m_new), jnp.exp(s - m_new[..., None])
      return (
        m_new,
        alpha * denom + jnp.sum(p, -1),
        acc * alpha[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p, vj),
      ), None

    init = (jnp.full((B, H, CHUNK), -1e30), jnp.zeros((B, H, CHUNK)), jnp.zeros((B, H, CHUNK, D)))
    (_, denom, acc), _ = jax.lax.scan(update, init, jnp.arange(k.shape[1] // CHUNK))
    return acc / (denom[..., None] + (0.0 if softmax else 1.0))  # [B, H, qc, Dh]

  out = jax.lax.map(one, jnp.arange(SQ // CHUNK))  # [nq, B, H, qc, Dh]
  return jnp.transpose(out, (1, 2, 0, 3, 4)).reshape(B, H, SQ, D).transpose(0, 2, 1, 3)  # [B, Sq, H, Dh]


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--rounds", type=int, default=15)
  ap.add_argument("--out", help="write the medians (ms) as JSON here")
  a = ap.parse_args()
  r = np.random.default_rng(0)
  q = jnp.asarray(r.standard_normal((B, SQ, H, D), np.float32))
  k = jnp.asarray(r.standard_normal((B, SK, H, D), np.float32))
  v = jnp.asarray(r.standard_normal((B, SK, H, D), np.float32))
  mask = jnp.asarray(np.arange(SK)[None] < VALID)  # [1, Sk]
  kv, vv = k[:, :VALID], v[:, :VALID]
  x = {dt: jnp.asarray(r.standard_normal((SQ, DIM)), dt) for dt in ("float32", "bfloat16")}
  w = {dt: jnp.asarray(r.standard_normal((DIM, FFN)), dt) for dt in ("float32", "bfloat16")}

  def chunked(q, k, v, m):
    return chunked_attention(q, k, v, key_mask=m)

  def dense(x, w):
    return x @ w  # [Sq, FFN]

  def compiled(fn, args, options=None):
    return jax.jit(fn).lower(*args).compile(compiler_options=options or {}), args

  programs = {
    "attention/chunked_masked": compiled(chunked, (q, k, v, mask)),
    "attention/online_softmax_floor": compiled(online_softmax_loop, (q, kv, vv)),
    "attention/matmuls_only": compiled(lambda q, k, v: online_softmax_loop(q, k, v, softmax=False), (q, kv, vv)),
    "attention/reference": compiled(lambda q, k, v, m: reference_attention(q, k, v, key_mask=m), (q, k, v, mask)),
    "dtypes/dense_float32": compiled(dense, (x["float32"], w["float32"])),
    "dtypes/dense_bfloat16": compiled(dense, (x["bfloat16"], w["bfloat16"])),
  }
  for name, opts in OPTIONS.items():
    if name != "default":
      programs[f"compiler_options/chunked_{name}"] = compiled(chunked, (q, k, v, mask), opts)
      programs[f"compiler_options/dense_{name}"] = compiled(dense, (x["float32"], w["float32"]), opts)
  ref = np.asarray(programs["attention/reference"][0](q, k, v, mask))
  err = float(np.max(np.abs(np.asarray(programs["attention/chunked_masked"][0](q, k, v, mask)) - ref)))
  times: dict[str, list[float]] = {n: [] for n in programs}
  for f, args in programs.values():
    jax.block_until_ready(f(*args))  # warm
  for _ in range(a.rounds):
    for n, (f, args) in programs.items():
      jax.block_until_ready(f(*args))  # untimed: the previous program (e.g. the reference's 94 MB) left the caches cold
      t0 = time.perf_counter()
      jax.block_until_ready(f(*args))
      times[n].append(time.perf_counter() - t0)
  med = {n: round(1e3 * statistics.median(t), 2) for n, t in times.items()}
  med["compiler_options/chunked_default"] = med["attention/chunked_masked"]
  med["compiler_options/dense_default"] = med["dtypes/dense_float32"]
  for n in sorted(med):
    print(f"{n:40s} {med[n]:8.2f} ms")
  print(f"chunked vs reference max abs err: {err:.1e}")
  if a.out:
    out = {
      "shapes": {"B": B, "Sq": SQ, "Sk": SK, "valid_keys": VALID, "heads": H, "head_dim": D, "dense": [SQ, DIM, FFN]},
      "rounds": a.rounds,
      "jax": jax.__version__,
      "median_ms": med,
      "chunked_max_abs_err": err,
    }
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
