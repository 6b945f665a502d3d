"""Building blocks of the Wan VAE: causal 3D conv with a frame cache, RMS norm, resampling, residual and attention.

Conventions:
  * Activations are channels-last video ``[B, T, H, W, C]``.
  * 3D conv kernels are ``[kT, kH, kW, I, O]``, 2D conv kernels ``[kH, kW, I, O]``
    (upstream torch ``[O, I, kT, kH, kW]`` / ``[O, I, kH, kW]``, converted in
    :mod:`longlive_jax.convert.wan_vae`).
  * Streaming: every temporal (3-tap) causal conv owns a buffer holding the last
    ``CACHE_T = 2`` frames of its *input* stream, zeros before the stream starts.
    Upstream keeps ``None`` / 1-frame / 2-frame caches and shrinks its zero padding
    accordingly; a zero-filled 2-frame buffer is the same computation with a fixed
    shape, so one compiled step serves every chunk. Modules read and write their
    buffers in call order through a :class:`Feats` cursor (trace-time bookkeeping;
    the arrays themselves stay immutable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array

CACHE_T = 2  # frames of history kept per cached temporal conv (upstream CACHE_T)


class Feats:
  """Cursor over a tuple of cache buffers, consumed in call order.

  ``bufs=None`` starts every buffer at zeros (a fresh stream; also used to find the
  buffer shapes with ``jax.eval_shape``). ``take`` returns the next buffer, ``put``
  records its replacement; ``out`` is the new tuple once the whole network ran.
  """

  def __init__(self, bufs: Sequence[Array] | None):
    self.bufs = None if bufs is None else tuple(bufs)
    self.index = 0
    self.out: list[Array] = []

  def take(self, shape: tuple[int, ...], dtype) -> Array:
    if self.bufs is None:
      return jnp.zeros(shape, dtype)
    if self.index >= len(self.bufs):
      raise ValueError(f"feature cache has {len(self.bufs)} buffers, the network needs more")
    buf = self.bufs[self.index]
    if tuple(buf.shape) != tuple(shape):
      raise ValueError(
        f"feature cache buffer {self.index} has shape {tuple(buf.shape)}, this input needs {tuple(shape)} "
        "(was the cache made for another batch size or resolution?)"
      )
    self.index += 1
    return buf.astype(dtype)

  def put(self, buf: Array) -> None:
    self.out.append(buf)

  def finish(self) -> tuple[Array, ...]:
    if self.bufs is not None and self.index != len(self.bufs):
      raise ValueError(f"feature cache has {len(self.bufs)} buffers, the network used {self.index}")
    return tuple(self.out)


def _init(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, dtype, *, offset: float | None = None) -> Array:
  """``offset + std * normal(shape)`` in ``dtype`` from the next params key.

  Outside a trace the draw is the first ``prod(shape)`` values of a power-of-two-long one, scaled on the host:
  with partitionable threefry (JAX's default) a value depends on its key and flat index only, so the values equal
  ``jax.random.normal(key, shape)``'s, and the VAE's ~60 differently shaped layers compile a handful of draws
  instead of one each (eagerly, a tiny VAE spent ~50 s of 2 CPU cores in those XLA compiles)."""
  key = rngs.params()
  if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:
    x = std * jax.random.normal(key, shape, jnp.float32)
    return (x if offset is None else offset + x).astype(dtype)
  n = math.prod(shape)
  draw = np.asarray(jax.random.normal(key, (1 << max(n - 1, 0).bit_length(),), jnp.float32))  # [2^k >= n]
  x = np.float32(std) * draw[:n].reshape(shape)
  return jnp.asarray((x if offset is None else np.float32(offset) + x).astype(dtype))


def _triple(v) -> tuple[int, int, int]:
  return (v, v, v) if isinstance(v, int) else tuple(int(x) for x in v)


def rms_norm(x: Array, gamma: Array) -> Array:
  """Upstream ``RMS_norm``: ``F.normalize(x, dim=channels) * sqrt(C) * gamma``.

  ``F.normalize`` divides by ``max(||x||_2, 1e-12)``: an L2 norm over channels, not a
  mean with an epsilon inside the square root. Computed in float32.
  """
  xf = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))  # [..., 1]
  y = xf / jnp.maximum(norm, 1e-12) * math.sqrt(x.shape[-1]) * gamma.astype(jnp.float32)
  return y.astype(x.dtype)


class RMSNorm(nnx.Module):
  """Channel RMS norm with a learned ``gamma [C]`` and no bias."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.gamma = nnx.Param(_init(rngs, (dim,), 0.2, param_dtype, offset=1.0))

  def __call__(self, x: Array) -> Array:
    return rms_norm(x, self.gamma[...])


class CausalConv3d(nnx.Module):
  """Conv3d whose temporal padding is all in the past (upstream ``CausalConv3d``).

  ``padding = (pt, ph, pw)`` as upstream: time is padded ``(2 * pt, 0)``, space
  symmetrically. Without a cache the past is zeros; with :meth:`step` the
  ``2 * pt`` past frames come from the buffer (the conv's own previous input).
  """

  def __init__(
    self,
    in_dim: int,
    out_dim: int,
    kernel: int | Sequence[int],
    *,
    rngs: nnx.Rngs,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
  ):
    k = _triple(kernel)
    fan_in = in_dim * k[0] * k[1] * k[2]
    self.kernel = nnx.Param(_init(rngs, (*k, in_dim, out_dim), 1.0 / math.sqrt(fan_in), param_dtype))
    self.bias = nnx.Param(_init(rngs, (out_dim,), 0.1, param_dtype))
    self.stride = _triple(stride)
    self.padding = _triple(padding)
    self.dtype = dtype

  @property
  def past_frames(self) -> int:
    return 2 * self.padding[0]

  def __call__(self, x: Array, *, past: Array | None = None) -> Array:
    """``x [B, T, H, W, I]`` -> ``[B, T', H', W', O]``; ``past [B, P, H, W, I]`` precedes ``x`` (P <= 2 pt)."""
    pad_t = self.past_frames
    if past is not None:
      x = jnp.concatenate([past.astype(x.dtype), x], axis=1)  # [B, P + T, H, W, I]
      pad_t -= past.shape[1]
    _, ph, pw = self.padding
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))  # [B, Tp, H, W, I]
    y = _conv3d_by_taps(x, self.kernel[...].astype(self.dtype), stride=self.stride, padding=(ph, pw))
    return y + self.bias[...].astype(self.dtype)

  def step(self, x: Array, feats: Feats) -> Array:
    """Streaming call: the past frames come from the cursor's next buffer, replaced by the last 2 input frames."""
    if self.past_frames != CACHE_T:
      raise ValueError(f"only temporal 3-tap convs are cached; this one looks {self.past_frames} frames back")
    b, _, h, w, c = x.shape
    buf = feats.take((b, CACHE_T, h, w, c), x.dtype)  # [B, 2, H, W, C]
    feats.put(jnp.concatenate([buf, x], axis=1)[:, -CACHE_T:])  # last 2 frames of the input stream
    return self(x, past=buf)


