"""A quick look at a causal student (ODE init, Stage 1 or 2): N prompts per motion, judged, and a strip.

  python experiments/toyworld/student_peek.py --dit runs/toyworld/self_forcing/export [--per-motion 3]
      [--frames 21] [--strip peek.png] [--out peek.json]

The prompts are ``fresh_clips.motion_prompts`` (training-split combinations, N per motion in turn), streamed
by the engine as ``evaluate.py`` does (noise seed 10000, never used in training) and judged per motion; the
strip shows six frames of the first video of each motion. ``evaluate.py`` is the full evidence table.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fresh_clips  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--dit", required=True)
ap.add_argument("--vae", default="runs/toyworld/vae/export")
ap.add_argument("--per-motion", type=int, default=3)
ap.add_argument("--frames", type=int, default=21)
ap.add_argument("--strip")
ap.add_argument("--out")
a = ap.parse_args()

from longlive_jax.toyworld import evaluate as ev  # noqa: E402
from longlive_jax.toyworld import grammar  # noqa: E402
from longlive_jax.video_io import _write_png  # noqa: E402

dit, vae, enc = ev.load_models(a.dit, a.vae)
prompts = fresh_clips.motion_prompts(a.per_motion)
videos, timing = ev.causal_videos(dit, vae, enc, [[p] for p in prompts], latent_frames=a.frames, seed=10_000)
res = ev.score(videos, [[p] for p in prompts])
print("all:", " ".join(f"{k}={v:.2f}" for k, v in res["accuracy"].items()))
k = a.per_motion
by = {}
for i, m in enumerate(grammar.MOTIONS):
  r = ev.score(videos[i * k : (i + 1) * k], [[p] for p in prompts[i * k : (i + 1) * k]])["accuracy"]
  by[m] = r
  print(f"  {m}:", " ".join(f"{kk}={v:.2f}" for kk, v in r.items()))
if a.strip:
  T = videos.shape[1]
  idx = np.linspace(4, T - 1, 6).astype(int)
  strip = np.concatenate([np.concatenate(list(videos[i, idx]), 1) for i in range(0, len(prompts), k)], 0)
  _write_png(Path(a.strip), strip)
if a.out:
  Path(a.out).write_text(
    json.dumps({"dit": a.dit, "prompts": prompts, "accuracy": res["accuracy"], "by_motion": by}, indent=1)
  )
