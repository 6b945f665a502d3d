"""experiments/toyworld/bounce_tracks.py's summary on the world's own videos: a bouncing object keeps the world's
speed and covers the box between the walls; a still one covers nothing (the figures the README quotes for the
shipped model are these numbers on its videos)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "toyworld"))
import bounce_tracks  # noqa: E402

from longlive_jax.toyworld.render import Scene, render  # noqa: E402


def _videos(prompt: str, n: int = 2, frames: int = 161) -> tuple[np.ndarray, list[str], float]:
  scenes = [Scene.from_prompts([prompt], seed=100 + i) for i in range(n)]
  return np.stack([render(s, frames) for s in scenes]), [prompt] * n, scenes[0].margin


def test_bouncing_world_keeps_speed_and_covers_the_box():
  videos, prompts, margin = _videos("a red circle bounces on a blue background")
  r = bounce_tracks.summarise(videos, prompts, size=64, margin=margin)
  assert len(r["speed_per_second"]) == 10
  np.testing.assert_allclose(r["speed_per_second"], 0.75, atol=0.03)
  assert r["second_half_span"] > 20.0  # the box between the walls is 34 px wide
  assert r["bounces_windows"] == 1.0
  assert min(r["wall_distance_per_second"]) >= -1.0  # the centre stays inside the reflecting walls


def test_still_object_covers_nothing():
  videos, prompts, margin = _videos("a red circle stays still on a blue background")
  r = bounce_tracks.summarise(videos, prompts, size=64, margin=margin)
  assert max(r["speed_per_second"]) < 0.05
  assert r["second_half_span"] < 1.0
  assert r["bounces_windows"] == 0.0


def test_direction_agreement_sees_a_pull_towards_plus_plus():
  """A track that follows the world's agrees with it (cosine 1, no pull); one that always heads (+, +) agrees on
  clips entering along (+, +) and is pulled there on the others."""
  import dataclasses

  from longlive_jax.toyworld.render import simulate

  base = Scene.from_prompts(["a red circle bounces on a blue background"], seed=7)
  scenes = [dataclasses.replace(base, seed=100 + i, lead_in=lead) for i, lead in enumerate((0, 50, 90, 0, 70, 110))]
  world = {"tracks": np.stack([simulate(s, 33)[::4] for s in scenes])}  # [N, 9, 2] every 4th frame
  first = np.asarray([np.all(np.diff(simulate(s, 2), axis=0) > 0) for s in scenes])
  assert first.any() and not first.all()
  same = bounce_tracks.direction_agreement(world, world, first)
  for v in same.values():
    assert v["cosine"] > 0.99 and abs(v["pull_plus_plus"]) < 1e-9
  plus = {"tracks": world["tracks"][:, :1] + 0.53 * 4 * np.arange(9)[None, :, None]}  # always (+, +), world speed
  r = bounce_tracks.direction_agreement(plus, world, first)
  assert r["enter_other"]["pull_plus_plus"] > 0.3 and r["enter_other"]["cosine"] < 0.5
  assert r["enter_plus_plus"]["cosine"] > r["enter_other"]["cosine"]
