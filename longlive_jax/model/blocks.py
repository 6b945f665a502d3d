"""The per-layer modules of the Wan2.1 diffusion transformer (Flax NNX): the shared q / k / v / o projections,
self-attention (qk RMSNorm, 3D RoPE, optional KV-cache keys), cross-attention to the text, the feed-forward
network and :class:`WanBlock`, one adaLN-modulated transformer block.

:class:`longlive_jax.model.wan.WanDiT` stacks these blocks (``nnx.vmap`` + ``jax.lax.scan``); they live here so
the model file holds the model. ``longlive_jax.model.wan`` re-exports every name of this module. Layouts are
those of :mod:`longlive_jax.model.wan`: tokens ``[B, S, D]``, per-head tensors ``[B, S, H, Dh]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from longlive_jax.config import WanConfig
from longlive_jax.model import layers
from longlive_jax.model.attention import attention
from longlive_jax.model.rope import apply_rope

Array = jax.Array


def _dtype(name: str):
  return jnp.dtype(name)


class _Projections(nnx.Module):
  """The q / k / v / o projections (``dim -> dim``) and the optional qk RMSNorms over the full width that Wan's
  self- and cross-attention share (upstream ``WanSelfAttention``, which ``WanCrossAttention`` subclasses)."""

  def __init__(self, cfg: WanConfig, *, rngs: nnx.Rngs):
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    self.q = layers.Dense(cfg.dim, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.k = layers.Dense(cfg.dim, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.v = layers.Dense(cfg.dim, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.o = layers.Dense(cfg.dim, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    if cfg.qk_norm:
      self.norm_q = layers.RMSNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pdt)
      self.norm_k = layers.RMSNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pdt)
    self.num_heads = cfg.num_heads
    self.qk_norm = cfg.qk_norm
    self.impl = cfg.attention_impl


class SelfAttention(_Projections):
  """Self-attention with qk RMSNorm over the full width (before the head split) and 3D RoPE."""

  def qkv(self, x: Array) -> tuple[Array, Array, Array]:
    """Un-rotated q, k and v of tokens ``x [B, S, D]`` -> each ``[B, S, H, Dh]``."""
    b, s, d = x.shape
    q, k = self.q(x), self.k(x)
    if self.qk_norm:
      q, k = self.norm_q(q), self.norm_k(k)
    v = self.v(x)
    shape = (b, s, self.num_heads, d // self.num_heads)
    q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)  # [B, S, H, Dh]
    return q, k, v

  def __call__(
    self,
    x: Array,
    *,
    cos: Array,
    sin: Array,
    key_mask: Array | None,
    extra_kv: tuple[Array, Array, Array] | None,
    extra_rope: tuple[Array, Array] | None = None,
  ) -> tuple[Array, Array, Array]:
    """Returns ``(out [B, S, D], k_store [B, S, H, Dh], v_new)``.

    ``key_mask`` is bool ``[B, S]`` (padding) or ``[B, S, S]`` (query-dependent, e.g. block-causal).
    ``extra_kv = (k, v, valid)`` with ``k, v [B, Sc, H, Dh]`` and bool ``valid [B, Sc]``
    are keys/values placed before the new ones (a KV cache). With ``extra_rope=None``
    the cached keys are already rotated (absolute RoPE) and ``k_store`` is the roped
    new key. With ``extra_rope = (cos, sin) [Sc, Dh/2]`` (relative / "infinity" RoPE)
    cached keys are raw, rotated here at their current positions, and ``k_store`` is raw.
    """
    b, s, d = x.shape
    q, k_raw, v = self.qkv(x)
    q, k = apply_rope(q, cos, sin), apply_rope(k_raw, cos, sin)
    keys, values, mask = k, v, key_mask
    if extra_kv is not None:
      ek, ev, evalid = extra_kv
      if extra_rope is not None:
        ek = apply_rope(ek, *extra_rope)
      keys = jnp.concatenate([ek.astype(k.dtype), k], axis=1)  # [B, Sc + S, H, Dh]
      values = jnp.concatenate([ev.astype(v.dtype), v], axis=1)
      own = jnp.ones((b, s), bool) if key_mask is None else key_mask  # [B, S] or [B, S, S]
      if own.ndim == 3:  # query-dependent mask: cached keys are visible to every query
        evalid = jnp.broadcast_to(evalid[:, None, :], (b, s, evalid.shape[1]))  # [B, S, Sc]
      mask = jnp.concatenate([evalid, own], axis=-1)  # [B, Sc + S] or [B, S, Sc + S]
    out = attention(q, keys, values, key_mask=mask, impl=self.impl)  # [B, S, H, Dh]
    return self.o(out.reshape(b, s, d)), (k_raw if extra_rope is not None else k), v


class CrossAttention(_Projections):
  """Cross-attention to the embedded text; keys/values are precomputed once per prompt."""

  def kv(self, ctx: Array) -> tuple[Array, Array]:
    """``ctx [B, T, D]`` (embedded text) -> ``(k, v)`` each ``[B, T, H, Dh]``."""
    b, t, d = ctx.shape
    k = self.k(ctx)
    if self.qk_norm:
      k = self.norm_k(k)
    v = self.v(ctx)
    shape = (b, t, self.num_heads, d // self.num_heads)
    return k.reshape(shape), v.reshape(shape)  # [B, T, H, Dh]

  def __call__(self, x: Array, *, k: Array, v: Array) -> Array:
    b, s, d = x.shape
    q = self.q(x)
    if self.qk_norm:
      q = self.norm_q(q)
    q = q.reshape(b, s, self.num_heads, d // self.num_heads)  # [B, S, H, Dh]
    out = attention(q, k.astype(q.dtype), v.astype(q.dtype), key_mask=None, impl=self.impl)  # [B, S, H, Dh]
    return self.o(out.reshape(b, s, d))  # [B, S, D]


class FeedForward(nnx.Module):
  """``Linear -> GELU(tanh) -> Linear`` (upstream ``ffn.0`` / ``ffn.2``)."""

  def __init__(self, cfg: WanConfig, *, rngs: nnx.Rngs):
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    self.fc1 = layers.Dense(cfg.dim, cfg.ffn_dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.fc2 = layers.Dense(cfg.ffn_dim, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)

  def __call__(self, x: Array) -> Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))


class WanBlock(nnx.Module):
  """One transformer block with adaLN modulation (6 vectors: shift/scale/gate for attention and FFN)."""

  def __init__(self, cfg: WanConfig, *, rngs: nnx.Rngs):
    pdt = _dtype(cfg.param_dtype)
    self.modulation = nnx.Param((0.1 * jax.random.normal(rngs.params(), (6, cfg.dim))).astype(pdt))  # [6, D]
    self.self_attn = SelfAttention(cfg, rngs=rngs)
    if cfg.cross_attn_norm:
      self.norm3 = layers.AffineLayerNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pdt)
    self.cross_attn = CrossAttention(cfg, rngs=rngs)
    self.ffn = FeedForward(cfg, rngs=rngs)
    self.eps = cfg.eps
    self.cross_attn_norm = cfg.cross_attn_norm

  def __call__(
    self,
    x: Array,
    *,
    e0: Array,
    cross_k: Array,
    cross_v: Array,
    cos: Array,
    sin: Array,
    key_mask: Array | None = None,
    extra_kv: tuple[Array, Array, Array] | None = None,
    extra_rope: tuple[Array, Array] | None = None,
  ) -> tuple[Array, Array, Array]:
    """One block.

    Args:
      x: float32 residual stream ``[B, S, D]``.
      e0: float32 per-frame modulation from the time MLP, ``[B, F, 6, D]``.
      cross_k, cross_v: this layer's text keys/values ``[B, T, H, Dh]``.
      cos, sin: RoPE of the tokens, ``[S, Dh/2]`` (or ``[B, S, Dh/2]``: a grid per sample).
      key_mask: optional bool ``[B, S]`` (padding) or ``[B, S, S]`` (query x key, e.g. block-causal).
      extra_kv: optional cached ``(k, v, valid)`` for self-attention.

    Returns:
      ``(x, k_new, v_new)``: the updated residual and this call's roped keys/values.
    """
    b, s, d = x.shape
    f = e0.shape[1]
    mod = self.modulation[...].astype(jnp.float32)[None, None] + e0  # [B, F, 6, D]
    mod = mod[:, :, :, None, :]  # [B, F, 6, 1, D]
    shift1, scale1, gate1, shift2, scale2, gate2 = (mod[:, :, i] for i in range(6))  # each [B, F, 1, D]
    dt = self.self_attn.q.dtype

    def modulate(h, shift, scale):
      h = layers.layer_norm(h, eps=self.eps).reshape(b, f, s // f, d)  # [B, F, S/F, D]
      return (h * (1.0 + scale) + shift).reshape(b, s, d).astype(dt)

    def gated(y, gate):
      return (y.astype(jnp.float32).reshape(b, f, s // f, d) * gate).reshape(b, s, d)

    y, k_new, v_new = self.self_attn(
      modulate(x, shift1, scale1), cos=cos, sin=sin, key_mask=key_mask, extra_kv=extra_kv, extra_rope=extra_rope
    )
    x = x + gated(y, gate1)
    h = self.norm3(x) if self.cross_attn_norm else x
    x = x + self.cross_attn(h.astype(dt), k=cross_k, v=cross_v).astype(jnp.float32)
    x = x + gated(self.ffn(modulate(x, shift2, scale2)), gate2)
    return x, k_new, v_new