def _conv3d_by_taps(x: Array, kernel: Array, *, stride: tuple[int, int, int], padding: tuple[int, int]) -> Array:
  """A valid-in-time 3D conv as a sum over the ``kT`` temporal taps of 2D convs over ``B * T'`` frames.

  ``x [B, Tp, H, W, I]`` (already padded in time), ``kernel [kT, kH, kW, I, O]`` -> ``[B, T', H', W', O]``
  with ``T' = (Tp - kT) // sT + 1``. The same sums as ``lax.conv_general_dilated`` in 3D, but XLA's CPU
  backend runs batched 2D convolutions 3-4x faster than 3D ones at the VAE's small widths.
  """
  kt = kernel.shape[0]
  st, sh, sw = stride
  b, tp, h, w, c = x.shape
  t_out = (tp - kt) // st + 1
  y = None
  for a in range(kt):
    frames = x[:, a : a + st * (t_out - 1) + 1 : st].reshape(b * t_out, h, w, c)  # [B*T', H, W, I]
    ya = jax.lax.conv_general_dilated(
      frames,
      kernel[a],
      window_strides=(sh, sw),
      padding=((padding[0], padding[0]), (padding[1], padding[1])),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # [B*T', H', W', O]
    y = ya if y is None else y + ya
  return y.reshape(b, t_out, *y.shape[1:])  # [B, T', H', W', O]


class Conv2d(nnx.Module):
  """Per-frame 2D conv over ``[B, T, H, W, I]`` with kernel ``[kH, kW, I, O]``; padding is explicit per side."""

  def __init__(
    self,
    in_dim: int,
    out_dim: int,
    kernel: int,
    *,
    rngs: nnx.Rngs,
    stride: int = 1,
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
    dtype=jnp.float32,
    param_dtype=jnp.float32,
  ):
    fan_in = in_dim * kernel * kernel
    self.kernel = nnx.Param(_init(rngs, (kernel, kernel, in_dim, out_dim), 1.0 / math.sqrt(fan_in), param_dtype))
    self.bias = nnx.Param(_init(rngs, (out_dim,), 0.1, param_dtype))
    self.stride = (stride, stride)
    self.padding = padding
    self.dtype = dtype

  def __call__(self, x: Array) -> Array:
    b, t, h, w, c = x.shape
    y = jax.lax.conv_general_dilated(
      x.reshape(b * t, h, w, c).astype(self.dtype),  # [B*T, H, W, I]
      self.kernel[...].astype(self.dtype),
      window_strides=self.stride,
      padding=self.padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # [B*T, H', W', O]
    y = y + self.bias[...].astype(self.dtype)
    return y.reshape(b, t, *y.shape[1:])  # [B, T, H', W', O]


class ResidualBlock(nnx.Module):
  """``x + [RMS, SiLU, conv3, RMS, SiLU, conv3](x)`` with a 1x1x1 conv shortcut when widths differ.

  Upstream names: ``residual.0`` (norm1), ``.2`` (conv1), ``.3`` (norm2), ``.6`` (conv2), ``shortcut``.
  Both 3x3x3 convs are cached (2 buffers); the shortcut looks at no past and is not.
  """

  def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm1 = RMSNorm(in_dim, rngs=rngs, param_dtype=param_dtype)
    self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1, **kw)
    self.norm2 = RMSNorm(out_dim, rngs=rngs, param_dtype=param_dtype)
    self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1, **kw)
    self.shortcut = CausalConv3d(in_dim, out_dim, 1, **kw) if in_dim != out_dim else None

  def __call__(self, x: Array, feats: Feats) -> Array:
    h = x if self.shortcut is None else self.shortcut(x)
    y = self.conv1.step(jax.nn.silu(self.norm1(x)), feats)
    y = self.conv2.step(jax.nn.silu(self.norm2(y)), feats)  # dropout: inactive at inference
    return y + h.astype(y.dtype)


