"""The judge's score records (:class:`Observation`, :class:`WindowRecord`, :class:`Smoothness`,
:class:`SwitchScore`, :class:`Drift`, :class:`VideoScore`) and the accuracies of judged windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from longlive_jax.toyworld.grammar import Attributes
from longlive_jax.toyworld.judge.constants import ATTRIBUTES


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


def _accuracies(windows: Sequence[WindowRecord]) -> dict[str, float]:
  out = {}
  for name in (*ATTRIBUTES, "all"):
    out[name] = float(np.mean([w.correct[name] for w in windows])) if windows else math.nan
  out["present"] = float(np.mean([w.observed.present for w in windows])) if windows else math.nan
  return out
