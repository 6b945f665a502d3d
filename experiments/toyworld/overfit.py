"""Can the teacher memorise a handful of clips, motion included? A pipeline check below the scale question.

  python experiments/toyworld/overfit.py subset --data runs/toyworld/data/latents_centred.npz --out D/data.npz
  longlive-jax train configs/toyworld/teacher.yaml run_dir=D data.source=D/data.npz ...
  python experiments/toyworld/overfit.py check --dit D/export --data D/data.npz --vae runs/toyworld/vae/export

``subset`` keeps the first clip of each motion (and two more): 8 captioned clips. ``check`` asks the trained
teacher for each caption's clip from pure noise two ways: the one-step estimate at sigma 1 (for 8 clips with 8
captions it should become the clip itself: relative error 0; predicting the 8 clips' mean scores ~1), and a
48-step ODE sample (shift 5, no guidance), decoded and judged against its caption. If a network that has seen
each clip hundreds of times cannot draw it from noise, the fault is in the pipeline, not in the data's size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def subset(a) -> int:
  from longlive_jax.toyworld import grammar

  with np.load(a.data) as z:
    prompts = [str(p) for p in z["prompt"]]
    picked, seen = [], set()  # each motion's first clip, then every clip once all motions are in
    for i, p in enumerate(prompts):
      motion = grammar.parse(p).motion if p else None
      if motion is not None and (motion not in seen or len(seen) == len(grammar.MOTIONS)):
        seen.add(motion)
        picked.append(i)
      if len(picked) == a.num:
        break
    np.savez(a.out, **{k: z[k][picked] for k in z.files})
  print("\n".join(prompts[i] for i in picked))
  return 0


def check(a) -> int:
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.train.ode_pairs import euler_sigmas
  from longlive_jax.vae.stream import decode

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  with np.load(a.data) as z:
    x0 = jnp.asarray(z["latents"])  # [N, F, H, W, C]
    prompts = [str(p) for p in z["prompt"]]
  ctx = jnp.asarray(enc(prompts))  # [N, L, D]
  n = len(prompts)
  fwd = jax.jit(lambda x, s: dit(x, jnp.full((n,), 1000.0 * s), ctx))
  spread = jnp.sum((x0 - x0.mean(0)) ** 2, axis=(1, 2, 3, 4))  # [N]
  est = []
  for k in range(a.draws):
    eps = jax.random.normal(jax.random.key(k), x0.shape)
    est.append(eps - fwd(eps, jnp.float32(1.0)))  # x0 = x_t - sigma v at sigma 1
  est = jnp.mean(jnp.stack(est), 0)  # [N, F, H, W, C]
  rel = np.asarray(jnp.sum((est - x0) ** 2, axis=(1, 2, 3, 4)) / spread)
  sig = np.asarray(euler_sigmas(48, shift=5.0))
  x = jax.random.normal(jax.random.key(99), x0.shape)
  for i in range(48):
    x = x + float(sig[i + 1] - sig[i]) * fwd(x, jnp.float32(sig[i]))
  sample_rel = np.asarray(jnp.sum((x - x0) ** 2, axis=(1, 2, 3, 4)) / spread)
  videos = ev._to_uint8(decode(vae, x))
  judged = ev.score(videos, [[p] for p in prompts])
  for p, r, s in zip(prompts, rel, sample_rel, strict=True):
    print(f"{r:6.3f} {s:6.3f}  {p}")
  print("accuracy", judged["accuracy"])
  if a.out:
    Path(a.out).write_text(json.dumps({"dit": a.dit, "prompts": prompts, "one_step_rel_error": rel.tolist(),
                                       "sample_rel_error": sample_rel.tolist(), "accuracy": judged["accuracy"]},
                                      indent=1) + "\n")  # fmt: skip
  return 0


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = ap.add_subparsers(dest="cmd", required=True)
  s = sub.add_parser("subset")
  s.add_argument("--data", required=True)
  s.add_argument("--out", required=True)
  s.add_argument("--num", type=int, default=8)
  c = sub.add_parser("check")
  c.add_argument("--dit", required=True)
  c.add_argument("--data", required=True)
  c.add_argument("--vae", default="runs/toyworld/vae/export")
  c.add_argument("--draws", type=int, default=4)
  c.add_argument("--out")
  a = ap.parse_args()
  return subset(a) if a.cmd == "subset" else check(a)


if __name__ == "__main__":
  sys.exit(main())