class AttentionBlock(nnx.Module):
  """Per-frame single-head spatial self-attention: ``x + proj(SDPA(qkv(RMS(x))))``, scale ``1/sqrt(C)``."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.norm = RMSNorm(dim, rngs=rngs, param_dtype=param_dtype)
    self.to_qkv = Conv2d(dim, 3 * dim, 1, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.proj = Conv2d(dim, dim, 1, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x: Array) -> Array:
    b, t, h, w, c = x.shape
    qkv = self.to_qkv(self.norm(x)).reshape(b * t, h * w, 3 * c)  # [B*T, S, 3C]
    q, k, v = jnp.split(qkv, 3, axis=-1)  # each [B*T, S, C]; channel groups q | k | v as upstream's chunk
    logits = jnp.einsum("nqc,nkc->nqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(c)  # [B*T, S, S]
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("nqk,nkc->nqc", probs, v).reshape(b, t, h, w, c)  # [B, T, H, W, C]
    return x + self.proj(out).astype(x.dtype)


def _upsample_nearest2x(x: Array) -> Array:
  """Nearest x2 in H and W (upstream 'nearest' / 'nearest-exact' agree for an exact x2)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # [B, T, 2H, 2W, C]


class Resample(nnx.Module):
  """Spatial x2 up/down-sampling, optionally with a temporal one (upstream ``Resample``).

  * ``downsample2d``: zero-pad right/bottom by 1, Conv2d 3x3 stride 2 (C -> C).
  * ``downsample3d``: the same, then ``time_conv`` (3,1,1) stride (2,1,1) with no padding
    over ``[previous chunk's last frame, this chunk]``. The first chunk skips it (frame 0
    is not downsampled in time); the buffer holds one frame.
  * ``upsample2d``: nearest x2, Conv2d 3x3 pad 1 (C -> C/2).
  * ``upsample3d``: ``time_conv`` (3,1,1) causal, C -> 2C, its two channel halves interleaved
    in time (T -> 2T), then as upsample2d. The first chunk (upstream marks its cache
    ``'Rep'``) skips it, so latent 0 is not upsampled in time; the stream that time_conv
    sees starts at the second chunk, with zero history (the buffer stays zero until then).
  """

  def __init__(self, dim: int, mode: str, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    if mode in ("upsample2d", "upsample3d"):
      self.conv = Conv2d(dim, dim // 2, 3, padding=((1, 1), (1, 1)), **kw)
    elif mode in ("downsample2d", "downsample3d"):
      self.conv = Conv2d(dim, dim, 3, stride=2, padding=((0, 1), (0, 1)), **kw)
    else:
      raise ValueError(f"Resample mode must be up/downsample2d/3d, got {mode!r}")
    if mode == "upsample3d":
      self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0), **kw)
    elif mode == "downsample3d":
      self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), **kw)
    else:
      self.time_conv = None
    self.mode = mode

  def __call__(self, x: Array, feats: Feats, *, first: bool) -> Array:
    if self.mode == "upsample3d":
      b, t, h, w, c = x.shape
      if first:
        feats.put(feats.take((b, CACHE_T, h, w, c), x.dtype))  # 'Rep': untouched, still zeros
      else:
        y = self.time_conv.step(x, feats)  # [B, T, H, W, 2C]
        y = y.reshape(b, t, h, w, 2, c).transpose(0, 1, 4, 2, 3, 5)  # [B, T, 2, H, W, C]
        x = y.reshape(b, 2 * t, h, w, c)  # [B, 2T, H, W, C]: group 0 at even frames, group 1 at odd
    if self.mode.startswith("upsample"):
      x = _upsample_nearest2x(x)
    x = self.conv(x)
    if self.mode == "downsample3d":
      b, _, h, w, c = x.shape
      last = feats.take((b, 1, h, w, c), x.dtype)  # [B, 1, H, W, C]
      feats.put(x[:, -1:])
      if not first:
        x = self.time_conv(jnp.concatenate([last, x], axis=1))  # [B, (T + 1 - 3) / 2 + 1, H, W, C]
    return x
