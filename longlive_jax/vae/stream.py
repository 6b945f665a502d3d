"""Streaming decode and chunked causal encode with the Wan VAE, plus latent normalisation.

Semantics are those of upstream ``WanVAE_.encode`` / ``WanVAE_.decode`` / Self-Forcing's
``cached_decode`` (as called by LongLive's ``WanVAEWrapper``):

  * encode: frames in chunks ``[1, 4, 4, ...]`` (so ``T = 1 + 4k``), each chunk through the
    whole encoder with the feature cache, then the 1x1x1 ``conv1``; ``mu`` (its first
    ``z_dim`` channels) is normalised as ``(mu - mean) * (1 / std)``;
  * decode: ``z / (1 / std) + mean`` (upstream divides by the reciprocal), the 1x1x1
    ``conv2``, then the decoder one latent frame at a time with the feature cache:
    latent 0 gives 1 pixel frame, every later latent 4; pixels are clamped to [-1, 1]
    (``clamp=False`` returns upstream's raw ``decode`` output);
  * streaming: a cache carried across :func:`decode_step` calls continues the stream, so
    decoding block by block equals decoding the whole latent video at once.

The per-latent loop is a ``lax.scan`` (activation memory of one latent, like upstream).
``vae`` arguments are :class:`~longlive_jax.vae.model.WanVAE` modules, which are pytrees:
they are passed to the jitted functions as arguments, never baked in as constants.
Layouts: video ``[B, T, H, W, 3]`` in [-1, 1]; latents ``[B, F, H/8, W/8, z_dim]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax.vae.cache import DecodeCache, EncodeCache, init_decode_cache, init_encode_cache
from longlive_jax.vae.config import LATENT_MEAN, LATENT_STD
from longlive_jax.vae.layers import Feats
from longlive_jax.vae.model import WanVAE

Array = jax.Array

__all__ = [
  "DecodeCache",
  "EncodeCache",
  "decode",
  "decode_chunks_reset",
  "decode_step",
  "denormalize_latent",
  "encode",
  "encode_step",
  "init_decode_cache",
  "init_encode_cache",
  "normalize_latent",
]

_MEAN = np.asarray(LATENT_MEAN, np.float32)
_INV_STD = (np.float32(1.0) / np.asarray(LATENT_STD, np.float32)).astype(np.float32)  # upstream scale[1]


def normalize_latent(mu: Array) -> Array:
  """``(mu - mean) * (1 / std)`` over the last (channel) axis, as upstream ``encode(x, scale)``."""
  return (mu - jnp.asarray(_MEAN, mu.dtype)) * jnp.asarray(_INV_STD, mu.dtype)


def denormalize_latent(z: Array) -> Array:
  """``z / (1 / std) + mean`` over the last axis, as upstream ``decode(z, scale)``."""
  return z / jnp.asarray(_INV_STD, z.dtype) + jnp.asarray(_MEAN, z.dtype)


def _check_latent(vae: WanVAE, z: Array, what: str) -> None:
  if z.ndim != 5 or z.shape[-1] != vae.cfg.z_dim:
    raise ValueError(f"{what} must be [B, F, h, w, {vae.cfg.z_dim}] (channels-last latents), got {tuple(z.shape)}")


def _frames_first(x: Array) -> Array:
  return jnp.moveaxis(x, 1, 0)  # [B, F, ...] -> [F, B, ...]


@functools.partial(jax.jit, static_argnames=("clamp",), donate_argnums=(1,))
def decode_step(vae: WanVAE, cache: DecodeCache, z_block: Array, *, clamp: bool = True) -> tuple[Array, DecodeCache]:
  """Decodes the next block of (normalised) latents of a stream.

  Args:
    vae: the model.
    cache: from :func:`init_decode_cache` or the previous call (donated: do not reuse it).
    z_block: ``[B, n, h, w, z_dim]`` normalised latents, n >= 1.
    clamp: clamp pixels to [-1, 1] (upstream ``decode_to_pixel``); False gives the raw decoder output.

  Returns:
    ``(pixels [B, T, 8h, 8w, 3], cache)`` with ``T = 4n``, or ``1 + 4(n - 1)`` on the first call.
    Compiles once for the first block and once for every later block of the same shape.
  """
  _check_latent(vae, z_block, "z_block")
  x = denormalize_latent(z_block.astype(jnp.dtype(vae.cfg.dtype)))
  b, n = x.shape[:2]
  bufs, out = cache.feats, []
  if not cache.started:
    feats = Feats(bufs)
    out.append(vae.decode_chunk(x[:, :1], feats, first=True))  # [B, 1, H, W, 3]: upsample3d skipped ('Rep')
    bufs, x = feats.finish(), x[:, 1:]
  if x.shape[1]:

    def body(carry, zt):  # zt [B, h, w, z]: one latent frame
      feats = Feats(carry)
      y = vae.decode_chunk(zt[:, None], feats, first=False)  # [B, 4, H, W, 3]
      return feats.finish(), y

    bufs, ys = jax.lax.scan(body, bufs, _frames_first(x))  # ys [m, B, 4, H, W, 3]
    m, _, f, hh, ww, c = ys.shape
    out.append(jnp.moveaxis(ys, 0, 1).reshape(b, m * f, hh, ww, c))  # [B, 4m, H, W, 3]
  pixels = jnp.concatenate(out, axis=1) if len(out) > 1 else out[0]
  if clamp:
    pixels = jnp.clip(pixels, -1.0, 1.0)
  return pixels, DecodeCache(feats=bufs, latents=cache.latents + n, started=True)


def decode(vae: WanVAE, z: Array, *, clamp: bool = True) -> Array:
  """Full decode of normalised latents ``[B, F, h, w, z_dim]`` -> pixels ``[B, 1 + 4(F - 1), 8h, 8w, 3]``."""
  _check_latent(vae, z, "z")
  b, _, h, w, _ = z.shape
  pixels, _ = decode_step(vae, init_decode_cache(vae, batch=b, height=h, width=w), z, clamp=clamp)
  return pixels


def decode_chunks_reset(vae: WanVAE, z: Array, *, chunk_size: int, clamp: bool = True) -> Array:
  """LongLive's ``decode_to_pixel_chunk``: a fresh cache for every ``chunk_size`` latents.

  Not equal to :func:`decode` once ``F > chunk_size``: every chunk's first latent gives 1 frame,
  so chunks of n latents give ``1 + 4(n - 1)`` frames each (LongLive "infinity" inference).
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  _check_latent(vae, z, "z")
  parts = [decode(vae, z[:, s : s + chunk_size], clamp=clamp) for s in range(0, z.shape[1], chunk_size)]
  return jnp.concatenate(parts, axis=1)


