"""How well can any model's shapes score through the VAE? The judge's shape moments on true and round-tripped clips.

  python experiments/toyworld/shape_ceiling.py [--vae runs/toyworld/vae/export] [--clips 48] [--out F.json]

Rendered clips (a third each of circles, squares and triangles, other attributes drawn from the training split,
unseen seeds) are encoded and decoded by ``--vae`` (the streaming path that generation uses). For each true shape
the script reports the percentiles (0, 25, 50, 75, 100) of the per-clip median relative moments the judge
classifies by (``|E z^3|`` over the triangle's, ``|E z^4|`` over the square's; a window is a triangle / square at
or above the judge's thresholds, see ``longlive_jax.toyworld.judge``), on the truth and on the round trips, and the judge's accuracy on the
round trips: a ceiling for every generator that decodes through this VAE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle")


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--vae", default="runs/toyworld/vae/export", help="checkpoint with the VAE")
  ap.add_argument("--clips", type=int, default=48, help="rendered clips (default 48)")
  ap.add_argument("--seed", type=int, default=4242, help="attribute draws; clip i uses world seed 10000 + i")
  ap.add_argument("--out", help="also write the figures as JSON here")
  a = ap.parse_args()

  from longlive_jax.pipeline import load_vae
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld import grammar, render
  from longlive_jax.toyworld.judge.constants import SQUARE_MOMENT, TRIANGLE_MOMENT
  from longlive_jax.toyworld.judge.features import _features

  rng = np.random.default_rng(a.seed)
  attrs = [grammar.sample_attributes(rng).replace(shape=SHAPES[i % 3]) for i in range(a.clips)]
  videos = np.stack([render.render(render.Scene.from_prompts([x], seed=10000 + i), 81) for i, x in enumerate(attrs)])
  recon = ev.reconstruct(load_vae(a.vae), videos)  # [N, T, H, W, 3]

  from longlive_jax.toyworld.judge.constants import SQUARE_THRESHOLD, TRIANGLE_THRESHOLD

  thresholds = {"triangle": TRIANGLE_THRESHOLD, "square": SQUARE_THRESHOLD}
  out = {"vae": a.vae, "clips": a.clips, "seed": a.seed, "thresholds": thresholds, "relative_moments": {}}
  for name, vids in (("truth", videos), ("round_trip", recon)):
    rows = {}
    for shape in SHAPES:
      feats = [_features(v) for v, x in zip(vids, attrs, strict=True) if x.shape == shape]
      tri = [float(np.nanmedian(f.tri)) / TRIANGLE_MOMENT for f in feats]
      sq = [float(np.nanmedian(f.sq)) / SQUARE_MOMENT for f in feats]
      pct = (0, 25, 50, 75, 100)
      rows[shape] = {
        "triangle_moment": [round(float(p), 3) for p in np.percentile(tri, pct)],
        "square_moment": [round(float(p), 3) for p in np.percentile(sq, pct)],
      }
      print(f"{name:10s} {shape:8s} triangle {rows[shape]['triangle_moment']}  square {rows[shape]['square_moment']}")
    out["relative_moments"][name] = rows
  acc = ev.score(recon, [[x] for x in attrs])["accuracy"]
  out["judge_on_round_trips"] = {k: round(float(v), 3) for k, v in acc.items()}
  print("judge on round trips:", out["judge_on_round_trips"])
  if a.out:
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
