"""Judging a whole video against its prompts: :func:`judge_video` (windows, smoothness, switches, drift)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from longlive_jax.toyworld import render as _render
from longlive_jax.toyworld.grammar import Attributes
from longlive_jax.toyworld.judge.constants import FPS
from longlive_jax.toyworld.judge.features import _features, _frame_diffs
from longlive_jax.toyworld.judge.helpers import _as_attrs, _check_scene, _check_video, _median, _wrap
from longlive_jax.toyworld.judge.records import Drift, Smoothness, VideoScore, WindowRecord, _accuracies
from longlive_jax.toyworld.judge.switches import _switch_score, _world_frame_diff
from longlive_jax.toyworld.judge.window import _observe, _score


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
