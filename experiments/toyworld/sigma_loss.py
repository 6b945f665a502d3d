"""The teacher's flow-matching loss at fixed noise levels on fixed training clips: progress where sampling is weak.

  python experiments/toyworld/sigma_loss.py runs/toyworld/teacher/export [more exports ...]

48 clips of the teacher's data (every 25th of ``runs/toyworld/data/latents.npz``, their captions), one fixed noise
draw, ``x = (1 - s) x0 + s noise`` at s = 0.5, 0.8, 0.9, 0.95, 0.99: the mean squared error of the predicted
velocity against ``noise - x0`` (unweighted), per export. For scale: at s = 0.99 a prediction that knows only
each clip's mean latent scores 0.215 on these clips, one that knows each frame's background latent 0.178.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

SIGMAS = (0.5, 0.8, 0.9, 0.95, 0.99)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("dits", nargs="+", help="teacher export folders")
  ap.add_argument("--data", default="runs/toyworld/data/latents.npz", help="the teacher's latents")
  ap.add_argument("--vae", default="runs/toyworld/vae_decoder/export", help="checkpoint with the VAE (loaded, unused)")
  a = ap.parse_args()

  from longlive_jax.toyworld import evaluate as ev

  with np.load(a.data) as d:
    idx = np.arange(0, len(d["prompt"]), 25)[:48]
    z, prompts = jnp.asarray(d["latents"][idx]), [str(p) for p in d["prompt"][idx]]  # [48, F, H, W, C]
  eps = jax.random.normal(jax.random.key(0), z.shape)
  out = {}
  for path in a.dits:
    dit, _, enc = ev.load_models(path, a.vae)
    ctx = jnp.asarray(enc(prompts))  # [48, L, D]
    row = {}
    for s in SIGMAS:
      losses = []
      for b in range(0, len(idx), 16):
        xt = (1 - s) * z[b : b + 16] + s * eps[b : b + 16]
        v = dit(xt, jnp.full((xt.shape[0],), 1000.0 * s), ctx[b : b + 16])
        losses.append(float(jnp.mean((v - (eps[b : b + 16] - z[b : b + 16])) ** 2)))
      row[str(s)] = round(float(np.mean(losses)), 4)
    out[path] = row
    print(path, row, flush=True)
  print(json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
