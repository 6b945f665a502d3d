"""A quick look at a DiT export while the recipe trains: 4 prompts, judged from pixels, and a frame strip.

  python experiments/toyworld/peek.py --dit runs/toyworld/teacher/export --teacher --out /tmp/peek.png

``--teacher``: the bidirectional teacher's guided 48-step sampling; otherwise the causal streaming engine.
The VAE is the phase-2 export (``--vae``). Prints the judge's accuracy per attribute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PROMPTS = [
  "a red circle moves right on a blue background",
  "a yellow square moves down on a purple background",
  "a white triangle stays still on a green background",
  "a green circle bounces on a white background",
]


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dit", required=True)
  ap.add_argument("--vae", default="runs/toyworld/vae/export")
  ap.add_argument("--teacher", action="store_true")
  ap.add_argument("--frames", type=int, default=21, help="latent frames")
  ap.add_argument("--out", required=True, help="the frame strip (.png)")
  ap.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (--teacher)")
  ap.add_argument("--steps", type=int, default=48, help="ODE steps (--teacher)")
  a = ap.parse_args()
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.video_io import _write_png

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  if a.teacher:
    videos, timing = ev.teacher_videos(
      dit, vae, enc, PROMPTS, latent_frames=a.frames, seed=10_000, guidance=a.guidance, num_steps=a.steps
    )
  else:
    videos, timing = ev.causal_videos(dit, vae, enc, [[p] for p in PROMPTS], latent_frames=a.frames, seed=10_000)
  acc = ev.score(videos, [[p] for p in PROMPTS])["accuracy"]
  print(" ".join(f"{k}={v:.2f}" for k, v in acc.items()), f"({timing['seconds']:.0f} s)")
  picks = np.linspace(0, videos.shape[1] - 1, 5).astype(int)
  strip = np.concatenate([np.concatenate([v[t] for t in picks], 1) for v in videos], 0)  # [4H, 5W, 3]
  _write_png(Path(a.out), strip.repeat(2, 0).repeat(2, 1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
