"""The VAE's streaming feature caches as immutable pytrees (``flax.struct`` dataclasses).

Upstream threads a Python list ``feat_cache`` through the network, one entry per cached
conv, each ``None``, ``'Rep'`` or a tensor of 1-2 frames. Here every cached conv owns a
fixed-shape buffer, in call order:

  * each temporal 3-tap causal conv (``conv1``, both convs of every residual block, the
    head conv, the upsample3d ``time_conv``): ``[B, 2, h, w, C]``, the last two frames of
    the conv's input stream, zeros before the stream starts. That reproduces upstream's
    shrinking zero padding exactly, so no flag is needed for these convs;
  * each encoder ``downsample3d``: ``[B, 1, h, w, C]``, the last frame of its input.

The one thing a buffer cannot express is the *first chunk* of a stream, where upstream
skips the temporal resamplers (encoder ``downsample3d``; decoder ``upsample3d``, its
``'Rep'`` marker): latent 0 decodes to 1 frame, later latents to 4. That changes output
shapes, so it is a static field (``started``, part of the pytree structure): a jitted
step compiles at most twice, once for the first chunk and once for the steady state,
and every later call reuses the steady-state program.

Cache sizes for Wan2.1 at 480x832 (latent 60x104), batch 1, float32: the decoder holds
32 buffers (16ch + 11x384ch at 60x104, 192 + 6x384ch at 120x208, 6x192ch at 240x416,
7x96ch at 480x832), 3.78 GB (half in bfloat16); it does not grow with the video's length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from longlive_jax.vae.layers import Feats
from longlive_jax.vae.model import WanVAE

Array = jax.Array


@struct.dataclass
class DecodeCache:
  """Decoder feature cache. Donate it at jit boundaries.

  Attributes:
    feats: one buffer per cached decoder conv, in call order (see the module doc).
    latents: int32 ``[]``: latent frames decoded so far in this stream.
    started: static; False until the first latent went through (it decodes to 1 frame).
  """

  feats: tuple[Array, ...]
  latents: Array
  started: bool = struct.field(pytree_node=False, default=False)

  @property
  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in (*self.feats, self.latents))


@struct.dataclass
class EncodeCache:
  """Encoder feature cache (chunked causal encode). ``frames``: video frames encoded so far."""

  feats: tuple[Array, ...]
  frames: Array
  started: bool = struct.field(pytree_node=False, default=False)

  @property
  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in (*self.feats, self.frames))


def _buffer_specs(fn, vae: WanVAE, x_spec: jax.ShapeDtypeStruct) -> tuple[jax.ShapeDtypeStruct, ...]:
  """Shapes of the buffers a chunk run creates, found with ``jax.eval_shape`` (nothing is computed)."""

  def run(m, x):
    feats = Feats(None)
    fn(m, x, feats, first=True)
    return feats.finish()

  return jax.eval_shape(run, vae, x_spec)


def init_decode_cache(vae: WanVAE, *, batch: int, height: int, width: int, dtype=None) -> DecodeCache:
  """A fresh decoder cache for latents of ``height x width`` (latent pixels, i.e. video size / 8)."""
  cfg = vae.cfg
  dtype = jnp.dtype(dtype or cfg.dtype)
  x = jax.ShapeDtypeStruct((batch, 1, height, width, cfg.z_dim), dtype)
  specs = _buffer_specs(WanVAE.decode_chunk, vae, x)
  return DecodeCache(
    feats=tuple(jnp.zeros(s.shape, s.dtype) for s in specs), latents=jnp.zeros((), jnp.int32), started=False
  )


def init_encode_cache(vae: WanVAE, *, batch: int, height: int, width: int, dtype=None) -> EncodeCache:
  """A fresh encoder cache for a video of ``height x width`` pixels (multiples of 8)."""
  cfg = vae.cfg
  s = cfg.space_stride
  if height % s or width % s:
    raise ValueError(f"video height and width must be multiples of {s}, got {height}x{width}")
  dtype = jnp.dtype(dtype or cfg.dtype)
  x = jax.ShapeDtypeStruct((batch, 1, height, width, 3), dtype)
  specs = _buffer_specs(WanVAE.encode_chunk, vae, x)
  return EncodeCache(
    feats=tuple(jnp.zeros(s.shape, s.dtype) for s in specs), frames=jnp.zeros((), jnp.int32), started=False
  )
