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

import jax
import jax.numpy as jnp
import numpy as np

SIGMAS = (0.5, 0.8, 0.9, 0.95, 0.99)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("dits", nargs="+", help="teacher export folders")
  ap.add_argument("--data", default="runs/toyworld/data/latents.npz", help="the teacher's latents")
  ap.add_argument("--vae", default="runs/toyworld/vae_decoder/export", help="checkpoint with the VAE (loaded, unused)")
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
    sets["fresh"] = fresh_clips(a, enc)
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
    losses = []
    for b in range(0, len(x0), 16):
      xt = (1 - s) * x0[b : b + 16] + s * eps[b : b + 16]
      v = dit(xt, jnp.full((xt.shape[0],), 1000.0 * s), ctx[b : b + 16])
      losses.append(float(jnp.mean((v - (eps[b : b + 16] - x0[b : b + 16])) ** 2)) * len(xt))
    row[str(s)] = round(float(np.sum(losses) / len(x0)), 4)
  return row


def fresh_clips(a: argparse.Namespace, enc) -> tuple[jax.Array, list[str]]:
  """``a.fresh`` clips of world seed 777 made as the teacher's data is made (no caption dropped)."""
  import tempfile
  from pathlib import Path

  from longlive_jax.pipeline import load_vae
  from longlive_jax.toyworld import data

  with tempfile.TemporaryDirectory() as tmp:
    path = data.build_latents(
      Path(tmp) / "clips.npz", vae=load_vae(a.vae_encoder), encode_text=enc, num=a.fresh, latent_frames=21,
      size=64, seed=777, caption_dropout=0.0,
    )  # fmt: skip
    with np.load(path) as d:
      return jnp.asarray(d["latents"]), [str(p) for p in d["prompt"]]


if __name__ == "__main__":
  sys.exit(main())
