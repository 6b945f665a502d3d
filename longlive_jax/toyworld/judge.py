"""A pixel judge for the toy world: what a video shows, scored against its prompt(s), from pixels alone.

The judge is meant for *generated* videos (blurry, noisy, tinted, imperfect), so it never assumes a
pixel is exactly a palette colour; it only assumes the world's structure: one compact object on a
plain background, on a square frame, drawn on a torus (an object may wrap across the edges).

Conventions:

  * a video is ``uint8 [T, H, W, 3]`` RGB with ``H == W >= 16`` (the world's size), at :data:`FPS`;
  * positions are ``(x, y)`` in pixels, ``y`` pointing down, pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``
    (the convention of :func:`longlive_jax.toyworld.render.simulate`), wrapped into ``[0, size)``;
  * object sizes and speeds scale with the frame: radius ``render.RADIUS * size / 64``, world speed
    ``render.SPEED * size / 64`` px/frame; the judge's speed thresholds are fractions of that speed;
  * colour distances are Euclidean in RGB (0..255 per channel); frame differences are mean absolute
    differences over pixels and channels, in 0..255 intensity units;
  * switch frames are video frames (the first frame of the new prompt), as in ``Scene.from_prompts``.

Per frame (vectorised over frames, in chunks of 64 frames):

  * background: the per-channel median colour (of one pixel per 2x2 block; the object covers ~4 %);
  * foreground: 2x2 block means farther than :data:`FG_THRESHOLD` from the background (block means halve
    pixel noise); the object is located at the peak of a torus tent filter of the foreground and cropped
    around it (torus indices, so an object wrapping across the edges is whole);
  * object colour: the mean of the crop's core foreground pixels (eroded by ~R/3.5 px, past a blurred
    edge), pixels farther than :data:`OUTLIER_DISTANCE` from it dropped;
  * alpha: every pixel's projection on the background -> object colour line, which is the exact coverage
    of the renderer's anti-aliased mix and of any linear blur of it; kept raw (noise stays zero-mean) on
    the object's support (3x3 mean alpha > 1/4, dilated by a pixel). The centre is its centroid;
  * shape: normalised complex moments about the centroid (``z = x + iy``): ``|E z^3| / area^1.5`` is
    :data:`TRIANGLE_MOMENT` for the triangle and ~0 for 4-fold or round shapes, ``|E z^4| / area^2`` is
    :data:`SQUARE_MOMENT` for the square and ~0 for 3-fold or round shapes. Both are invariant to
    translation, rotation, scale and (nearly) blur: a centred symmetric blur kernel adds nothing to
    ``E z^3``, and nothing to ``E z^4`` when isotropic since these shapes have ``E z^2 = 0``;
  * artefacts: pixels (one per 2x2 block) farther than :data:`ARTEFACT_THRESHOLD` from the segment
    between the observed background and object colours (neither of them nor a mix: noise, smears, ghosts).
    Quality is relative to the observed colours; palette fidelity is ``Observation.colour_error``.

  * presence: the object differs from the background by at least :data:`FG_THRESHOLD`, its area is within
    [1/4, 4] times the world's circle's, and fewer foreground pixels lie outside the crop than in the
    object (scattered noise or a second blob is not one compact object).

Per window (:func:`judge_window`): the background and object colours are the palette colours nearest to
the median observed colours (the background's excluded for the object); the shape is the triangle or
the square by the larger median relative moment if at least 1/2, else the circle; the motion comes from
4-frame displacements of the torus-unwrapped centre track: still below :data:`STILL_SPEED`, bounces if
both components are large (:data:`BOUNCE_COMPONENT`, :data:`BOUNCE_RATIO`) or a component reverses,
else the dominant axis and its sign. :func:`judge_video` splits a video into windows within prompt
segments and scores them; :func:`switch_smoothness` measures a prompt switch (position continuity and
frame-difference spike, against what the world itself does).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from longlive_jax.toyworld import render as _render
from longlive_jax.toyworld.grammar import COLOURS, DIRECTIONS, Attributes, parse

FPS = _render.FPS
ATTRIBUTES = ("background", "colour", "shape", "motion")  # judged attributes; accuracies also have "all"

FG_THRESHOLD = 50.0  # RGB distance from the background colour above which a pixel is foreground
ARTEFACT_THRESHOLD = 32.0  # RGB distance from the background -> object colour line that makes an artefact
OUTLIER_DISTANCE = 40.0  # core pixels farther than this from their mean are dropped from the object colour
# The world's shapes' normalised complex moments (module docstring): |E z^3| / area^1.5 of the equilateral
# triangle and |E z^4| / area^2 of the square (exact for the continuous shapes; the other shapes have ~0 of
# each). A window is a triangle / square if its relative moment is at least 1/2 (and the larger of the two).
TRIANGLE_MOMENT = 0.0675
SQUARE_MOMENT = 1.0 / 60.0
STILL_SPEED = 0.2  # below this fraction of the world speed an object stays still (0.3 px/frame at 64 px)
BOUNCE_COMPONENT = 0.3  # both velocity components above this fraction of the world speed: diagonal (bounces)
BOUNCE_RATIO = 0.4  # ... and the smaller at least this fraction of the larger
JUMP_TOLERANCE = 2.0  # a switch jump beyond the expected step by more than this many world steps is a teleport
SPIKE_FLOOR = 0.1  # intensity floor of the denominators of the spike ratios
_LAG = 4  # frames between the track points of one velocity estimate
_CHUNK = 64  # frames per vectorised chunk

_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _NAMES], np.float32)


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Observation:
  """What a window of consecutive frames shows.

  ``background`` / ``colour`` are palette names (the object's is never the background's), ``shape`` one
  of ``grammar.SHAPES`` and ``motion`` one of ``grammar.MOTIONS``. ``present`` says a compact object was
  found in most frames; when it is False, ``colour`` / ``shape`` / ``motion`` are best guesses and count
  as wrong in :func:`judge_video`.

  Diagnostics: ``background_rgb`` / ``colour_rgb`` the observed colours (float RGB medians over the frames);
  ``colour_error`` the larger of their distances to the named palette colours (colour fidelity); ``track``
  ``[n, 2]`` the per-frame object centre (x, y) in pixels, in ``[0, size)`` (NaN where no object);
  ``velocity`` the robust velocity (median over the window of 4-frame displacements of the torus-unwrapped
  track, px/frame); ``speed`` the robust speed (norm of the per-component median absolute velocities);
  ``triangularity`` / ``squareness`` the shape moments relative to the triangle's / square's (~1 for that
  shape, ~0 for the others); ``fill`` the median ``area / (width * height)`` of the object (a blur-sensitive
  cross-check: ~0.53 triangle, ~0.79 circle, ~1 square); ``area`` the median object area as a fraction of
  the frame (~0.038 for the world's circle); ``artefacts`` the mean fraction of pixels close to neither the
  background, the object colour nor a mix of both; ``quality = 1 - artefacts``; ``edge_width`` the median
  width of the object's edges in pixels (~0.7 for the renderer's anti-aliasing, more when blurry);
  ``present_fraction`` the fraction of frames with an object.
  """

  present: bool
  background: str
  colour: str
  shape: str
  motion: str
  background_rgb: np.ndarray
  colour_rgb: np.ndarray
  colour_error: float
  track: np.ndarray
  velocity: np.ndarray
  speed: float
  triangularity: float
  squareness: float
  fill: float
  area: float
  artefacts: float
  quality: float
  edge_width: float
  present_fraction: float

  def attributes(self) -> dict[str, str]:
    """The judged attributes by name (see :data:`ATTRIBUTES`)."""
    return {"background": self.background, "colour": self.colour, "shape": self.shape, "motion": self.motion}


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class WindowRecord:
  """One judged window: video frames ``[start, end)`` of prompt ``segment``, what it should show and shows.

  ``correct`` has one bool per name of :data:`ATTRIBUTES` and ``"all"``; object attributes are wrong when no
  object is present.
  """

  start: int
  end: int
  segment: int
  expected: Attributes
  observed: Observation
  correct: dict[str, bool]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Smoothness:
  """Frame-to-frame change against what the world itself does, over the steady frames (no switch).

  ``frame_diff[t]`` is the mean absolute pixel change from frame ``t`` to ``t + 1`` (0..255 units) and
  ``expected[t]`` the world's (the ground-truth render when a scene is given, else the change of the
  prompt's object moving at the world speed). ``steady[t]`` marks the transitions used (those into a
  switch frame and its margin are left to :class:`SwitchScore`). ``mean`` / ``expected_mean`` average them,
  ``excess = mean - expected_mean`` (~0 for the world, > 0 for flicker or noise), ``ratio = mean /
  expected_mean`` (NaN when the world is still). ``jitter`` is the median change of the tracked per-frame
  step (px/frame^2): ~0 for the world's constant motion, larger for a shaky object.
  """

  frame_diff: np.ndarray
  expected: np.ndarray
  steady: np.ndarray
  mean: float
  expected_mean: float
  excess: float
  ratio: float
  jitter: float


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class SwitchScore:
  """How smoothly a video goes through a prompt switch at video frame ``frame``.

  Position (colour independent): ``jump`` is the largest tracked centre step (px, torus-aware) into frames
  ``[frame, frame + margin]``; ``normal_step`` the median step in the context frames around; ``expected_jump``
  what the world does there (the ground truth's largest step when a scene is given, else the larger of
  ``normal_step`` and the new motion's speed, plus the clamp of an object entering ``bounces`` from a wrapped
  position); ``continuous = jump <= expected_jump + JUMP_TOLERANCE * world speed`` (False for a teleport).
  NaN / False when the object is not tracked there.

  Pixels: ``spike`` is the largest frame difference into ``[frame, frame + margin]``; ``baseline`` the
  median frame difference of the context; ``spike_ratio = spike / max(baseline, SPIKE_FLOOR)``;
  ``expected_spike`` the world's change at the switch (the ground truth's when a scene is given, else the
  prompts' frames rendered at the tracked position; it is large when the background changes, since every
  pixel legitimately changes); ``spike_excess = spike - expected_spike`` (~0 for the world) and
  ``relative_spike = spike / max(expected_spike, baseline, SPIKE_FLOOR)`` (~1 for the world). NaN without
  prompts or a scene.
  """

  frame: int
  jump: float
  normal_step: float
  expected_jump: float
  continuous: bool
  spike: float
  baseline: float
  spike_ratio: float
  expected_spike: float
  spike_excess: float
  relative_spike: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Drift:
  """The first ``seconds`` of a video against its last ``seconds`` (at most half the video each).

  ``quality_*`` is the mean per-frame quality (1 - artefact fraction), ``accuracy_*`` the ``"all"``
  accuracy of the windows whose centre lies in the part (NaN if none), ``area_*`` the median object area
  fraction; ``quality_delta = quality_last - quality_first`` (negative: the video degrades).
  """

  seconds: float
  quality_first: float
  quality_last: float
  quality_delta: float
  accuracy_first: float
  accuracy_last: float
  area_first: float
  area_last: float


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class VideoScore:
  """A video scored against its prompts.

  ``windows`` are the judged windows in order; ``accuracy`` maps each of :data:`ATTRIBUTES`, ``"all"``
  (every attribute right) and ``"present"`` to the fraction of windows right (NaN without windows).
  ``quality`` ``[T]``, ``track`` ``[T, 2]`` and ``present`` ``[T]`` are per-frame diagnostics (see
  :class:`Observation`); ``switches`` has one :class:`SwitchScore` per prompt switch.
  """

  num_frames: int
  fps: float
  windows: tuple[WindowRecord, ...]
  accuracy: dict[str, float]
  smoothness: Smoothness
  drift: Drift
  switches: tuple[SwitchScore, ...]
  quality: np.ndarray
  track: np.ndarray
  present: np.ndarray

  def accuracy_between(self, start_s: float = 0.0, end_s: float | None = None) -> dict[str, float]:
    """Accuracies (as :attr:`accuracy`) of the windows whose centre lies in ``[start_s, end_s)`` seconds.

    Negative times count from the end of the video (``accuracy_between(-10)``: the last 10 s); ``end_s=None``
    is the end. NaN where no window falls in the range.
    """
    duration = self.num_frames / self.fps
    lo = start_s + duration if start_s < 0 else start_s
    hi = duration if end_s is None else (end_s + duration if end_s < 0 else end_s)
    sel = [w for w in self.windows if lo <= 0.5 * (w.start + w.end) / self.fps < hi]
    return _accuracies(sel)

  def accuracy_over_time(self, bin_s: float = 10.0) -> list[tuple[float, float, dict[str, float]]]:
    """``(start_s, end_s, accuracies)`` per consecutive ``bin_s``-second bin of the video."""
    if bin_s <= 0:
      raise ValueError(f"bin_s must be positive, got {bin_s}")
    duration = self.num_frames / self.fps
    edges = np.arange(0.0, duration, bin_s)
    return [(float(a), float(min(a + bin_s, duration)), self.accuracy_between(a, a + bin_s)) for a in edges]


# ----------------------------------------------------------------------------------------------------------
# Checks and small helpers


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


# ----------------------------------------------------------------------------------------------------------
# Per-frame features


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


# ----------------------------------------------------------------------------------------------------------
# Windows


def _classify_shape(triangularity: float, squareness: float) -> str:
  """Triangle / square by the larger relative moment if it is at least 1/2, else circle (also for NaN)."""
  if not max(triangularity, squareness) >= 0.5:
    return "circle"
  return "triangle" if triangularity >= squareness else "square"


def _classify_motion(track: np.ndarray, size: int) -> tuple[str, np.ndarray, float]:
  """(motion, robust velocity, robust speed) of a per-frame centre track (NaN rows: no object)."""
  ok = ~np.isnan(track[:, 0])
  idx = np.flatnonzero(ok)
  if len(idx) < 2:
    return "stays still", np.zeros(2), 0.0
  pts = track[idx]
  u = np.concatenate([pts[:1], pts[:1] + np.cumsum(_wrap(np.diff(pts, axis=0), size), axis=0)])
  frames = np.arange(idx[0], idx[-1] + 1)
  u = np.stack([np.interp(frames, idx, u[:, i]) for i in range(2)], axis=1)  # unwrapped, gaps filled
  lag = min(_LAG, len(u) - 1)
  vel = (u[lag:] - u[:-lag]) / lag  # [m, 2]
  mag = _median(np.abs(vel))
  speed = float(np.hypot(*mag))
  velocity = _median(vel)
  sp = _speed(size)
  if speed < STILL_SPEED * sp:
    return "stays still", velocity, speed
  q = max(1, len(vel) // 3)
  first, last = _median(vel[:q]), _median(vel[-q:])
  reverses = np.any((first * last < 0) & (np.minimum(np.abs(first), np.abs(last)) >= BOUNCE_COMPONENT * sp))
  diagonal = mag.min() >= BOUNCE_COMPONENT * sp and mag.min() >= BOUNCE_RATIO * mag.max()
  if diagonal or reverses:
    return "bounces", velocity, speed
  net = vel.sum(axis=0)
  if mag[0] >= mag[1]:
    return ("moves right" if net[0] > 0 else "moves left"), velocity, speed
  return ("moves down" if net[1] > 0 else "moves up"), velocity, speed


def _observe(feat: _Features, lo: int, hi: int) -> Observation:
  pres = feat.present[lo:hi]
  bg_rgb = _median(feat.bg[lo:hi])
  background = _nearest(bg_rgb)
  colour_rgb = _median(feat.obj[lo:hi][pres] if pres.any() else feat.obj[lo:hi])
  colour = _nearest(colour_rgb, exclude=background)
  colour_error = max(
    float(np.linalg.norm(bg_rgb - COLOURS[background])), float(np.linalg.norm(colour_rgb - COLOURS[colour]))
  )
  triangularity = float(_median(feat.tri[lo:hi])) / TRIANGLE_MOMENT
  squareness = float(_median(feat.sq[lo:hi])) / SQUARE_MOMENT
  track = feat.centre[lo:hi]
  motion, velocity, speed = _classify_motion(track, feat.size)
  artefacts = float(feat.artefacts[lo:hi].mean())
  return Observation(
    present=bool(pres.sum() * 2 > hi - lo),
    background=background,
    colour=colour,
    shape=_classify_shape(triangularity, squareness),
    motion=motion,
    background_rgb=bg_rgb,
    colour_rgb=colour_rgb,
    colour_error=colour_error,
    track=track.copy(),
    velocity=np.asarray(velocity, np.float64),
    speed=speed,
    triangularity=triangularity,
    squareness=squareness,
    fill=float(_median(feat.fill[lo:hi])),
    area=_median(feat.area[lo:hi][pres]) / feat.size**2 if pres.any() else 0.0,
    artefacts=artefacts,
    quality=1.0 - artefacts,
    edge_width=float(_median(np.where(pres, feat.edge_width[lo:hi], np.nan))),
    present_fraction=float(pres.mean()),
  )


def judge_window(frames: np.ndarray) -> Observation:
  """What a window of consecutive frames (uint8 ``[n, H, W, 3]``, ``n >= 2``) shows (see :class:`Observation`)."""
  frames = _check_video(frames, name="frames")
  if len(frames) < 2:
    raise ValueError(f"a window needs at least 2 frames to judge motion, got {len(frames)}")
  return _observe(_features(frames), 0, len(frames))


def _score(expected: Attributes, obs: Observation) -> dict[str, bool]:
  got = obs.attributes()
  correct = {
    name: got[name] == getattr(expected, name) and (obs.present or name == "background") for name in ATTRIBUTES
  }
  correct["all"] = all(correct.values())
  return correct


def _accuracies(windows: Sequence[WindowRecord]) -> dict[str, float]:
  out = {}
  for name in (*ATTRIBUTES, "all"):
    out[name] = float(np.mean([w.correct[name] for w in windows])) if windows else math.nan
  out["present"] = float(np.mean([w.observed.present for w in windows])) if windows else math.nan
  return out


# ----------------------------------------------------------------------------------------------------------
# The world's own change (expected frame differences)


def _draw(attrs: Attributes, centre: np.ndarray, size: int) -> np.ndarray:
  """float ``[H, W, 3]`` frame of ``attrs`` with the object at ``centre`` (torus), unrounded."""
  grid = np.arange(size, dtype=np.float64) + 0.5
  dx = _wrap(grid[None, :] - centre[0], size)
  dy = _wrap(grid[:, None] - centre[1], size)
  a = _render.coverage(attrs.shape, dx, dy, _radius(size))[..., None]
  fg = np.asarray(COLOURS[attrs.colour], np.float64)
  bg = np.asarray(COLOURS[attrs.background], np.float64)
  return a * fg + (1.0 - a) * bg


def _world_step(motion: str, size: int) -> np.ndarray:
  """The world's per-frame displacement of ``motion`` (``bounces``: the (+, +) diagonal)."""
  direction = np.asarray(DIRECTIONS[motion], np.float64)
  norm = np.linalg.norm(direction)
  return direction / norm * _speed(size) if norm > 0 else direction


