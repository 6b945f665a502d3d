"""The toy-world VAE's reconstruction PSNR on held-out clips, against the position in a long stream, and the judge's
accuracy on its reconstructions of true clips (the ceiling of every model that decodes through it).

  python experiments/toyworld/vae_psnr.py --vae runs/toyworld/vae/export --out experiments/results/toyworld_vae.json

Clips of the held-out combinations (``grammar.HELD_OUT``, never in training), seeds disjoint from the training
clips', 30% with a prompt switch, encoded and decoded with the streaming caches carried over the whole clip. The
judge scores ``--judge`` single-prompt held-out clips of 21 latents (5 s) after the round trip, and the clips
themselves (its accuracy on truth).
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
  ap.add_argument("--judge", type=int, default=40, help="single-prompt clips the judge scores after the round trip")
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  from longlive_jax import pipeline
  from longlive_jax.toyworld.data import ClipSource
  from longlive_jax.toyworld.evaluate import reconstruct, score, vae_psnr

  src = ClipSource(num_records=a.clips, latent_frames=a.latents, split="held_out", seed=987_654, switch_prob=0.3)
  videos = np.stack([src[i]["video"] for i in range(a.clips)])
  jsrc = ClipSource(num_records=a.judge, latent_frames=21, split="held_out", seed=876_543, switch_prob=0.0)
  clips = [jsrc[i] for i in range(a.judge)]
  jvideos, scripts = np.stack([c["video"] for c in clips]), [[str(c["caption"])] for c in clips]
  truth = score(jvideos, scripts)["accuracy"]
  print("judge on true clips:", " ".join(f"{k}={v:.3f}" for k, v in truth.items()), flush=True)
  res = {"judge_on_truth": truth}
  for path in a.vae:
    vae = pipeline.load_vae(path, dtype="float32")
    r = vae_psnr(vae, videos)
    r["judge_on_reconstructions"] = score(reconstruct(vae, jvideos), scripts)["accuracy"]
    res[path] = r
    print(path, f"{r['psnr']:.2f} dB;", " ".join(f"{b['latents'][0]}:{b['psnr']:.1f}" for b in r["bins"]), flush=True)
    print("  judge on reconstructions:", " ".join(f"{k}={v:.3f}" for k, v in r["judge_on_reconstructions"].items()))
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(res, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
