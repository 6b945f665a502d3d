"""Per-window judging: shape and motion classification, :func:`judge_window` and scoring against a prompt."""

from __future__ import annotations

import numpy as np

from longlive_jax.toyworld.grammar import COLOURS, Attributes
from longlive_jax.toyworld.judge.constants import (
  _LAG,
  ATTRIBUTES,
  BOUNCE_COMPONENT,
  BOUNCE_RATIO,
  MIN_QUALITY,
  SQUARE_MOMENT,
  SQUARE_THRESHOLD,
  STILL_SPEED,
  TRIANGLE_MOMENT,
  TRIANGLE_THRESHOLD,
)
from longlive_jax.toyworld.judge.features import _Features, _features
from longlive_jax.toyworld.judge.helpers import _check_video, _median, _nearest, _speed, _wrap
from longlive_jax.toyworld.judge.records import Observation


def _classify_shape(triangularity: float, squareness: float) -> str:
  """Triangle / square by the larger relative moment over its threshold if one reaches its threshold
  (:data:`TRIANGLE_THRESHOLD`, :data:`SQUARE_THRESHOLD`), else circle (also for NaN)."""
  tri, sq = triangularity / TRIANGLE_THRESHOLD, squareness / SQUARE_THRESHOLD
  if not max(tri, sq) >= 1.0:
    return "circle"
  return "triangle" if tri >= sq else "square"


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
  correct["all"] = all(correct.values()) and obs.quality >= MIN_QUALITY  # right, and not buried in noise
  return correct
