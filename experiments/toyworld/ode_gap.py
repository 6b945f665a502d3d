"""Does the ODE init memorise its trajectories? Its regression loss on the pairs it trained on against fresh ones.

The ODE-init stage (``configs/toyworld/ode_init.yaml``) regresses the causal student onto the teacher's guided
ODE trajectories: from the state at each of the 4 denoising timesteps it predicts the trajectory's clean end.
With a few hundred trajectories a small model can learn those noise -> video maps by heart and not the mapping
itself. This script measures that: the stage's own loss (``losses.ode_regression_loss``, every block at the
same trajectory point, no random draw) of an ode-init export on N trajectories of its training file and on N
of another file made the same way with other prompts and noise. A held-out loss well above the training loss
at the first point (pure noise -> video, what the 4-step student does first) says the stage needs more
trajectories, not more steps.

  python experiments/toyworld/ode_gap.py --export runs/toyworld/ode_init/export \
      --train runs/toyworld/data/ode_pairs.npz --fresh runs/toyworld/more_pairs/ode_pairs_b.npz \
      --out experiments/results/toyworld_ode_gap.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def point_losses(stage, params, batch: dict, *, point: int) -> float:
  """The stage's loss with every block at trajectory ``point`` (0: pure noise) of one batch."""
  import jax.numpy as jnp

  b, _, f = batch["trajectory"].shape[:3]
  idx = jnp.full((b, f), point, jnp.int32)  # [B, F]
  loss, _ = stage.loss_at(params, jnp.asarray(batch["trajectory"]), jnp.asarray(batch["cond"]), idx)
  return float(loss)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--export", required=True, help="an ode-init export folder")
  ap.add_argument("--train", required=True, help="the ode-pairs .npz it trained on")
  ap.add_argument("--fresh", required=True, help="an ode-pairs .npz of other prompts and noise")
  ap.add_argument("--num", type=int, default=96, help="trajectories from each file (default 96)")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--config", default="configs/toyworld/ode_init.yaml")
  ap.add_argument("--out", required=True)
  a = ap.parse_args()

  import jax

  from longlive_jax.toyworld.text import TextEncoder
  from longlive_jax.train.config import load_config
  from longlive_jax.train.stages.ode_init import make_stage

  cfg = load_config(a.config, [f"model.checkpoint={a.export}"])
  stage = make_stage(cfg)
  params = stage.init(jax.random.key(0)).params
  enc = TextEncoder()
  result = {"export": a.export, "num": a.num, "points": [float(t) for t in stage.step_t], "loss": {}}
  for name, path in (("train", a.train), ("fresh", a.fresh)):
    z = np.load(path)
    traj, prompts = z["trajectory"][: a.num], z["prompt"][: a.num]
    per_point = []
    for point in range(len(stage.step_t)):
      vals = []
      for i in range(0, len(traj), a.batch):
        records = [{"trajectory": traj[j], "prompt": str(prompts[j])} for j in range(i, min(i + a.batch, len(traj)))]
        batch = stage.make_batch(records, encode_text=enc)
        vals.append(point_losses(stage, params, batch, point=point) * len(records))
      per_point.append(sum(vals) / len(traj))
      print(f"{name} point {point} (t={stage.step_t[point]:.0f}): loss {per_point[-1]:.5f}", flush=True)
    result["loss"][name] = per_point
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
