"""Where does the bidirectional teacher lose the scene? Judge samples that start from true clips part-way down.

  python experiments/toyworld/noise_levels.py --dit runs/toyworld/teacher/export [--clips 8] [--out levels.json]

Fresh clips of the world (rendered with an unseen seed and encoded by the VAE of ``--vae-encoder``) are noised
to ``sigma0`` (``x = (1 - s) x0 + s noise``, the flow-matching path), then the rest of the teacher's sampling
grid (48 Euler steps at shift 5, CFG 3: the same grid as ``ode-pairs`` and ``peek.py``) runs from the grid point
at or below ``sigma0``; the decoded videos are judged against their own prompts. ``sigma0 = 1`` is ordinary
sampling from noise. Where accuracy stays high from a start ``s`` but not from a higher one, the teacher's
weakness lies above ``s``: training draws belong there (``options.timestep_shift``).
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

STARTS = (0.3, 0.6, 0.85, 1.0)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  fresh_clips.add_arguments(ap, clips=8)
  ap.add_argument("--guidance", type=float, default=3.0)
  ap.add_argument("--out", help="also write the accuracies as JSON here")
  a = ap.parse_args()

  from longlive_jax.train.ode_pairs import euler_sigmas

  dit, vae, enc, x0, prompts = fresh_clips.load(a)
  velocity = fresh_clips.guided_velocity(dit, enc, prompts)
  sig = np.asarray(euler_sigmas(48, shift=5.0))

  @jax.jit
  def step(x, s, s_next):
    return x + (s_next - s) * velocity(x, s, a.guidance)

  noise = jax.random.normal(jax.random.key(5), x0.shape)
  rows = []
  for s0 in STARTS:
    i0 = int(np.argmax(sig <= s0 + 1e-6))
    s = float(sig[i0])
    x = (1.0 - s) * x0 + s * noise
    for i in range(i0, 48):
      x = step(x, jnp.float32(sig[i]), jnp.float32(sig[i + 1]))
    acc = fresh_clips.judged(vae, x, prompts)
    rows.append({"start_sigma": s, "steps": 48 - i0, "accuracy": acc})
    print(f"from sigma {s:.2f} ({48 - i0} steps): " + " ".join(f"{k}={v:.2f}" for k, v in acc.items()), flush=True)
  if a.out:
    Path(a.out).write_text(
      json.dumps({"dit": a.dit, "clips": len(prompts), "seed": a.seed, "rows": rows}, indent=1) + "\n"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
