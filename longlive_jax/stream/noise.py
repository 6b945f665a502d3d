"""Where a stream's random numbers come from: explicit PRNG keys, or given arrays (replay).

Every block needs the initial noise of its frames, one fresh re-noise draw per denoising
step after the first and, in training-style streams, one draw to noise the committed
context. Upstream draws the whole video's initial noise up front; we derive block ``b``'s
draws from ``fold_in(key, b)`` instead, so a stream of unknown length (live mode) and the
offline ``lax.scan`` generator draw exactly the same numbers for the same key, without
materialising the video's noise. :class:`GivenNoise` replays recorded draws (the golden
cases' upstream draws), which is how parity with PyTorch is tested.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockShape:
  """Static shape of one block's latents ``[batch, frames, height, width, channels]``."""

  batch: int
  frames: int
  height: int
  width: int
  channels: int

  @property
  def shape(self) -> tuple[int, int, int, int, int]:
    return (self.batch, self.frames, self.height, self.width, self.channels)


def block_draws(
  key: Array, block: Array, *, shape: BlockShape, num_steps: int, dtype=jnp.float32, context_eps: bool = True
):
  """``(noise [B, n, H, W, C], renoise [steps - 1, B, n, H, W, C], context_eps [B, n, H, W, C] | None)`` of a block.

  Pure and traceable in ``block`` (an int32 scalar), so it runs inside ``lax.scan``. The context draw
  (training-style streams only) is skipped with ``context_eps=False``; the other draws do not change.
  """
  k_noise, k_renoise, k_ctx = jax.random.split(jax.random.fold_in(key, block), 3)
  noise = jax.random.normal(k_noise, shape.shape, dtype)
  renoise = jax.random.normal(k_renoise, (num_steps - 1, *shape.shape), dtype)
  ctx = jax.random.normal(k_ctx, shape.shape, dtype) if context_eps else None
  return noise, renoise, ctx


class KeyNoise:
  """Draws of block ``b`` from ``fold_in(key, b)`` (one compiled program for every block).

  ``context_eps``: also draw the context noise (streams with ``renoise_context`` only).
  """

  def __init__(self, key: Array, *, shape: BlockShape, num_steps: int, dtype=jnp.float32, context_eps: bool = False):
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.wrap_key_data(key) if key.dtype == jnp.uint32 else jax.random.key(int(key))
    self.key, self.shape, self.num_steps, self.dtype = key, shape, num_steps, dtype
    self._draw = jax.jit(
      functools.partial(block_draws, shape=shape, num_steps=num_steps, dtype=dtype, context_eps=context_eps)
    )
    self.num_blocks = None  # unbounded

  def __call__(self, block: int):
    return self._draw(self.key, jnp.asarray(block, jnp.int32))


class GivenNoise:
  """Replays given draws: ``noise [B, T, H, W, C]`` and ``renoise [T / n, steps - 1, B, n, H, W, C]``.

  ``context_eps`` (``[B, T, H, W, C]``, optional) is only needed by streams that noise the context.
  """

  def __init__(self, noise: Array, renoise: Array, *, block_frames: int, context_eps: Array | None = None):
    noise = jnp.asarray(noise)
    t = noise.shape[1]
    if t % block_frames:
      raise ValueError(f"number of frames {t} is not a multiple of the block size {block_frames}")
    nb = t // block_frames
    renoise = jnp.asarray(renoise)
    if renoise.shape[0] != nb or renoise.shape[2:] != (noise.shape[0], block_frames, *noise.shape[2:]):
      raise ValueError(
        f"renoise has shape {tuple(renoise.shape)}; expected [{nb}, steps - 1, {noise.shape[0]}, {block_frames}, "
        f"{', '.join(map(str, noise.shape[2:]))}] for noise of shape {tuple(noise.shape)}"
      )
    self.noise, self.renoise, self.context_eps = noise, renoise, context_eps
    self.block_frames = block_frames
    self.num_blocks = nb
    self.shape = BlockShape(
      batch=noise.shape[0], frames=block_frames, height=noise.shape[2], width=noise.shape[3], channels=noise.shape[4]
    )

  def __call__(self, block: int):
    if not 0 <= block < self.num_blocks:
      raise IndexError(f"block {block} is past the given noise ({self.num_blocks} blocks)")
    s = block * self.block_frames
    ctx = None if self.context_eps is None else self.context_eps[:, s : s + self.block_frames]
    return self.noise[:, s : s + self.block_frames], self.renoise[block], ctx
