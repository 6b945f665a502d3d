"""A causal student streamed with other few-step schedules, judged like the evidence table's rows.

The table's causal rows stream every block with LongLive's 4 steps ``[1000, 750, 500, 250]`` (shift 5). The
ablations found the teacher's circles need steps (4 steps: 41% of the windows, 8: 58%, 16: 68%;
``toyworld_ablations.json``, ``steps/*``), so this runs a DiT export with the schedules given (a student
trained with 8 steps, ``options.denoising_step_list``, must be streamed with its own) on the table's seen prompts
and noise, and reports the per-attribute accuracy and the cells issue 9 misses (circles, squares, triangles,
``bounces``).

  python experiments/toyworld/student_steps.py --dit runs/toyworld/self_forcing/export --frames 9 \
      --lists 1000,750,500,250 1000,875,750,625,500,375,250,125 --out /tmp/steps.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dit", required=True, help="a causal DiT export (a student stage's export)")
  ap.add_argument("--vae", default="runs/toyworld/vae/export", help="a checkpoint folder with the VAE")
  ap.add_argument("--frames", type=int, default=9, help="latent frames per video (default 9)")
  ap.add_argument("--lists", nargs="+", required=True, help="step lists, each comma-separated (e.g. 1000,750,500,250)")
  ap.add_argument("--seen", type=int, default=100, help="the evidence table's seen prompts (default 100)")
  ap.add_argument("--out", required=True)
  a = ap.parse_args()

  sys.path.insert(0, str(Path(__file__).parent))
  from evaluate import NOISE_SEED, prompt_sets
  from report import per_label

  from longlive_jax.toyworld import evaluate as ev

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  prompts = prompt_sets(a.seen)["seen"]
  result = {"dit": a.dit, "latent_frames": a.frames, "prompts": len(prompts), "noise_seed": NOISE_SEED, "rows": {}}
  for text in a.lists:
    steps = tuple(int(s) for s in text.split(","))
    settings = ev.StreamSettings(step_list=steps)
    t0 = time.perf_counter()
    videos, _ = ev.causal_videos(
      dit, vae, enc, [[p] for p in prompts], latent_frames=a.frames, seed=NOISE_SEED, settings=settings
    )
    r = ev.score(videos, [[p] for p in prompts])
    per = per_label(r)
    result["rows"][text] = {"accuracy": r["accuracy"], "per_label": per, "seconds": time.perf_counter() - t0}
    print(
      f"{len(steps)} steps",
      {k: round(100 * v, 1) for k, v in r["accuracy"].items()},
      {k: round(100 * v) for k, v in per.items()},
      flush=True,
    )
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
