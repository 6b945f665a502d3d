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

The first latent (first video frame) has its own compiled program; every later latent (4-frame
chunk) runs one steady-state program: activation memory of one latent, like upstream, and two
compilations per stream shape in all. :func:`decode_steady` / :func:`encode_steady` also take
several latents / chunks at once (a ``lax.scan``, one compilation per length) for callers that
want a whole block inside one jitted program.
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
from longlive_jax.vae.config import LATENT_MEAN, LATENT_STD, VAEConfig
from longlive_jax.vae.layers import Feats
from longlive_jax.vae.model import WanVAE

Array = jax.Array

__all__ = [
  "DecodeCache",
  "EncodeCache",
  "decode",
  "decode_chunks_reset",
  "decode_first",
  "decode_steady",
  "decode_step",
  "denormalize_latent",
  "encode",
  "encode_first",
  "encode_steady",
  "encode_step",
  "init_decode_cache",
  "init_encode_cache",
  "normalize_latent",
]


def _stats(cfg: VAEConfig | None) -> tuple[np.ndarray, np.ndarray]:
  """``(mean, 1 / std)`` float32 of ``cfg`` (Wan2.1's published statistics when None)."""
  mean, std = (LATENT_MEAN, LATENT_STD) if cfg is None else (cfg.latent_mean, cfg.latent_std)
  inv_std = (np.float32(1.0) / np.asarray(std, np.float32)).astype(np.float32)  # upstream scale[1]
  return np.asarray(mean, np.float32), inv_std


def normalize_latent(mu: Array, cfg: VAEConfig | None = None) -> Array:
  """``(mu - mean) * (1 / std)`` over the last (channel) axis, as upstream ``encode(x, scale)``.

  The statistics are ``cfg``'s (a VAE trained here stores its own), Wan2.1's when ``cfg`` is None.
  """
  mean, inv_std = _stats(cfg)
  return (mu - jnp.asarray(mean, mu.dtype)) * jnp.asarray(inv_std, mu.dtype)


def denormalize_latent(z: Array, cfg: VAEConfig | None = None) -> Array:
  """``z / (1 / std) + mean`` over the last axis, as upstream ``decode(z, scale)``."""
  mean, inv_std = _stats(cfg)
  return z / jnp.asarray(inv_std, z.dtype) + jnp.asarray(mean, z.dtype)


def _check_latent(vae: WanVAE, z: Array, what: str) -> None:
  if z.ndim != 5 or z.shape[-1] != vae.cfg.z_dim:
    raise ValueError(f"{what} must be [B, F, h, w, {vae.cfg.z_dim}] (channels-last latents), got {tuple(z.shape)}")


def _frames_first(x: Array) -> Array:
  return jnp.moveaxis(x, 1, 0)  # [B, F, ...] -> [F, B, ...]


def _finish_pixels(pixels: Array, clamp: Array) -> Array:
  return jnp.where(clamp, jnp.clip(pixels, -1.0, 1.0), pixels)


@functools.partial(jax.jit, donate_argnums=(1,))
def decode_first(vae: WanVAE, cache: DecodeCache, z0: Array, clamp: Array) -> tuple[Array, DecodeCache]:
  """Latent 0 of a stream ``[B, 1, h, w, z]`` -> 1 pixel frame ``[B, 1, H, W, 3]`` (upsample3d skipped: 'Rep')."""
  if cache.started:
    raise ValueError("decode_first needs a fresh cache (init_decode_cache); this one has already decoded latents")
  if z0.shape[1] != 1:
    raise ValueError(f"decode_first takes one latent frame, got {z0.shape[1]}")
  feats = Feats(cache.feats)
  pixels = vae.decode_chunk(denormalize_latent(z0.astype(jnp.dtype(vae.cfg.dtype)), vae.cfg), feats, first=True)
  return _finish_pixels(pixels, clamp), DecodeCache(feats=feats.finish(), latents=cache.latents + 1, started=True)


@functools.partial(jax.jit, donate_argnums=(1,))
def decode_steady(vae: WanVAE, cache: DecodeCache, z: Array, clamp: Array) -> tuple[Array, DecodeCache]:
  """Latents ``[B, n, h, w, z]`` after the first -> ``[B, 4n, H, W, 3]``, one latent at a time (``lax.scan``)."""
  if not cache.started:
    raise ValueError("decode_steady needs a cache that has seen latent 0 (use decode_step, or decode_first first)")
  x = denormalize_latent(z.astype(jnp.dtype(vae.cfg.dtype)), vae.cfg)
  b, n = x.shape[:2]

  def body(carry, zt):  # zt [B, h, w, z]: one latent frame
    feats = Feats(carry)
    y = vae.decode_chunk(zt[:, None], feats, first=False)  # [B, 4, H, W, 3]
    return feats.finish(), y

  bufs, ys = jax.lax.scan(body, cache.feats, _frames_first(x))  # ys [n, B, 4, H, W, 3]
  _, _, f, hh, ww, c = ys.shape
  pixels = jnp.moveaxis(ys, 0, 1).reshape(b, n * f, hh, ww, c)  # [B, 4n, H, W, 3]
  return _finish_pixels(pixels, clamp), DecodeCache(feats=bufs, latents=cache.latents + n, started=True)