def _check_video(vae: WanVAE, video: Array) -> None:
  s = vae.cfg.space_stride
  if video.ndim != 5 or video.shape[-1] != 3 or video.shape[2] % s or video.shape[3] % s:
    raise ValueError(
      f"video must be [B, T, H, W, 3] (channels-last RGB, H and W multiples of {s}), got {tuple(video.shape)}"
    )


@functools.partial(jax.jit, static_argnames=("normalize",), donate_argnums=(1,))
def encode_step(vae: WanVAE, cache: EncodeCache, video: Array, *, normalize: bool = True) -> tuple[Array, EncodeCache]:
  """Encodes the next frames of a video stream: ``1 + 4k`` frames first, then ``4k`` per call -> ``[B, k(+1), ...]``.

  Returns ``(latents [B, F', H/8, W/8, z_dim], cache)``: normalised (``normalize=True``, upstream
  ``encode_to_latent``) or the raw encoder mean ``mu``.
  """
  _check_video(vae, video)
  t = video.shape[1]
  head = 1 if not cache.started else 0
  if t < head or (t - head) % 4:
    need = "1 + 4k frames (the first chunk is 1 frame)" if head else "a multiple of 4 frames"
    raise ValueError(f"{'first ' if head else ''}encode call needs {need}, got {t}")
  x = video.astype(jnp.dtype(vae.cfg.dtype))
  b, _, hh, ww, c = x.shape
  bufs, out = cache.feats, []
  if head:
    feats = Feats(bufs)
    out.append(vae.encode_chunk(x[:, :1], feats, first=True))  # [B, 1, h, w, z]: downsample3d skipped
    bufs, x = feats.finish(), x[:, 1:]
  k = x.shape[1] // 4
  if k:

    def body(carry, chunk):  # chunk [B, 4, H, W, 3]
      feats = Feats(carry)
      mu = vae.encode_chunk(chunk, feats, first=False)  # [B, 1, h, w, z]
      return feats.finish(), mu[:, 0]

    chunks = _frames_first(x.reshape(b, k, 4, hh, ww, c))  # [k, B, 4, H, W, 3]
    bufs, mus = jax.lax.scan(body, bufs, chunks)  # mus [k, B, h, w, z]
    out.append(jnp.moveaxis(mus, 0, 1))  # [B, k, h, w, z]
  mu = jnp.concatenate(out, axis=1) if len(out) > 1 else out[0]
  if normalize:
    mu = normalize_latent(mu)
  return mu, EncodeCache(feats=bufs, frames=cache.frames + t, started=True)


def encode(vae: WanVAE, video: Array, *, normalize: bool = True) -> Array:
  """Causal chunked encode of a whole video ``[B, 1 + 4k, H, W, 3]`` -> latents ``[B, 1 + k, H/8, W/8, z_dim]``.

  Upstream silently drops trailing frames when ``T != 1 + 4k``; we raise instead.
  """
  _check_video(vae, video)
  b, _, h, w, _ = video.shape
  mu, _ = encode_step(vae, init_encode_cache(vae, batch=b, height=h, width=w), video, normalize=normalize)
  return mu