@functools.lru_cache(maxsize=1024)
def _world_frame_diff(attrs: Attributes, size: int) -> float:
  """Mean absolute change per frame of the world's object of ``attrs`` moving at the world speed."""
  c0 = np.array([0.5 * size + 0.25, 0.5 * size + 0.25])  # off the pixel grid, like a typical frame
  step = _world_step(attrs.motion, size)
  return float(np.abs(_draw(attrs, c0 + step, size) - _draw(attrs, c0, size)).mean())


def _switch_score(
  feat: _Features,
  diffs: np.ndarray,
  frame: int,
  *,
  before: Attributes | None,
  after: Attributes | None,
  gt_diffs: np.ndarray | None,
  gt_track: np.ndarray | None,
  margin: int,
  context: int,
) -> SwitchScore:
  """``feat`` / ``diffs`` (and the ground truth's) cover frames ``[0, len(feat))``; ``frame`` is the switch."""
  size, n = feat.size, len(feat)
  sp = _speed(size)
  steps = np.linalg.norm(_wrap(np.diff(feat.centre, axis=0), size), axis=1)  # steps[t - 1]: frame t-1 -> t
  region = np.arange(frame, min(frame + margin, n - 1) + 1)  # later frame of each transition
  ctx = np.concatenate([np.arange(frame - context, frame), np.arange(frame + margin + 1, frame + margin + context + 1)])
  ctx = ctx[(ctx >= 1) & (ctx <= n - 1)]
  jumps = steps[region - 1]
  jump = math.nan if np.all(np.isnan(jumps)) else float(np.nanmax(jumps))
  normal = float(_median(steps[ctx - 1])) if len(ctx) else math.nan
  if gt_track is not None:
    gsteps = np.linalg.norm(_wrap(np.diff(gt_track, axis=0), size), axis=1)
    expected_jump = float(np.max(gsteps[region - 1]))
  else:
    expected_jump = 0.0 if math.isnan(normal) else normal
    if after is not None:
      expected_jump = max(expected_jump, 0.0 if after.motion == "stays still" else sp)
      prev = feat.centre[frame - 1]
      if after.motion == "bounces" and (before is None or before.motion != "bounces") and not np.isnan(prev[0]):
        m = _render.TRIANGLE_CIRCUMRADIUS * _radius(size)
        expected_jump += float(np.linalg.norm(np.clip(prev, m, size - m) - prev))
  continuous = bool(not math.isnan(jump) and jump <= expected_jump + JUMP_TOLERANCE * sp)

  spike = float(np.max(diffs[region - 1]))
  baseline = _median(diffs[ctx - 1]) if len(ctx) else math.nan
  if gt_diffs is not None:
    expected_spike = float(np.max(gt_diffs[region - 1]))
  elif before is not None and after is not None:
    prev = feat.centre[frame - 1]
    prev = np.full(2, 0.5 * size) if np.isnan(prev[0]) else prev
    nxt = prev
    if after.motion == "bounces" and before.motion != "bounces":
      m = _render.TRIANGLE_CIRCUMRADIUS * _radius(size)
      nxt = np.clip(prev, m, size - m)
    nxt = nxt + _world_step(after.motion, size)
    expected_spike = float(np.abs(_draw(after, nxt, size) - _draw(before, prev, size)).mean())
  else:
    expected_spike = math.nan
  floor_base = SPIKE_FLOOR if math.isnan(baseline) else max(baseline, SPIKE_FLOOR)
  return SwitchScore(
    frame=int(frame),
    jump=jump,
    normal_step=normal,
    expected_jump=expected_jump,
    continuous=continuous,
    spike=spike,
    baseline=baseline,
    spike_ratio=spike / floor_base,
    expected_spike=expected_spike,
    spike_excess=spike - expected_spike,
    relative_spike=spike / max(floor_base, 0.0 if math.isnan(expected_spike) else expected_spike),
  )


