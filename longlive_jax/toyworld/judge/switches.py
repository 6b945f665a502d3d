"""The world's own change (expected frame differences) and prompt switches: :func:`switch_smoothness`."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from longlive_jax.toyworld import render as _render
from longlive_jax.toyworld.grammar import COLOURS, DIRECTIONS, Attributes
from longlive_jax.toyworld.judge.constants import JUMP_TOLERANCE, SPIKE_FLOOR
from longlive_jax.toyworld.judge.features import _Features, _features, _frame_diffs
from longlive_jax.toyworld.judge.helpers import _as_attrs, _check_scene, _check_video, _median, _radius, _speed, _wrap
from longlive_jax.toyworld.judge.records import SwitchScore


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
