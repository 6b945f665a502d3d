"""Input checks and small helpers of the judge: torus displacements, world speed / radius, nearest palette
colour, the tent filter's FFT and a fast median.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from longlive_jax.toyworld import render as _render
from longlive_jax.toyworld.grammar import Attributes, parse
from longlive_jax.toyworld.judge.constants import _NAMES, _PALETTE


def _check_video(video, *, name: str = "video") -> np.ndarray:
  if not isinstance(video, np.ndarray):
    raise ValueError(f"{name} must be a numpy uint8 array [T, H, W, 3], got {type(video).__name__}")
  if video.dtype != np.uint8:
    raise ValueError(f"{name} must have dtype uint8 (RGB 0..255), got {video.dtype}")
  if video.ndim != 4 or video.shape[-1] != 3:
    raise ValueError(f"{name} must have shape [T, H, W, 3], got {video.shape}")
  t, h, w, _ = video.shape
  if t < 1:
    raise ValueError(f"{name} has no frames (shape {video.shape})")
  if h != w or h < 16:
    raise ValueError(f"{name} frames must be square and at least 16x16 (the world's size), got {h}x{w}")
  return video


def _as_attrs(prompt) -> Attributes:
  if isinstance(prompt, Attributes):
    return prompt
  if not isinstance(prompt, str):
    raise ValueError(f"a prompt must be a string or Attributes, got {type(prompt).__name__}")
  return parse(prompt)  # PromptError (a ValueError) names what does not fit the grammar


def _wrap(d: np.ndarray, size: int) -> np.ndarray:
  """Torus displacement in ``[-size / 2, size / 2)``."""
  return (d + 0.5 * size) % size - 0.5 * size


def _speed(size: int) -> float:
  return _render.SPEED * size / _render.DEFAULT_SIZE


def _radius(size: int) -> float:
  return _render.RADIUS * size / _render.DEFAULT_SIZE


def _nearest(rgb: np.ndarray, exclude: str | None = None) -> str:
  d = np.sum((_PALETTE - np.asarray(rgb, np.float32)) ** 2, axis=-1)
  if exclude is not None:
    d[_NAMES.index(exclude)] = np.inf
  return _NAMES[int(np.argmin(d))]


@functools.lru_cache(maxsize=16)
def _tent_fft(n: int, k: int) -> np.ndarray:
  """rfft2 of a torus ``n x n`` tent kernel: a ``k x k`` box (``k`` odd) convolved with itself."""
  box = np.zeros((n, n))
  idx = np.arange(-(k // 2), k // 2 + 1) % n
  box[np.ix_(idx, idx)] = 1.0
  f = np.fft.rfft2(box)
  return f * f


def _median(x) -> float | np.ndarray:
  """Median along axis 0 by sorting (fast for the small arrays of a window): a float for 1-D input, NaNs
  ignored (NaN if nothing is left); per column for 2-D input."""
  x = np.asarray(x, np.float64)
  if x.ndim == 1:
    x = x[~np.isnan(x)]
  if len(x) == 0:
    return math.nan if x.ndim == 1 else np.full(x.shape[1:], np.nan)
  s = np.sort(x, axis=0)
  m = 0.5 * (s[(len(s) - 1) // 2] + s[len(s) // 2])
  return float(m) if x.ndim == 1 else m


def _check_scene(scene, size: int) -> None:
  if not isinstance(scene, _render.Scene):
    raise ValueError(f"scene must be a render.Scene, got {type(scene).__name__}")
  if scene.size != size:
    raise ValueError(f"the scene's size {scene.size} differs from the video's {size}")
