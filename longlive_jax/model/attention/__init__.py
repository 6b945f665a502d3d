"""Attention kernels of the DiT and the one dispatcher that chooses between them (see :mod:`.dispatch`)."""

from longlive_jax.config import ATTENTION_IMPLS
from longlive_jax.model.attention.chunked import chunked_attention
from longlive_jax.model.attention.dispatch import AUTO_CHUNK_MIN_SCORES, attention, override, resolve_impl
from longlive_jax.model.attention.fused import fused_attention, prefix_valid_keys
from longlive_jax.model.attention.reference import reference_attention
from longlive_jax.model.attention.splash import splash_attention, splash_supports

__all__ = [
  "ATTENTION_IMPLS",
  "AUTO_CHUNK_MIN_SCORES",
  "attention",
  "chunked_attention",
  "fused_attention",
  "override",
  "prefix_valid_keys",
  "reference_attention",
  "resolve_impl",
  "splash_attention",
  "splash_supports",
]
