"""The README's strip: frames of a video with prompt switches from the shipped model, above the world's own
ground truth for the same prompts (PNG under docs/).

  python experiments/toyworld/make_strip.py --out docs/toyworld_strip.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PROMPTS = [
  "a red circle moves right on a blue background",
  "a yellow circle moves down on a blue background",
  "a yellow triangle bounces on a purple background",
]
SWITCHES = [12, 24]  # latent frames


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--checkpoint", help="whole-model checkpoint (default: the shipped toy-world model)")
  ap.add_argument("--frames", type=int, default=36, help="latent frames")
  ap.add_argument("--every", type=int, default=8, help="keep every n-th video frame")
  ap.add_argument("--scale", type=int, default=2, help="pixel upscaling of the strip")
  ap.add_argument("--seed", type=int, default=3)
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld import judge
  from longlive_jax.toyworld.model import default_checkpoint
  from longlive_jax.toyworld.render import Scene, latent_to_video_frame, render
  from longlive_jax.video_io import _write_png

  ckpt = a.checkpoint or str(default_checkpoint())
  dit, vae, enc = ev.load_models(ckpt, ckpt)
  settings = ev.checkpoint_settings(ckpt)  # as `interactive` streams it (its RoPE horizon included)
  video, _ = ev.causal_videos(
    dit, vae, enc, [PROMPTS], latent_frames=a.frames, switch_frames=SWITCHES, seed=a.seed, settings=settings
  )
  video = video[0]
  vf = [latent_to_video_frame(s) for s in SWITCHES]
  truth = render(Scene.from_prompts(PROMPTS, seed=a.seed, switch_frames=vf), len(video))
  idx = list(range(0, len(video), a.every))
  gap = np.full((64, 2, 3), 255, np.uint8)

  def row(v):
    return np.concatenate([x for i in idx for x in (v[i], gap)], axis=1)

  strip = np.concatenate([row(video), np.full((4, row(video).shape[1], 3), 255, np.uint8), row(truth)], axis=0)
  strip = np.kron(strip, np.ones((a.scale, a.scale, 1), np.uint8))
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  _write_png(Path(a.out), strip)
  score = judge.judge_video(video, prompts=PROMPTS, switch_frames=vf)
  print(f"wrote {a.out}: frames {idx} (switches at video frames {vf}); judge: {score.accuracy}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
