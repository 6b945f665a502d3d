"""Does the teacher find the object in a noisy clip? One denoising step from true clips at high noise, judged.

  python experiments/toyworld/one_step.py --dit runs/toyworld/teacher/export [--clips 24] [--out one_step.json]

Fresh clips (an unseen world seed) are noised to sigma s with one fixed noise draw; the teacher's clean estimate
``x0 = x - s v`` (no guidance) is decoded and judged against the clip's prompt. At s = 0.9 a still object's
evidence summed over the 20 latent frames stands far above the noise, so a teacher that integrates along time
finds it; one that reads each frame alone sees noise. Sampling from pure noise decides the layout in this range
(``samplers.py``), so these figures track the failure directly, in a minute per export and without a sampler.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fresh_clips  # noqa: E402

SIGMAS = (0.95, 0.9, 0.85, 0.8, 0.7)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  fresh_clips.add_arguments(ap, clips=24)
  ap.add_argument("--out", help="also write the accuracies as JSON here")
  a = ap.parse_args()

  dit, vae, enc, x0, prompts = fresh_clips.load(a)
  ctx = jnp.asarray(enc(prompts))  # [N, L, D]
  eps = jax.random.normal(jax.random.key(0), x0.shape)
  rows = {}
  for s in SIGMAS:
    xt, v = fresh_clips.velocities_at(dit, x0, eps, ctx, s)
    acc = fresh_clips.judged(vae, xt - s * v, prompts)  # the clean estimates [N, F, H, W, C], decoded and judged
    rows[str(s)] = {k: round(float(v), 3) for k, v in acc.items()}
    print(f"sigma {s}: " + " ".join(f"{k}={v:.2f}" for k, v in acc.items()), flush=True)
  if a.out:
    Path(a.out).write_text(
      json.dumps({"dit": a.dit, "clips": len(prompts), "seed": a.seed, "rows": rows}, indent=1) + "\n"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
