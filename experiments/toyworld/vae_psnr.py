"""The toy-world VAE's reconstruction PSNR on held-out clips, against the position in a long stream.

  python experiments/toyworld/vae_psnr.py --vae runs/toyworld/vae/export --out experiments/results/toyworld_vae.json

Clips of the held-out combinations (``grammar.HELD_OUT``, never in training), seeds disjoint from the training
clips', 30% with a prompt switch, encoded and decoded with the streaming caches carried over the whole clip.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--vae", action="append", required=True, help="checkpoint with a vae component (repeatable)")
  ap.add_argument("--clips", type=int, default=16)
  ap.add_argument("--latents", type=int, default=61, help="latents per clip (61 = 241 frames, 15 s)")
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  from longlive_jax import pipeline
  from longlive_jax.toyworld.data import ClipSource
  from longlive_jax.toyworld.evaluate import vae_psnr

  src = ClipSource(num_records=a.clips, latent_frames=a.latents, split="held_out", seed=987_654, switch_prob=0.3)
  videos = np.stack([src[i]["video"] for i in range(a.clips)])
  res = {}
  for path in a.vae:
    r = vae_psnr(pipeline.load_vae(path, dtype="float32"), videos)
    res[path] = r
    print(path, f"{r['psnr']:.2f} dB;", " ".join(f"{b['latents'][0]}:{b['psnr']:.1f}" for b in r["bins"]), flush=True)
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(res, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