def switch_smoothness(
  video: np.ndarray,
  switch_frame: int,
  *,
  prompts: Sequence[str | Attributes] | None = None,
  scene: _render.Scene | None = None,
  margin: int = 4,
  context: int = 8,
) -> SwitchScore:
  """How smoothly ``video`` goes through a prompt switch at video frame ``switch_frame`` (see :class:`SwitchScore`).

  ``prompts`` are the prompts before and after the switch (two), used for the world's expected change;
  ``scene`` (the ground truth, same size) makes the expectations exact: its render's steps and spike.
  ``margin`` frames after the switch may hold the transition; ``context`` frames on each side outside it
  give the normal step and frame difference. Only the frames around the switch are analysed.
  """
  video = _check_video(video)
  t, size = video.shape[:2]
  if not 0 < switch_frame < t:
    raise ValueError(f"switch_frame must be inside the video (0 < frame < {t}), got {switch_frame}")
  if margin < 0 or context < 1:
    raise ValueError(f"margin must be >= 0 and context >= 1, got {margin} and {context}")
  before = after = None
  if prompts is not None:
    if len(prompts) != 2:
      raise ValueError(f"prompts must be the two prompts around the switch, got {len(prompts)}")
    before, after = (_as_attrs(p) for p in prompts)
  elif scene is not None:
    before, after = scene.attrs_at(switch_frame - 1), scene.attrs_at(switch_frame)
  lo, hi = max(0, switch_frame - context - 1), min(t, switch_frame + margin + context + 1)
  clip = video[lo:hi]
  gt_diffs = gt_track = None
  if scene is not None:
    _check_scene(scene, size)
    gt = _render.render(scene, hi)[lo:hi]
    gt_diffs, gt_track = _frame_diffs(gt), _render.simulate(scene, hi)[lo:hi]
  score = _switch_score(
    _features(clip),
    _frame_diffs(clip),
    switch_frame - lo,
    before=before,
    after=after,
    gt_diffs=gt_diffs,
    gt_track=gt_track,
    margin=margin,
    context=context,
  )
  return dataclasses.replace(score, frame=int(switch_frame))


