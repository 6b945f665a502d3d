"""KV-recache on a prompt switch with LongLive's TRAINING-time semantics (streaming switch training).

Upstream's ``StreamingSwitchTrainingPipeline._recache_after_switch`` differs from the inference
recache (:func:`longlive_jax.stream.engine.recache`); a faithful Stage 2 reproduces it:

  * ``global_sink`` is read from a positional-args tuple and is therefore always False: the whole
    self-attention cache is zeroed first; the pointers are not reset;
  * the LAST ``m`` frames (``m`` = the streaming chunk, 21) are re-run in one t=0 pass with the new
    prompt at positions ``S - m .. S - 1``; ``sink_recache_after_switch`` is not passed, so:
      - ``S > m`` (a recompute): the sink slots are write-protected and stay ZERO (keys and values
        0, still attended: logit 0, value 0) for the rest of the sequence;
      - ``S == m`` (the pass starts at frame 0): the sink is rewritten with frames ``0 .. sink-1``;
  * inside that pass, as in every upstream KV-cache call, the queries attend to the buffer after the
    write: the sink slots plus the last ``window - sink`` written frames (unmasked), not to all
    ``m`` frames.

The cache then holds the sink (zeros, or frames 0..sink-1 under the new prompt) and the last
``ring`` frames before ``S`` under the new prompt; the next block at ``S`` attends to exactly what
upstream's next block attends to (reference index simulation: a switch at 39 gives
``[zeros x 3 | 33..38 | own]``, at 21 gives ``[0..2 | 15..20 | own]``).

``S`` may be traced (one compiled program for every switch frame). Absolute RoPE only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from longlive_jax.model.wan import WanDiT
from longlive_jax.stream.cache import KVCache, StreamSpec, ring_slots, write_frames

Array = jax.Array


def training_recache(
  model: WanDiT, cache: KVCache, latents: Array, *, cross, spec: StreamSpec, switch_frame: Array | int
) -> KVCache:
  """LongLive's training recache at ``S = switch_frame`` (see the module docstring).

  Args:
    model: the causal generator (no gradient is wanted here; pass stopped parameters).
    cache: the stream's cache; ``next_frame`` must be ``S``.
    latents: the clean latents of frames ``S - m .. S - 1``, ``[B, m, H, W, C]`` with ``m >= window``.
    cross: text K/V of the NEW prompt (``model.cross_kv``).
    switch_frame: ``S >= m`` (int or traced int32).
  """
  if spec.relative_rope:
    raise ValueError("training_recache: the training-time recache is defined for absolute RoPE only")
  b, m = latents.shape[:2]
  ns, tpf, ring = spec.sink_frames, spec.tokens_per_frame, spec.ring_frames
  if m < spec.window_frames:
    raise ValueError(
      f"training_recache: {m} recache frames (streaming chunk) must be >= window_frames ({spec.window_frames})"
    )
  s = jnp.asarray(switch_frame, jnp.int32)
  r0 = s - m
  recompute = r0 > 0  # upstream: current_start > 0 -> sink write-protected
  idx = jnp.arange(m, dtype=jnp.int32)
  own = (idx >= m - (spec.window_frames - ns)) | (~recompute & (idx < ns))  # [m] keys the pass attends to
  own_mask = jnp.broadcast_to(jnp.repeat(own, tpf)[None], (b, m * tpf))  # [B, m * tpf]
  n_layers, _, _, h, dh = cache.k.shape
  zeros = jnp.zeros((n_layers, b, ns * tpf, h, dh), cache.k.dtype)  # [L, B, sink * tpf, H, Dh]: the zeroed sink
  sink_valid = jnp.broadcast_to(recompute, (b, ns * tpf))  # attended (zeros) only when write-protected
  _, k_new, v_new = model.forward_tokens(
    latents,
    jnp.zeros((b, m), jnp.float32),
    cross_k=cross[0],
    cross_v=cross[1],
    frame_pos=r0 + idx,
    key_mask=own_mask,
    extra_kv=(zeros, zeros, sink_valid),
  )  # k_new, v_new [L, B, m * tpf, H, Dh]
  sink_k = jnp.where(recompute, 0.0, k_new[:, :, : ns * tpf]).astype(k_new.dtype)
  sink_v = jnp.where(recompute, 0.0, v_new[:, :, : ns * tpf]).astype(v_new.dtype)
  k_w = jnp.concatenate([sink_k, k_new[:, :, (m - ring) * tpf :]], axis=2)  # [L, B, (sink + ring) * tpf, H, Dh]
  v_w = jnp.concatenate([sink_v, v_new[:, :, (m - ring) * tpf :]], axis=2)
  ring_frames = s - ring + jnp.arange(ring, dtype=jnp.int32)
  frames = jnp.concatenate([jnp.arange(ns, dtype=jnp.int32), ring_frames])
  slots = jnp.concatenate([jnp.arange(ns, dtype=jnp.int32), ring_slots(spec, ring_frames)])
  cleared = cache.replace(k=jnp.zeros_like(cache.k), v=jnp.zeros_like(cache.v), frame=jnp.full_like(cache.frame, -1))
  out = write_frames(cleared, spec, k_new=k_w, v_new=v_w, frames=frames, slots=slots)
  return out.replace(next_frame=s)
