"""Has the teacher learnt a caption's mean clip? Its one-step estimate from pure noise, against the true one.

  python experiments/toyworld/mean_clip.py --dit runs/toyworld/teacher/export [--out mean_clip.json --png F.png]

At sigma = 1 the flow-matching optimum is ``x0_hat = x - v = E[x0 | caption]``: the average of the caption's
training clips. With half of the clips starting near the centre (``latents --centre-fraction 0.5``) that average
holds a faint object at the centre of frame 0, moving along the caption's motion. For one prompt per motion the
script decodes the teacher's estimate (unguided, 4 noise draws averaged) and the true mean (64 rendered clips
of the caption, made as the teacher's data is), and reports, per latent frame, how far the estimate's pixel at
the true mean's path departs from the background, as a fraction of the true mean's departure there (1: the
mean is learnt; 0: the estimate is background only). A sampler from noise follows this estimate first.
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


def true_mean(prompt: str, *, num: int, seed: int) -> np.ndarray:
  """float ``[81, 64, 64, 3]`` in [0, 255]: the average of ``num`` rendered clips of ``prompt`` (half centred)."""
  from longlive_jax.toyworld import data
  from longlive_jax.toyworld.render import Scene, render

  acc = np.zeros((81, 64, 64, 3))
  for i in range(num):
    spread = data.CENTRE_SPREAD if i % 2 == 0 else None
    scene = Scene.from_prompts([prompt], seed=seed * 1000 + i, size=64)
    acc += render(Scene(seed=scene.seed, segments=scene.segments, size=64, start_spread=spread), 81)
  return acc / num


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  fresh_clips.add_model_arguments(ap)
  ap.add_argument("--truth", type=int, default=64, help="rendered clips per caption for the true mean")
  ap.add_argument("--out", help="also write the figures as JSON here")
  ap.add_argument("--png", help="also write estimate (top) over truth (bottom) per prompt, frames 0/20/40/60/80")
  a = ap.parse_args()
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.vae.stream import decode

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  prompts = fresh_clips.motion_prompts(1)
  ctx = jnp.asarray(enc(prompts))
  draws = 4
  est = 0.0
  for d in range(draws):
    x = jax.random.normal(jax.random.key(d), (len(prompts), 21, 16, 16, dit.cfg.in_dim))
    v = dit(x, jnp.full((len(prompts),), 1000.0), ctx)
    est = est + (x - v) / draws  # [N, 21, 16, 16, C]: x0_hat averaged over draws
  pix = (np.clip(np.asarray(decode(vae, est)), -1, 1) + 1) * 127.5  # [N, 81, 64, 64, 3]
  rows, tiles = {}, []
  for p, e in zip(prompts, pix, strict=True):
    t = true_mean(p, num=a.truth, seed=5)
    bg = np.median(t.reshape(81, -1, 3), axis=1)[:, None, None]  # [81, 1, 1, 3] the background colour
    dev_t = np.linalg.norm(t - bg, axis=-1)  # [81, 64, 64]
    dev_e = np.linalg.norm(e - bg, axis=-1)
    path = dev_t > 0.5 * dev_t.max(axis=(1, 2), keepdims=True)  # the true mean's object region per frame
    ratio = (dev_e * path).sum(axis=(1, 2)) / np.maximum((dev_t * path).sum(axis=(1, 2)), 1e-6)  # [81]
    rows[p] = {"frames_0_20_40_60_80": [round(float(ratio[f]), 3) for f in (0, 20, 40, 60, 80)]}
    rows[p]["mean"] = round(float(ratio.mean()), 3)
    print(f"{p}: learnt fraction of the mean's object {rows[p]['mean']:.2f} (frames 0/20/40/60/80: "
          f"{rows[p]['frames_0_20_40_60_80']})", flush=True)  # fmt: skip
    sel = [0, 20, 40, 60, 80]
    tiles.append(np.concatenate([np.concatenate(list(e[sel]), axis=1), np.concatenate(list(t[sel]), axis=1)]))
  if a.out:
    Path(a.out).write_text(json.dumps({"dit": a.dit, "draws": draws, "truth_clips": a.truth, "rows": rows}, indent=1))
  if a.png:
    from longlive_jax.video_io import _write_png

    _write_png(Path(a.png), np.concatenate(tiles).round().astype(np.uint8))
  return 0


if __name__ == "__main__":
  sys.exit(main())
