"""Small building blocks of the Wan2.1 DiT: dense layers, norms, time embedding.

Attention lives in :mod:`longlive_jax.model.attention` (one dispatcher, several kernels).

Conventions:
  * Activations are ``[B, S, D]`` (batch, tokens, width); attention heads are
    ``[B, S, H, Dh]``.
  * Dense kernels are ``[in, out]`` (the transpose of a torch ``nn.Linear``).
  * Parameters are stored in ``param_dtype``; matmuls run in the module's
    compute dtype; norms, softmax and the timestep path always run in float32
    (upstream Wan computes them in float32 under ``amp.autocast``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Re-exported for callers of the old ``layers.attention`` (e.g. ../shared/peer_bench): the dispatcher itself.
from longlive_jax.model.attention import attention  # noqa: F401

Array = jax.Array


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, dtype) -> Array:
  return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class Dense(nnx.Module):
  """``y = x @ kernel + bias`` with kernel ``[in, out]``."""

  def __init__(
    self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32
  ):
    self.kernel = nnx.Param(_normal(rngs, (in_features, out_features), 1.0 / math.sqrt(in_features), param_dtype))
    self.bias = nnx.Param(_normal(rngs, (out_features,), 0.02, param_dtype))
    self.dtype = dtype

  def __call__(self, x: Array) -> Array:
    x = x.astype(self.dtype)
    y = jnp.einsum("...i,io->...o", x, self.kernel[...].astype(self.dtype))  # [..., out]
    return y + self.bias[...].astype(self.dtype)


class RMSNorm(nnx.Module):
  """``x * rsqrt(mean(x^2) + eps) * weight``, computed in float32, cast back to the input dtype."""

  def __init__(self, dim: int, *, eps: float, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.weight = nnx.Param((1.0 + _normal(rngs, (dim,), 0.1, jnp.float32)).astype(param_dtype))
    self.eps = eps

  def __call__(self, x: Array) -> Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return (y * self.weight[...].astype(jnp.float32)).astype(x.dtype)


def layer_norm(x: Array, *, eps: float) -> Array:
  """LayerNorm without affine parameters over the last axis, in float32 (returns float32)."""
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
  return (xf - mean) * jax.lax.rsqrt(var + eps)


class AffineLayerNorm(nnx.Module):
  """LayerNorm with elementwise weight and bias (upstream ``norm3``), computed in float32."""

  def __init__(self, dim: int, *, eps: float, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.weight = nnx.Param((1.0 + _normal(rngs, (dim,), 0.1, jnp.float32)).astype(param_dtype))
    self.bias = nnx.Param(_normal(rngs, (dim,), 0.1, param_dtype))
    self.eps = eps

  def __call__(self, x: Array) -> Array:
    y = layer_norm(x, eps=self.eps)
    return y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)


# Clears the low 12 of float32's 23 stored mantissa bits: 12 significant bits remain (implicit one included),
# so the product of two such heads (24 bits) is exact in float32.
_HI_MASK = 0xFFFFF000


def _split_hi_lo(x: Array) -> tuple[Array, Array]:
  """Splits float32 ``x`` into ``hi + lo`` where ``hi`` keeps 12 significant bits (exact split)."""
  hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(_HI_MASK), jnp.float32)
  return hi, x - hi


def sinusoidal_embedding(t: Array, dim: int) -> Array:
  """Upstream ``sinusoidal_embedding_1d``: ``[cos(t w), sin(t w)]``, ``w_j = 10000^(-j/(dim/2))``.

  Upstream evaluates this in float64; timesteps reach 1000, where a plain float32
  product ``t * w`` is off by up to ~1e-4 rad. We reproduce the float64 result to
  ~1e-7 without x64: ``t`` and ``w`` are each split into a 12-bit head and a tail,
  the head product is exact in float32, and ``cos(a + b)`` is expanded by the
  angle-addition formula (``b`` is small, so its rounding error is negligible).

  Args:
    t: float timesteps of any shape (raw values in [0, 1000], not normalised).
    dim: embedding width (even).

  Returns:
    float32 array of shape ``t.shape + (dim,)``.
  """
  half = dim // 2
  w64 = np.power(10000.0, -np.arange(half, dtype=np.float64) / half)  # [half]
  w32 = w64.astype(np.float32)
  w_hi64 = (w32.view(np.uint32) & np.uint32(_HI_MASK)).view(np.float32).astype(np.float64)
  w_hi = jnp.asarray(w_hi64, jnp.float32)
  w_lo = jnp.asarray(w64 - w_hi64, jnp.float32)
  t = jnp.asarray(t, jnp.float32)[..., None]  # [..., 1]
  t_hi, t_lo = _split_hi_lo(t)
  a = t_hi * w_hi  # exact: 12 bits x 12 bits
  b = t_hi * w_lo + t_lo * w_hi + t_lo * w_lo  # small correction
  ca, sa, cb, sb = jnp.cos(a), jnp.sin(a), jnp.cos(b), jnp.sin(b)
  cos = ca * cb - sa * sb
  sin = sa * cb + ca * sb
  return jnp.concatenate([cos, sin], axis=-1)  # [..., dim]
