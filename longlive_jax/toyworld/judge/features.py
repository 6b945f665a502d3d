"""Per-frame pixel features of the judge (background, object colour, alpha, centre, shape moments, artefacts,
presence), vectorised over frames in chunks, and frame differences.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from longlive_jax.toyworld import render as _render
from longlive_jax.toyworld.judge.constants import _CHUNK, ARTEFACT_THRESHOLD, FG_THRESHOLD, OUTLIER_DISTANCE
from longlive_jax.toyworld.judge.helpers import _radius, _tent_fft


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class _Features:
  """Per-frame measurements (arrays of length T)."""

  size: int
  bg: np.ndarray  # [T, 3] background colour (per-channel median)
  obj: np.ndarray  # [T, 3] object colour (robust mean of core pixels)
  centre: np.ndarray  # [T, 2] (x, y), NaN when absent
  area: np.ndarray  # [T] object area in px (sum of alpha on the support)
  fill: np.ndarray  # [T] area / (width * height), NaN when absent
  tri: np.ndarray  # [T] |E z^3| / area^1.5 (3-fold symmetry), NaN when absent
  sq: np.ndarray  # [T] |E z^4| / area^2 (4-fold symmetry), NaN when absent
  artefacts: np.ndarray  # [T] fraction of artefact pixels
  edge_width: np.ndarray  # [T] partial-alpha pixels per unit of edge length
  present: np.ndarray  # [T] bool

  def __len__(self) -> int:
    return len(self.bg)


def _features(video: np.ndarray) -> _Features:
  size = video.shape[1]
  parts = [_features_chunk(video[i : i + _CHUNK]) for i in range(0, len(video), _CHUNK)]
  return _Features(size=size, **{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def _features_chunk(frames: np.ndarray) -> dict[str, np.ndarray]:
  t, size = frames.shape[:2]
  radius = _radius(size)
  expected_area = math.pi * radius * radius
  # frame-wide statistics at half resolution: the background is the per-channel median of one pixel in
  # each 2x2 block (the object is ~4 % of them); the foreground is found on 2x2 block means (halves noise)
  s = 2 if size >= 32 and size % 2 == 0 else 1
  sub = frames[:, ::s, ::s]
  bg = np.median(sub.reshape(t, -1, 3), axis=1).T.astype(np.float32)  # [3, t]
  rel = np.moveaxis(sub, -1, 0).astype(np.float32) - bg[:, :, None, None]  # [3, t, S/s, S/s]
  d2 = rel[0] * rel[0] + rel[1] * rel[1] + rel[2] * rel[2]
  blk = rel
  if s == 2:  # 2x2 block means: vertical pairs (uint16), then horizontal pairs (adjacent RGB triplets)
    pairs = np.add(frames[:, 0::2], frames[:, 1::2], dtype=np.uint16).reshape(t, size // 2, size // 2, 6)
    blk = np.moveaxis(pairs[..., :3] + pairs[..., 3:], -1, 0).astype(np.float32) * 0.25 - bg[:, :, None, None]
  fg = blk[0] * blk[0] + blk[1] * blk[1] + blk[2] * blk[2] > FG_THRESHOLD**2

  # locate: peak of a tent-filtered (box twice) foreground density on the torus
  dens = np.fft.irfft2(np.fft.rfft2(fg.astype(np.float32)) * _tent_fft(fg.shape[1], 2 * int(round(radius / s)) + 1))
  peak = np.argmax(dens.reshape(t, -1), axis=1)
  py, px = (peak // dens.shape[2]) * s + s // 2, (peak % dens.shape[2]) * s + s // 2

  # crop (torus indices) around the peak at full resolution
  h = min(int(math.ceil(_render.TRIANGLE_CIRCUMRADIUS * radius)) + 5, (size - 1) // 2)
  off = np.arange(-h, h + 1)
  ys = ((py[:, None] + off) % size)[:, :, None]  # [t, K, 1]
  xs = ((px[:, None] + off) % size)[:, None, :]  # [t, 1, K]
  pixels = np.ascontiguousarray(frames).view("V3").reshape(t, size, size)  # gather whole RGB triplets
  xc = pixels[np.arange(t)[:, None, None], ys, xs].view(np.uint8).reshape(t, len(off), len(off), 3)
  xc = np.moveaxis(xc, -1, 0).astype(np.float32)  # [3, t, K, K]
  relc = xc - bg[:, :, None, None]
  mc = relc[0] * relc[0] + relc[1] * relc[1] + relc[2] * relc[2] > FG_THRESHOLD**2  # [t, K, K]

  # object colour: robust mean of the core (the foreground eroded by ~R/3.5 px: 2 at 64 px, past a blurred
  # edge), falling back to less eroded cores when too small (< 3 px)
  sel = mc
  core = mc
  for _ in range(max(1, int(round(radius / 3.5)))):
    core = _erode(core)
    sel = np.where((core.sum((1, 2)) >= 3)[:, None, None], core, sel)
  obj = _masked_mean(xc, sel, bg)  # [3, t]
  dev = xc - obj[:, :, None, None]
  inl = sel & (dev[0] * dev[0] + dev[1] * dev[1] + dev[2] * dev[2] <= OUTLIER_DISTANCE**2)
  obj = np.where(inl.sum((1, 2)) >= 3, _masked_mean(xc, inl, bg), obj)

  # alpha: projection on the background -> object line (exact coverage for a mix of the two, blurred or
  # not), kept raw (noise stays zero-mean, moments stay blur-invariant) on the object's support: pixels
  # whose 3x3 mean alpha exceeds 1/4, dilated by one pixel
  v = obj - bg  # [3, t]
  c2 = np.sum(v * v, axis=0)
  has = c2 >= FG_THRESHOLD**2
  inv = np.where(has, 1.0 / np.maximum(c2, 1e-6), 0.0).astype(np.float32)
  w = (v * inv)[:, :, None, None]
  a = relc[0] * w[0] + relc[1] * w[1] + relc[2] * w[2]  # [t, K, K]
  support = _box3(_box3(a) > 0.25) > 0
  am = np.where(support, a, 0.0)
  area = am.sum((1, 2))
  safe = np.where(np.abs(area) > 1e-6, area, 1e-6)
  offs = off.astype(np.float32)
  mx, my = (am.sum(1) @ offs) / safe, (am.sum(2) @ offs) / safe
  centre = np.stack([(px + 0.5 + mx) % size, (py + 0.5 + my) % size], axis=1)

  # shape: complex moments about the centroid, z = x + iy; blur-invariant (a centred symmetric kernel adds
  # nothing to E[z^3] and, the shapes' E[z^2] being 0, nothing to E[z^4] if isotropic), rotation- and
  # scale-invariant once normalised by the area: |E z^3| marks 3-fold symmetry (the triangle),
  # |E z^4| 4-fold symmetry (the square); the circle has neither
  z = (offs[None, None, :] - mx[:, None, None]) + 1j * (offs[None, :, None] - my[:, None, None])
  z2 = z * z
  tri = np.abs(np.einsum("tyx,tyx->t", am, z2 * z)) / safe / np.maximum(np.abs(safe), 1e-6) ** 1.5
  sq = np.abs(np.einsum("tyx,tyx->t", am, z2 * z2)) / safe / np.maximum(np.abs(safe), 1e-6) ** 2
  ac = np.clip(a, 0.0, 1.0) * support
  fill = area / np.maximum(ac.max(1).sum(1) * ac.max(2).sum(1), 1e-6)

  # edge width: pixels of partial alpha per unit of (anisotropic) edge length
  partial = ((ac > 0.1) & (ac < 0.9)).sum((1, 2))
  tv = np.abs(np.diff(ac, axis=1)).sum((1, 2)) + np.abs(np.diff(ac, axis=2)).sum((1, 2))
  edge_width = partial / np.maximum(tv, 1e-6)

  # artefacts (one pixel per 2x2 block): squared distance from the background -> object segment
  p = rel[0] * v[0, :, None, None] + rel[1] * v[1, :, None, None] + rel[2] * v[2, :, None, None]
  af = np.clip(p * inv[:, None, None], 0.0, 1.0)
  res2 = d2 - af * (2.0 * p - af * c2[:, None, None])
  artefacts = (res2 > ARTEFACT_THRESHOLD**2).mean((1, 2))

  stray = fg.sum((1, 2)) * s * s - mc.sum((1, 2))  # foreground pixels outside the crop (estimate)
  present = has & (area >= 0.25 * expected_area) & (area <= 4.0 * expected_area) & (stray <= area)
  return {
    "bg": bg.T.astype(np.float64),
    "obj": obj.T.astype(np.float64),
    "centre": np.where(present[:, None], centre, np.nan).astype(np.float64),
    "area": area.astype(np.float64),
    "fill": np.where(present, fill, np.nan).astype(np.float64),
    "tri": np.where(present, tri, np.nan).astype(np.float64),
    "sq": np.where(present, sq, np.nan).astype(np.float64),
    "artefacts": artefacts.astype(np.float64),
    "edge_width": edge_width.astype(np.float64),
    "present": present,
  }


def _erode(m: np.ndarray) -> np.ndarray:
  """One-pixel erosion (4-neighbourhood) of boolean masks ``[t, K, K]``; the border is eroded."""
  out = np.zeros_like(m)
  out[:, 1:-1, 1:-1] = m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
  return out


def _box3(a: np.ndarray) -> np.ndarray:
  """3x3 box mean over the last two axes (edges replicated)."""
  a = a.astype(np.float32)
  p = np.concatenate([a[:, :1], a, a[:, -1:]], axis=1)
  a = (p[:, :-2] + p[:, 1:-1] + p[:, 2:]) / 3.0
  p = np.concatenate([a[:, :, :1], a, a[:, :, -1:]], axis=2)
  return (p[:, :, :-2] + p[:, :, 1:-1] + p[:, :, 2:]) / 3.0


def _masked_mean(xc: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
  """``[3, t]`` mean of ``xc`` ``[3, t, K, K]`` over ``mask`` ``[t, K, K]`` (``fallback`` where empty)."""
  n = mask.sum((1, 2))
  m = mask.reshape(len(mask), -1).astype(np.float32)
  s = np.einsum("ctk,tk->ct", xc.reshape(3, len(mask), -1), m)
  return np.where(n > 0, s / np.maximum(n, 1), fallback).astype(np.float32)


def _frame_diffs(video: np.ndarray) -> np.ndarray:
  """float64 ``[T - 1]`` mean absolute change from frame ``t`` to ``t + 1``."""
  out = np.empty(max(len(video) - 1, 0))
  for i in range(0, len(out), _CHUNK):
    a = video[i : i + _CHUNK + 1].astype(np.int16)
    out[i : i + len(a) - 1] = np.abs(a[1:] - a[:-1]).mean((1, 2, 3))
  return out