def decode_step(vae: WanVAE, cache: DecodeCache, z_block: Array, *, clamp: bool = True) -> tuple[Array, DecodeCache]:
  """Decodes the next block of (normalised) latents of a stream.

  Args:
    vae: the model.
    cache: from :func:`init_decode_cache` or the previous call (donated: do not reuse it).
    z_block: ``[B, n, h, w, z_dim]`` normalised latents, n >= 1.
    clamp: clamp pixels to [-1, 1] (upstream ``decode_to_pixel``); False gives the raw decoder output.

  Returns:
    ``(pixels [B, T, 8h, 8w, 3], cache)`` with ``T = 4n``, or ``1 + 4(n - 1)`` on the first call.

  Two compiled programs serve a whole stream, whatever its block sizes: :func:`decode_first`
  (latent 0) and :func:`decode_steady` called on one latent at a time (``clamp`` is traced,
  not static). Calls are dispatched asynchronously, so the Python loop overlaps device work.
  """
  _check_latent(vae, z_block, "z_block")
  if z_block.shape[1] < 1:
    raise ValueError(f"z_block holds no latent frame: shape {tuple(z_block.shape)}")
  clamp = jnp.asarray(clamp, bool)
  out = []
  if not cache.started:
    px, cache = decode_first(vae, cache, z_block[:, :1], clamp)
    out.append(px)
    z_block = z_block[:, 1:]
  for i in range(z_block.shape[1]):  # one latent per call: a single steady program whatever the block sizes
    px, cache = decode_steady(vae, cache, z_block[:, i : i + 1], clamp)
    out.append(px)
  return (jnp.concatenate(out, axis=1) if len(out) > 1 else out[0]), cache


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


@functools.partial(jax.jit, donate_argnums=(1,))
def encode_first(vae: WanVAE, cache: EncodeCache, frame0: Array, normalize: Array) -> tuple[Array, EncodeCache]:
  """Frame 0 of a video ``[B, 1, H, W, 3]`` -> latent 0 ``[B, 1, h, w, z]`` (downsample3d skips its time conv)."""
  if cache.started:
    raise ValueError("encode_first needs a fresh cache (init_encode_cache); this one has already encoded frames")
  if frame0.shape[1] != 1:
    raise ValueError(f"encode_first takes one video frame, got {frame0.shape[1]}")
  feats = Feats(cache.feats)
  mu = vae.encode_chunk(frame0.astype(jnp.dtype(vae.cfg.dtype)), feats, first=True)
  mu = jnp.where(normalize, normalize_latent(mu, vae.cfg), mu)
  return mu, EncodeCache(feats=feats.finish(), frames=cache.frames + 1, started=True)


@functools.partial(jax.jit, donate_argnums=(1,))
def encode_steady(vae: WanVAE, cache: EncodeCache, video: Array, normalize: Array) -> tuple[Array, EncodeCache]:
  """Frames ``[B, 4k, H, W, 3]`` after frame 0 -> latents ``[B, k, h, w, z]``, 4 frames per chunk (``lax.scan``)."""
  if not cache.started:
    raise ValueError("encode_steady needs a cache that has seen frame 0 (use encode_step, or encode_first first)")
  x = video.astype(jnp.dtype(vae.cfg.dtype))
  b, t, hh, ww, c = x.shape
  k = t // 4

  def body(carry, chunk):  # chunk [B, 4, H, W, 3]
    feats = Feats(carry)
    mu = vae.encode_chunk(chunk, feats, first=False)  # [B, 1, h, w, z]
    return feats.finish(), mu[:, 0]

  bufs, mus = jax.lax.scan(body, cache.feats, _frames_first(x.reshape(b, k, 4, hh, ww, c)))  # mus [k, B, h, w, z]
  mu = jnp.moveaxis(mus, 0, 1)  # [B, k, h, w, z]
  mu = jnp.where(normalize, normalize_latent(mu, vae.cfg), mu)
  return mu, EncodeCache(feats=bufs, frames=cache.frames + t, started=True)


def encode_step(vae: WanVAE, cache: EncodeCache, video: Array, *, normalize: bool = True) -> tuple[Array, EncodeCache]:
  """Encodes the next frames of a video stream: ``1 + 4k`` frames on the first call, then ``4k`` per call.

  Returns ``(latents [B, k (+1), H/8, W/8, z_dim], cache)``: normalised (``normalize=True``,
  upstream ``encode_to_latent``) or the raw encoder mean ``mu``. The cache is donated.
  """
  _check_video(vae, video)
  t = video.shape[1]
  head = 0 if cache.started else 1
  if t < head or (t - head) % 4:
    need = "1 + 4k frames (the first chunk is 1 frame)" if head else "a multiple of 4 frames"
    raise ValueError(f"{'the first ' if head else ''}encode call needs {need}, got {t} frames")
  normalize = jnp.asarray(normalize, bool)
  out = []
  if head:
    mu, cache = encode_first(vae, cache, video[:, :1], normalize)
    out.append(mu)
    video = video[:, 1:]
  for i in range(0, video.shape[1], 4):  # one 4-frame chunk per call: a single steady program
    mu, cache = encode_steady(vae, cache, video[:, i : i + 4], normalize)
    out.append(mu)
  return (jnp.concatenate(out, axis=1) if len(out) > 1 else out[0]), cache


def encode(vae: WanVAE, video: Array, *, normalize: bool = True) -> Array:
  """Causal chunked encode of a whole video ``[B, 1 + 4k, H, W, 3]`` -> latents ``[B, 1 + k, H/8, W/8, z_dim]``.

  Upstream silently drops trailing frames when ``T != 1 + 4k``; we raise instead.
  """
  _check_video(vae, video)
  b, _, h, w, _ = video.shape
  mu, _ = encode_step(vae, init_encode_cache(vae, batch=b, height=h, width=w), video, normalize=normalize)
  return mu
