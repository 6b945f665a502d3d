"""Analytic matmul FLOPs and score-tensor sizes of the streaming block step (benchmarks' MFU, ablation costs).

XLA's ``cost_analysis()`` counts a scanned loop body once (it reports ~1.9 TFLOP for the 1.3B's whole block),
so MFU is computed from these counts instead. Conventions in :func:`pass_flops`.
"""

from __future__ import annotations

from longlive_jax.config import WanConfig
from longlive_jax.stream.cache import StreamSpec


def score_dims(spec: StreamSpec) -> tuple[int, int]:
  """``(Sq, Sk)`` of a block call's self-attention.

  Queries are the block's tokens (``Sq = block_frames * tpf``); keys are every cache slot plus the
  block's own (``Sk = (num_slots + block_frames) * tpf = window_frames * tpf``).
  """
  tpf = spec.tokens_per_frame
  return spec.block_frames * tpf, (spec.num_slots + spec.block_frames) * tpf


def score_tensor_bytes(*, spec: StreamSpec, num_heads: int, batch: int = 1) -> int:
  """Bytes of one float32 self-attention score tensor ``[B, H, Sq, Sk]`` of a block call (:func:`score_dims`).

  The "xla" attention materialises it (and its exponentials) in every layer call; "chunked" and
  "cudnn" never do.
  """
  sq, sk = score_dims(spec)
  return batch * num_heads * sq * sk * 4


def pass_flops(cfg: WanConfig, *, q_tokens: int, kv_tokens: int) -> int:
  """Matmul FLOPs of one DiT forward on ``q_tokens`` query tokens attending to ``kv_tokens`` keys.

  Convention: a multiply-add is 2 FLOPs; only matmuls are counted (norms, RoPE, softmax, modulation,
  patch embedding, head and the timestep MLP are O(S * D) or per-frame and below 0.5 %). Per layer, with
  ``S = q_tokens``, ``Sk = kv_tokens``, ``D = dim``, ``F = ffn_dim``, ``T = text_len``:

    * self-attention q, k, v, o projections: ``4 * 2 S D^2``;
    * cross-attention q and o projections: ``2 * 2 S D^2`` (the text's k and v are computed once per
      prompt by ``Streamer.encode``, not per pass, so they are not counted);
    * FFN, two matmuls: ``2 * 2 S D F``;
    * self-attention ``QK^T`` and ``PV`` over ``Sk`` keys: ``2 * 2 S Sk D`` (summed over heads);
    * cross-attention ``QK^T`` and ``PV`` over ``T`` text rows: ``2 * 2 S T D``.

  Times ``num_layers``.
  """
  s, sk, d, f, t = q_tokens, kv_tokens, cfg.dim, cfg.ffn_dim, cfg.text_len
  per_layer = 4 * 2 * s * d * d + 2 * 2 * s * d * d + 2 * 2 * s * d * f + 2 * 2 * s * sk * d + 2 * 2 * s * t * d
  return cfg.num_layers * per_layer


def block_flops(cfg: WanConfig, spec: StreamSpec, *, num_steps: int = 4, batch: int = 1) -> dict:
  """Analytic matmul FLOPs of one block step: ``num_steps`` denoising passes plus the cache-writing pass.

  Every pass (denoise or commit) runs the block's ``Sq = block_frames * tpf`` query tokens against every
  cache slot plus the block itself, ``Sk = (num_slots + block_frames) * tpf = window_frames * tpf`` keys
  (:func:`score_dims`). Slots not yet filled (the first ``window / block`` blocks) are masked, not skipped,
  so they are computed too: the count is the same for every block. Wan2.1 1.3B at 60 x 104 latents, 3-frame
  blocks, 12-frame window: 28.3 TFLOP per pass, 141.5 per block. See :func:`pass_flops`.
  """
  sq, sk = score_dims(spec)
  per_pass = batch * pass_flops(cfg, q_tokens=sq, kv_tokens=sk)
  passes = num_steps + 1
  return {"per_pass": per_pass, "passes": passes, "per_block": passes * per_pass, "q_tokens": sq, "kv_tokens": sk}


def recache_flops(cfg: WanConfig, spec: StreamSpec, *, batch: int = 1) -> int:
  """Analytic matmul FLOPs of a recache past the window with the sink kept (``global_sink``).

  One pass at t=0 on the ``window - sink`` frames it rewrites, against every cache slot (only the sink's
  are unmasked, all are computed) plus those frames: ``Sq = (window - sink) * tpf``,
  ``Sk = (num_slots + window - sink) * tpf``. See :func:`pass_flops`.
  """
  tpf = spec.tokens_per_frame
  q = (spec.window_frames - spec.sink_frames) * tpf
  return batch * pass_flops(cfg, q_tokens=q, kv_tokens=spec.num_slots * tpf + q)
