"""Does the teacher take an object's motion from the text? One denoising step on still clips, captioned with
each motion in turn.

  python experiments/toyworld/motion_text.py --dit runs/toyworld/teacher/export [--out motion_text.json]

Twelve fresh clips of still objects are noised to sigma ``s`` (the same noise for every caption) and denoised in
one unguided step, once with their own caption and once with the motion word replaced by each of the moving
motions. The estimate is decoded and the judge tracks its object; the figure is the estimate's mean velocity
(px per video frame, torus-aware) along the caption's direction. A teacher that draws motion from the text moves
the estimate by about the world's speed (``render.SPEED``, 0.75 px/frame) along it at high noise, where the
clip's own evidence is weak; one whose motion comes only from the noisy clip keeps it still under every caption.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fresh_clips  # noqa: E402
import pooling  # noqa: E402

SIGMAS = (0.97, 0.9, 0.8, 0.6)
DIRECTIONS = {"moves left": (-1.0, 0.0), "moves right": (1.0, 0.0), "moves up": (0.0, -1.0), "moves down": (0.0, 1.0)}


def mean_velocity(videos: np.ndarray, prompts: list[str]) -> np.ndarray:
  """``[N, 2]`` (x, y) px per frame: the median frame-to-frame step of the judge's track, wrapped to the torus
  (NaN where the judge sees the object in fewer than two frames)."""
  from longlive_jax.toyworld import judge

  out = np.full((len(prompts), 2), np.nan)
  for i, p in enumerate(prompts):
    track = judge.judge_video(videos[i], prompts=[p]).track  # [T, 2] (x, y), NaN where absent
    size = videos.shape[2]
    ok = ~np.isnan(track[:, 0])
    steps = np.diff(track, axis=0)[ok[1:] & ok[:-1]]  # [K, 2]
    if len(steps):
      out[i] = np.median((steps + size / 2) % size - size / 2, axis=0)
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  fresh_clips.add_model_arguments(ap)
  ap.add_argument("--out", help="also write the figures as JSON here")
  ap.add_argument("--frames", type=int, default=21, help="latent frames per clip (the first of the 21)")
  a = ap.parse_args()

  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.vae.stream import decode

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  x0, prompts = pooling.clips(enc, a.vae_encoder, "stays still", 12, 1000)
  x0 = x0[:, : a.frames]  # [N, F, H, W, C]
  eps = jax.random.normal(jax.random.key(0), x0.shape)
  rows = {}
  for s in SIGMAS:
    rows[str(s)] = {}
    for motion in ("stays still", *DIRECTIONS):
      captions = [p.replace("stays still", motion) for p in prompts]
      xt, v = fresh_clips.velocities_at(dit, x0, eps, jnp.asarray(enc(captions)), s)
      vel = mean_velocity(ev._to_uint8(decode(vae, xt - s * v)), captions)  # [N, 2]
      d = np.asarray(DIRECTIONS.get(motion, (0.0, 0.0)))
      along = vel @ d if motion in DIRECTIONS else np.linalg.norm(vel, axis=1)
      rows[str(s)][motion] = {
        "along_caption_px_per_frame": round(float(np.nanmedian(along)), 3),
        "speed_px_per_frame": round(float(np.nanmedian(np.linalg.norm(vel, axis=1))), 3),
        "clips_tracked": int(np.sum(~np.isnan(vel[:, 0]))),
      }
      print(f"sigma {s}, caption '{motion}': {rows[str(s)][motion]}", flush=True)
  if a.out:
    Path(a.out).write_text(json.dumps({"dit": a.dit, "clips": len(prompts), "rows": rows}, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
