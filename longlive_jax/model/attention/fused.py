"""cuDNN flash attention through ``jax.nn.dot_product_attention``, with our masks mapped onto it.

cuDNN takes a mask either as key lengths (``key_value_seq_lengths``: keys ``[0, len)`` of each
sample are attended) or as a full ``[*, *, Sq, Sk]`` bias; a ``[B, 1, 1, Sk]`` key mask is refused
("Bias must have same seq length as QKV"). So:

  * ``key_mask [B, Sk]`` (streaming cache validity, padding): the keys are reordered so that each
    sample's valid keys form a prefix (a stable sort keeps their order) and the count is passed as
    ``key_value_seq_lengths``. Attention does not depend on key order, so this is exact; no score
    or bias tensor is built;
  * ``key_mask [B, Sq, Sk]`` (block-causal teacher forcing): passed as ``mask [B, 1, Sq, Sk]``
    (cuDNN turns it into an additive bias; the kernel is still fused, but the bias is
    ``Sq * Sk`` per sample);
  * no mask: plain fused attention.

A query with no valid key gets the mean of ``v``, as the reference does.

``implementation="xla"`` runs the same argument preparation through JAX's own XLA attention: on
CPU the tests check it against the reference, the only numeric check of this path without a GPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

FUSED_DTYPES = (jnp.bfloat16, jnp.float16)


def prefix_valid_keys(k: Array, v: Array, *, key_mask: Array) -> tuple[Array, Array, Array]:
  """Reorders keys so that each sample's valid keys come first.

  Args:
    k, v: ``[B, Sk, H, Dh]``.
    key_mask: bool ``[B, Sk]`` (True = attend).

  Returns:
    ``(k, v, lengths)``: keys/values ``[B, Sk, H, Dh]`` with the valid ones at ``[0, lengths[b])``
    in their original order, and int32 ``lengths [B]``.
  """
  invalid = jnp.logical_not(key_mask).astype(jnp.int32)  # [B, Sk]: 0 sorts first
  order = jnp.argsort(invalid, axis=1, stable=True)  # [B, Sk]
  idx = order[:, :, None, None]  # [B, Sk, 1, 1]
  k = jnp.take_along_axis(k, idx, axis=1)  # [B, Sk, H, Dh]
  v = jnp.take_along_axis(v, idx, axis=1)
  return k, v, jnp.sum(key_mask, axis=1, dtype=jnp.int32)


def fused_attention(
  q: Array, k: Array, v: Array, *, key_mask: Array | None = None, implementation: str = "cudnn"
) -> Array:
  """``jax.nn.dot_product_attention`` with our key masks (see the module docstring).

  Args:
    q: ``[B, Sq, H, Dh]``; bfloat16 or float16 for ``implementation="cudnn"``.
    k, v: ``[B, Sk, H, Dh]``, the dtype of ``q``.
    key_mask: optional bool ``[B, Sk]`` or ``[B, Sq, Sk]`` (the batch axis may be 1).
    implementation: "cudnn" (GPU) or "xla" (any backend: checks the preparation).

  Returns:
    ``[B, Sq, H, Dh]`` in ``v.dtype``.
  """
  if implementation == "cudnn" and q.dtype not in FUSED_DTYPES:
    raise ValueError(
      f"cudnn attention needs bfloat16 or float16 inputs, got {q.dtype}; "
      "use attention_impl 'auto', 'chunked' or 'xla' for this dtype"
    )
  b, sq, _, _ = q.shape
  sk = k.shape[1]
  if key_mask is None:
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
  key_mask = key_mask.astype(bool)
  if key_mask.ndim == 3:
    mask = jnp.broadcast_to(key_mask[:, None], (b, 1, sq, sk))  # [B, 1, Sq, Sk]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
  mean_v = jnp.mean(v.astype(jnp.float32), axis=1)[:, None].astype(v.dtype)  # [B, 1, H, Dh]
  kp, vp, lengths = prefix_valid_keys(k, v, key_mask=jnp.broadcast_to(key_mask, (b, sk)))
  out = jax.nn.dot_product_attention(q, kp, vp, key_value_seq_lengths=lengths, implementation=implementation)
  return jnp.where((lengths > 0)[:, None, None, None], out, mean_v)  # [B, Sq, H, Dh]
