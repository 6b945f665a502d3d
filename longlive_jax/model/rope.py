"""Wan's 3D rotary position embedding (interleaved pairs, split over frame / row / column).

Upstream (``rope_params`` + ``rope_apply``): with head size ``d`` there are ``c = d/2``
complex pairs ``(x[2i], x[2i+1])``; the first ``c - 2*(c//3)`` rotate with the frame
index, the next ``c//3`` with the patch row, the last ``c//3`` with the patch column.
Each axis has its own frequency table ``pos * theta^(-2j/D_axis)`` (``D_axis`` is twice
the axis' pair count: 44/42/42 for d=128). Upstream evaluates in float64; we build the
cos/sin tables once in float64 with numpy and gather rows by (traced) positions, so
any frame offset costs nothing and never recompiles.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
  """Complex pairs given to (frame, row, column)."""
  c = head_dim // 2
  return c - 2 * (c // 3), c // 3, c // 3


def axis_frequencies(pairs: int, theta: float) -> np.ndarray:
  """float64 ``[pairs]`` angular frequencies of one axis (``theta^(-2j/D_axis)``, ``D_axis = 2 * pairs``)."""
  return 1.0 / np.power(theta, np.arange(0, 2 * pairs, 2, dtype=np.float64) / (2 * pairs))


@functools.lru_cache(maxsize=16)
def _tables(head_dim: int, max_len: int, theta: float) -> tuple[np.ndarray, ...]:
  """float32 cos/sin tables ``[max_len, pairs]`` per axis, computed in float64."""
  out = []
  pos = np.arange(max_len, dtype=np.float64)[:, None]  # [L, 1]
  for n in axis_pairs(head_dim):
    ang = pos * axis_frequencies(n, theta)  # [L, n]
    out += [np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)]
  return tuple(out)


def grid_rope(
  *,
  frame_pos: Array,
  height: int,
  width: int,
  head_dim: int,
  max_len: int = 1024,
  theta: float = 10000.0,
) -> tuple[Array, Array]:
  """cos/sin for tokens of a (frames, height, width) patch grid, flattened f-major.

  Args:
    frame_pos: int ``[F]`` frame index of each frame (absolute or window-relative).
    height, width: patch grid size (static).

  Returns:
    ``(cos, sin)``, each float32 ``[F * height * width, head_dim // 2]``.
  """
  ct, st, ch, sh, cw, sw = (jnp.asarray(a) for a in _tables(head_dim, max_len, theta))
  f = frame_pos.shape[0]
  frame_pos = jnp.asarray(frame_pos, jnp.int32)

  def expand(tf, th, tw):
    a = jnp.broadcast_to(tf[frame_pos][:, None, None, :], (f, height, width, tf.shape[-1]))  # [F, H, W, nt]
    b = jnp.broadcast_to(th[:height][None, :, None, :], (f, height, width, th.shape[-1]))  # [F, H, W, nh]
    c = jnp.broadcast_to(tw[:width][None, None, :, :], (f, height, width, tw.shape[-1]))  # [F, H, W, nw]
    return jnp.concatenate([a, b, c], axis=-1).reshape(f * height * width, -1)  # [S, d/2]

  return expand(ct, ch, cw), expand(st, sh, sw)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates interleaved pairs of ``x [B, S, H, Dh]`` by angles with ``cos/sin [S, Dh/2]`` (or ``[B, S, Dh/2]``)."""
  b, s, h, d = x.shape
  xf = x.astype(jnp.float32).reshape(b, s, h, d // 2, 2)  # [B, S, H, Dh/2, 2]
  re, im = xf[..., 0], xf[..., 1]
  if cos.ndim == 2:
    cos, sin = cos[None], sin[None]
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [B|1, S, 1, Dh/2]
  out = jnp.stack([re * cos - im * sin, re * sin + im * cos], axis=-1)  # [B, S, H, Dh/2, 2]
  return out.reshape(b, s, h, d).astype(x.dtype)
