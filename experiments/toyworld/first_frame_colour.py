"""How far the object's colour is from the world's, per video frame of the first block: the orange first frame.

  python experiments/toyworld/first_frame_colour.py --model shipped=longlive_jax/toyworld/default_model \\
      [--model other=PATH ...] [--num 60] --out experiments/results/toyworld_first_frame.json

Each model (a whole-model checkpoint: DiT + VAE) streams the first block (3 latents = 9 video frames) of ``--num``
seen prompts (evaluate.py's prompt set, its noise seed); the judge's per-frame features give the object's colour
(a robust mean of its core pixels) and the background's. Reported per frame: the mean RGB distance of the object
(and of the background) to the world's colour of the prompt, and the share of frames whose object colour the
judge's nearest-colour rule reads right; per prompted colour, the object's mean RGB and area at the first and last
frame. True clips of the same prompts (rendered, and round-tripped through each
model's VAE) give the floor. ``--teacher`` adds bidirectional DiTs: the first 9 frames of a 9-latent sample (48
steps, CFG 3). Frame 0 is decoded alone by the causal VAE, so an error in latent 0 shows there alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def colour_errors(videos: np.ndarray, prompts: list[str]) -> dict:
  """Per-frame colour distances of uint8 ``videos [N, T, H, W, 3]`` to the prompts' world colours."""
  from longlive_jax.toyworld import grammar
  from longlive_jax.toyworld.judge.features import _features
  from longlive_jax.toyworld.judge.helpers import _nearest

  obj_err, bg_err, right, by_colour = [], [], [], {}
  for v, p in zip(videos, prompts, strict=True):
    a = grammar.parse(p)
    f = _features(v)
    by_colour.setdefault(a.colour, []).append((f.obj[0], f.obj[-1], f.area[0], f.area[-1]))
    want_o = np.asarray(grammar.COLOURS[a.colour], np.float32)
    want_b = np.asarray(grammar.COLOURS[a.background], np.float32)
    obj_err.append(np.linalg.norm(f.obj - want_o, axis=-1))  # [T]
    bg_err.append(np.linalg.norm(f.bg - want_b, axis=-1))
    right.append([_nearest(o, exclude=a.background) == a.colour for o in f.obj])
  obj_err, bg_err, right = np.asarray(obj_err), np.asarray(bg_err), np.asarray(right, np.float64)  # [N, T] each
  return {
    "object_rgb_distance": np.nanmean(obj_err, axis=0).round(2).tolist(),
    "background_rgb_distance": np.nanmean(bg_err, axis=0).round(2).tolist(),
    "object_colour_right": right.mean(axis=0).round(3).tolist(),
    "by_colour": {  # the object's mean RGB and area (px) at the first and the last frame, per prompted colour
      c: {
        "videos": len(rows),
        "want": list(grammar.COLOURS[c]),
        "first_rgb": np.nanmean([r[0] for r in rows], axis=0).round(1).tolist(),
        "last_rgb": np.nanmean([r[1] for r in rows], axis=0).round(1).tolist(),
        "first_area": round(float(np.nanmean([r[2] for r in rows])), 1),
        "last_area": round(float(np.nanmean([r[3] for r in rows])), 1),
      }
      for c, rows in sorted(by_colour.items())
    },
  }


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", action="append", default=[], help="NAME=PATH of a whole-model checkpoint")
  ap.add_argument(
    "--teacher",
    action="append",
    default=[],
    help="NAME=PATH of a bidirectional DiT export (9 latents, 48 steps, CFG 3)",
  )
  ap.add_argument("--num", type=int, default=60)
  ap.add_argument(
    "--guidance", type=float, action="append", help="the teachers' CFG scale (repeatable: a row per scale; default 3)"
  )
  ap.add_argument("--teacher-vae", default="longlive_jax/toyworld/default_model", help="the teachers' decoder")
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  if not a.model and not a.teacher:
    ap.error("give at least one --model or --teacher")
  from evaluate import NOISE_SEED, prompt_sets

  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld import render

  models = {n: (p, None) for n, p in (m.split("=", 1) for m in a.model)}
  scales = a.guidance or [3.0]
  for n, p in (m.split("=", 1) for m in a.teacher):
    models |= {(n if len(scales) == 1 else f"{n}/cfg{g:g}"): (p, g) for g in scales}
  prompts = prompt_sets(a.num)["seen"]
  scenes = [render.Scene.from_prompts([p], seed=900_000 + i) for i, p in enumerate(prompts)]
  truth = np.stack([render.render(s, 9) for s in scenes])  # [N, 9, H, W, 3] uint8
  res = {"prompts": len(prompts), "frames": 9, "truth": colour_errors(truth, prompts), "models": {}}
  print("truth", res["truth"]["object_rgb_distance"], flush=True)
  for name, (path, guidance) in models.items():
    if guidance is not None:  # a teacher: the first 9 frames of a 9-latent clip, decoded by --teacher-vae
      dit, vae, enc = ev.load_models(path, a.teacher_vae)
      videos, _ = ev.teacher_videos(dit, vae, enc, prompts, latent_frames=9, seed=NOISE_SEED, guidance=guidance)
      videos = videos[:, :9]
    else:
      dit, vae, enc = ev.load_models(path, path)
      videos, _ = ev.causal_videos(dit, vae, enc, [[p] for p in prompts], latent_frames=3, seed=NOISE_SEED)
    row = {"path": path, "generated": colour_errors(videos, prompts)}
    if guidance is not None:
      row["guidance"] = guidance
    row["round_trip"] = colour_errors(ev.reconstruct(vae, truth), prompts)
    res["models"][name] = row
    for k in ("generated", "round_trip"):
      print(name, k, "object", row[k]["object_rgb_distance"], "right", row[k]["object_colour_right"], flush=True)
    for c, d in row["generated"]["by_colour"].items():
      print(f"  {c}: want {d['want']}, frame 0 {d['first_rgb']} (area {d['first_area']}), last {d['last_rgb']}")
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(res, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
