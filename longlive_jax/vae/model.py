"""The Wan2.1 VAE networks (Flax NNX): ``Encoder3d``, ``Decoder3d`` and ``WanVAE`` holding both.

The module tree mirrors upstream ``WanVAE_`` so conversion is a rename:
``encoder.{conv1, downsamples.i, middle.i, head_norm, head_conv}``, ``conv1`` (the 1x1x1
conv giving mean / log-variance), ``conv2`` (1x1x1 before the decoder) and
``decoder.{conv1, middle.i, upsamples.i, head_norm, head_conv}``.

The networks only run *chunks*: ``x [B, T, H, W, C]`` plus a :class:`~longlive_jax.vae.layers.Feats`
cursor over the chunk's feature-cache buffers, and a static ``first`` flag for the first
chunk of a stream (where the temporal resamplers are skipped, which changes the output
length). Chunking, normalisation and the cache pytree live in :mod:`longlive_jax.vae.stream`.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import nnx

from longlive_jax.model.wan import count_params as count_params  # re-exported
from longlive_jax.vae.config import VAEConfig
from longlive_jax.vae.layers import AttentionBlock, CausalConv3d, Feats, Resample, ResidualBlock, RMSNorm

Array = jax.Array


def _kw(cfg: VAEConfig, rngs: nnx.Rngs) -> dict:
  return dict(rngs=rngs, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def _run(blocks, x: Array, feats: Feats, *, first: bool) -> Array:
  for blk in blocks:
    if isinstance(blk, ResidualBlock):
      x = blk(x, feats)
    elif isinstance(blk, Resample):
      x = blk(x, feats, first=first)
    else:
      x = blk(x)
  return x


class Encoder3d(nnx.Module):
  """Video ``[B, T, H, W, 3]`` chunk -> ``[B, T', H/8, W/8, 2 z_dim]`` (before the 1x1x1 ``conv1``)."""

  def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
    kw = _kw(cfg, rngs)
    pdt = kw["param_dtype"]
    dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
    self.conv1 = CausalConv3d(3, dims[0], 3, padding=1, **kw)
    blocks, scale = [], 1.0
    for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
      for _ in range(cfg.num_res_blocks):
        blocks.append(ResidualBlock(in_dim, out_dim, **kw))
        if scale in cfg.attn_scales:
          blocks.append(AttentionBlock(out_dim, **kw))
        in_dim = out_dim
      if i != len(cfg.dim_mult) - 1:
        blocks.append(Resample(out_dim, "downsample3d" if cfg.temperal_downsample[i] else "downsample2d", **kw))
        scale /= 2.0
    self.downsamples = nnx.List(blocks)
    c = dims[-1]
    self.middle = nnx.List([ResidualBlock(c, c, **kw), AttentionBlock(c, **kw), ResidualBlock(c, c, **kw)])
    self.head_norm = RMSNorm(c, rngs=rngs, param_dtype=pdt)
    self.head_conv = CausalConv3d(c, 2 * cfg.z_dim, 3, padding=1, **kw)

  def __call__(self, x: Array, feats: Feats, *, first: bool) -> Array:
    x = self.conv1.step(x, feats)
    x = _run(self.downsamples, x, feats, first=first)
    x = _run(self.middle, x, feats, first=first)
    return self.head_conv.step(jax.nn.silu(self.head_norm(x)), feats)


class Decoder3d(nnx.Module):
  """Latent chunk ``[B, n, h, w, z_dim]`` (after ``conv2``) -> pixels ``[B, T, 8h, 8w, 3]``, before the clamp.

  ``T = 4 n`` in steady state, ``1 + 4 (n - 1)`` for the first chunk of a stream.
  """

  def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
    kw = _kw(cfg, rngs)
    pdt = kw["param_dtype"]
    mult = cfg.dim_mult
    dims = [cfg.dim * u for u in (mult[-1], *mult[::-1])]
    scale = 1.0 / 2 ** (len(mult) - 2)
    self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1, **kw)
    c = dims[0]
    self.middle = nnx.List([ResidualBlock(c, c, **kw), AttentionBlock(c, **kw), ResidualBlock(c, c, **kw)])
    blocks = []
    for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
      if i > 0:
        in_dim //= 2  # the previous level's resample halved the width (upstream hard-codes levels 1..3)
      for _ in range(cfg.num_res_blocks + 1):
        blocks.append(ResidualBlock(in_dim, out_dim, **kw))
        if scale in cfg.attn_scales:
          blocks.append(AttentionBlock(out_dim, **kw))
        in_dim = out_dim
      if i != len(mult) - 1:
        blocks.append(Resample(out_dim, "upsample3d" if cfg.temperal_upsample[i] else "upsample2d", **kw))
        scale *= 2.0
    self.upsamples = nnx.List(blocks)
    self.head_norm = RMSNorm(dims[-1], rngs=rngs, param_dtype=pdt)
    self.head_conv = CausalConv3d(dims[-1], 3, 3, padding=1, **kw)

  def __call__(self, x: Array, feats: Feats, *, first: bool) -> Array:
    x = self.conv1.step(x, feats)
    x = _run(self.middle, x, feats, first=first)
    x = _run(self.upsamples, x, feats, first=first)
    return self.head_conv.step(jax.nn.silu(self.head_norm(x)), feats)


class WanVAE(nnx.Module):
  """Encoder, decoder and the two 1x1x1 convs between them and the latent (upstream ``WanVAE_``)."""

  def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
    kw = _kw(cfg, rngs)
    self.cfg = cfg
    self.encoder = Encoder3d(cfg, rngs=rngs)
    self.conv1 = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1, **kw)
    self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1, **kw)
    self.decoder = Decoder3d(cfg, rngs=rngs)

  def encode_chunk(self, video: Array, feats: Feats, *, first: bool) -> Array:
    """Raw mean ``mu [B, T', h, w, z_dim]`` of a video chunk (1 frame first, then 4 per chunk -> 1 latent)."""
    return self.encode_moments_chunk(video, feats, first=first)[0]  # the log-variance is for training only

  def encode_moments_chunk(self, video: Array, feats: Feats, *, first: bool) -> tuple[Array, Array]:
    """``(mu, log_var)``, each ``[B, T', h, w, z_dim]``, of the posterior of a chunk (upstream ``encode``'s split)."""
    out = self.conv1(self.encoder(video, feats, first=first))  # [B, T', h, w, 2 z]
    return out[..., : self.cfg.z_dim], out[..., self.cfg.z_dim :]

  def decode_chunk(self, z_raw: Array, feats: Feats, *, first: bool) -> Array:
    """Pixels (not clamped) of de-normalised latents ``z_raw [B, n, h, w, z_dim]``."""
    return self.decoder(self.conv2(z_raw), feats, first=first)


def init_vae(cfg: VAEConfig, *, seed: int = 0) -> WanVAE:
  """A randomly initialised VAE (tests, benchmarks); real weights come from :mod:`longlive_jax.convert.wan_vae`."""
  return WanVAE(cfg, rngs=nnx.Rngs(seed))


def abstract_vae(cfg: VAEConfig) -> WanVAE:
  """The VAE with ``jax.ShapeDtypeStruct`` leaves: full-size structure without allocating."""
  return nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
