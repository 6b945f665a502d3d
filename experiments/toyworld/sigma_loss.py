"""The teacher's flow-matching loss at fixed noise levels on fixed training clips: progress where sampling is weak.

  python experiments/toyworld/sigma_loss.py runs/toyworld/teacher/export [more exports ...]

48 clips of the teacher's data (every 25th of ``runs/toyworld/data/latents.npz``, their captions), one fixed noise
draw, ``x = (1 - s) x0 + s noise`` at s = 0.5, 0.8, 0.9, 0.95, 0.99: the mean squared error of the predicted
velocity against ``noise - x0`` (unweighted), per export. For scale: at s = 0.99 a prediction that knows only
each clip's mean latent scores 0.215 on these clips, one that knows each frame's background latent 0.178.
``--fresh N`` adds a row on N clips the teacher never saw (world seed 777, encoded by the data's VAE): a gap
between the two rows is memorisation of the training clips.
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

SIGMAS = (0.5, 0.8, 0.9, 0.95, 0.99)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("dits", nargs="+", help="teacher export folders")
  ap.add_argument("--data", default="runs/toyworld/data/latents.npz", help="the teacher's latents")
  ap.add_argument("--vae", default="runs/toyworld/vae/export", help="checkpoint with the VAE (loaded, unused)")
  ap.add_argument("--vae-encoder", default="runs/toyworld/vae/export", help="checkpoint that encoded the data")
  ap.add_argument("--fresh", type=int, default=0, help="also score this many clips unseen in training")
  a = ap.parse_args()

  from longlive_jax.toyworld import evaluate as ev

  with np.load(a.data) as d:
    idx = np.arange(0, len(d["prompt"]), 25)[:48]
    z, prompts = jnp.asarray(d["latents"][idx]), [str(p) for p in d["prompt"][idx]]  # [48, F, H, W, C]
  sets = {"train": (z, prompts)}
  if a.fresh:
    _, _, enc = ev.load_models(a.dits[0], a.vae)
    sets["fresh"] = fresh_clips.encode_clips(vae_encoder=a.vae_encoder, encode_text=enc, num=a.fresh, seed=777)
  out = {}
  for path in a.dits:
    dit, _, enc = ev.load_models(path, a.vae)
    for name, (x0, caps) in sets.items():
      row = sigma_row(dit, x0, jnp.asarray(enc(caps)))
      out[path if name == "train" else f"{path} ({name})"] = row
      print(path, name, row, flush=True)
  print(json.dumps(out))
  return 0


def sigma_row(dit, x0, ctx) -> dict[str, float]:
  """The unweighted loss at each of SIGMAS on clips ``x0 [N, F, H, W, C]`` with captions ``ctx [N, L, D]``."""
  eps = jax.random.normal(jax.random.key(0), x0.shape)
  row = {}
  for s in SIGMAS:
    _, v = fresh_clips.velocities_at(dit, x0, eps, ctx, s, batch=16)
    row[str(s)] = round(float(jnp.mean((v - (eps - x0)) ** 2)), 4)
  return row


if __name__ == "__main__":
  sys.exit(main())