def _check_scene(scene, size: int) -> None:
  if not isinstance(scene, _render.Scene):
    raise ValueError(f"scene must be a render.Scene, got {type(scene).__name__}")
  if scene.size != size:
    raise ValueError(f"the scene's size {scene.size} differs from the video's {size}")


def judge_video(
  video: np.ndarray,
  *,
  prompts: Sequence[str | Attributes],
  switch_frames: Sequence[int] = (),
  window: int = 16,
  margin: int = 4,
  min_window: int | None = None,
  scene: _render.Scene | None = None,
  context: int = 8,
  drift_s: float = 10.0,
  fps: float = FPS,
) -> VideoScore:
  """Scores ``video`` (uint8 ``[T, H, W, 3]``) against ``prompts`` switching at video frames ``switch_frames``.

  Each prompt segment ``[switch, next switch)`` is split into consecutive windows of ``window`` frames,
  starting ``margin`` frames after a switch (a transition allowance; the first segment starts at 0); a
  shorter last window is kept if it has at least ``min_window`` frames (default ``max(2, window // 2)``).
  Windows never straddle a switch. Each is judged (:func:`judge_window`) against the prompt in force.
  ``scene`` (the ground truth, if known) makes the smoothness and switch expectations exact; otherwise
  they come from the prompts (the world's object at the world speed, at the tracked positions).
  ``context`` is the number of frames on each side of a switch that give its normal step and change,
  ``drift_s`` the seconds compared at the start and the end (:class:`Drift`). See :class:`VideoScore`.
  """
  video = _check_video(video)
  t, size = video.shape[:2]
  if isinstance(prompts, str | Attributes):
    prompts = [prompts]
  attrs = [_as_attrs(p) for p in prompts]
  if not attrs:
    raise ValueError("prompts must hold at least one prompt")
  switch_frames = [int(f) for f in switch_frames]
  if len(switch_frames) != len(attrs) - 1:
    raise ValueError(f"{len(attrs)} prompts need {len(attrs) - 1} switch frames, got {len(switch_frames)}")
  starts = [0, *switch_frames]
  if any(b <= a for a, b in zip(starts, starts[1:], strict=False)) or (switch_frames and switch_frames[-1] >= t):
    raise ValueError(f"switch frames must increase strictly inside (0, {t}), got {switch_frames}")
  if window < 2:
    raise ValueError(f"window must be at least 2 frames, got {window}")
  min_window = max(2, window // 2) if min_window is None else min_window
  if not 2 <= min_window <= window:
    raise ValueError(f"min_window must be in [2, window], got {min_window}")
  if margin < 0 or context < 1 or drift_s <= 0 or fps <= 0:
    raise ValueError(
      f"need margin >= 0, context >= 1, drift_s > 0 and fps > 0, got {margin}, {context}, {drift_s}, {fps}"
    )
  gt = gt_track = None
  if scene is not None:
    _check_scene(scene, size)
    if [g.start for g in scene.segments] != starts or [g.attrs for g in scene.segments] != attrs:
      raise ValueError("scene describes other prompts or switch frames than prompts / switch_frames")
    gt, gt_track = _render.render(scene, t), _render.simulate(scene, t)

  feat = _features(video)
  diffs = _frame_diffs(video)
  ends = [*switch_frames, t]
  windows = []
  for seg, (s, e, a) in enumerate(zip(starts, ends, attrs, strict=True)):
    lo = s + (margin if seg > 0 else 0)
    while lo < e:
      hi = min(lo + window, e)
      if hi - lo < min_window:
        break
      obs = _observe(feat, lo, hi)
      windows.append(WindowRecord(start=lo, end=hi, segment=seg, expected=a, observed=obs, correct=_score(a, obs)))
      lo = hi

  # smoothness over the steady transitions (not into a switch frame or its margin)
  seg_of = np.searchsorted(np.asarray(switch_frames, np.int64), np.arange(1, t), side="right")  # of frame t + 1
  steady = np.ones(max(t - 1, 0), bool)
  for f in switch_frames:
    steady[max(f - 1, 0) : min(f + margin, t - 1)] = False
  gt_diffs = _frame_diffs(gt) if gt is not None else None
  if gt_diffs is not None:
    expected = gt_diffs
  else:
    per_seg = np.array([_world_frame_diff(a, size) for a in attrs])
    expected = per_seg[seg_of] if t > 1 else np.zeros(0)
  steps = _wrap(np.diff(feat.centre, axis=0), size)  # [T - 1, 2]
  accel = np.linalg.norm(np.diff(steps, axis=0), axis=1)  # [T - 2]
  accel_ok = steady[1:] & steady[:-1] if t > 2 else np.zeros(0, bool)
  mean_diff = float(diffs[steady].mean()) if steady.any() else math.nan
  exp_mean = float(expected[steady].mean()) if steady.any() else math.nan
  smoothness = Smoothness(
    frame_diff=diffs,
    expected=expected,
    steady=steady,
    mean=mean_diff,
    expected_mean=exp_mean,
    excess=mean_diff - exp_mean,
    ratio=mean_diff / exp_mean if exp_mean > 1e-3 else math.nan,
    jitter=float(_median(accel[accel_ok])),
  )

  switches = tuple(
    _switch_score(
      feat,
      diffs,
      f,
      before=attrs[i],
      after=attrs[i + 1],
      gt_diffs=gt_diffs,
      gt_track=gt_track,
      margin=margin,
      context=context,
    )
    for i, f in enumerate(switch_frames)
  )

  n_d = max(1, min(int(round(drift_s * fps)), t // 2))

  def part(lo_f: int, hi_f: int) -> tuple[float, float, float]:
    q = float(1.0 - feat.artefacts[lo_f:hi_f].mean())
    sel = [w for w in windows if lo_f <= 0.5 * (w.start + w.end) < hi_f]
    acc = _accuracies(sel)["all"]
    pres = feat.present[lo_f:hi_f]
    area = _median(feat.area[lo_f:hi_f][pres]) / size**2 if pres.any() else 0.0
    return q, acc, area

  (q0, a0, ar0), (q1, a1, ar1) = part(0, n_d), part(t - n_d, t)
  drift = Drift(
    seconds=n_d / fps,
    quality_first=q0,
    quality_last=q1,
    quality_delta=q1 - q0,
    accuracy_first=a0,
    accuracy_last=a1,
    area_first=ar0,
    area_last=ar1,
  )
  return VideoScore(
    num_frames=t,
    fps=float(fps),
    windows=tuple(windows),
    accuracy=_accuracies(windows),
    smoothness=smoothness,
    drift=drift,
    switches=switches,
    quality=1.0 - feat.artefacts,
    track=feat.centre,
    present=feat.present,
  )
