"""The reference attention: one einsum for the scores, float32 softmax, one einsum for the output.

It materialises the whole ``[B, H, Sq, Sk]`` score tensor; every other implementation is tested
against it, and the golden cases (upstream parity) run through it.

Mask convention (shared by every implementation in this package): ``key_mask`` is bool, True =
"attend". A masked key gets the logit ``finfo(float32).min``; so a query whose keys are *all*
masked gets equal weights over all ``Sk`` keys (the mean of ``v``) rather than NaN.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def mask4(key_mask: Array) -> Array:
  """``[B, Sk]`` -> ``[B, 1, 1, Sk]``; ``[B, Sq, Sk]`` -> ``[B, 1, Sq, Sk]`` (broadcast over heads)."""
  return key_mask[:, None, None, :] if key_mask.ndim == 2 else key_mask[:, None]


def reference_attention(q: Array, k: Array, v: Array, *, key_mask: Array | None = None) -> Array:
  """Softmax attention with scale ``1/sqrt(Dh)``, float32 logits and softmax.

  Args:
    q: ``[B, Sq, H, Dh]``.
    k, v: ``[B, Sk, H, Dh]``.
    key_mask: optional bool ``[B, Sk]`` or ``[B, Sq, Sk]`` (the batch axis may be 1); False keys
      get zero weight.

  Returns:
    ``[B, Sq, H, Dh]`` in ``v.dtype``.
  """
  scale = 1.0 / math.sqrt(q.shape[-1])
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale  # [B, H, Sq, Sk]
  if key_mask is not None:
    logits = jnp.where(mask4(key_mask), logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, H, Sq, Sk]
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32).astype(v.dtype)  # [B, Sq, H, Dh]
