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
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

STARTS = (0.3, 0.6, 0.85, 1.0)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dit", required=True, help="the teacher's export folder")
  ap.add_argument("--vae", default="runs/toyworld/vae_decoder/export", help="checkpoint with the decoding VAE")
  ap.add_argument("--vae-encoder", default="runs/toyworld/vae/export", help="checkpoint that encoded the data")
  ap.add_argument("--clips", type=int, default=8, help="fresh captioned clips (default 8)")
  ap.add_argument("--seed", type=int, default=777, help="world seed of the fresh clips (training used 1)")
  ap.add_argument("--guidance", type=float, default=3.0)
  ap.add_argument("--out", help="also write the accuracies as JSON here")
  a = ap.parse_args()

  from longlive_jax.pipeline import load_vae
  from longlive_jax.toyworld import data
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.train.ode_pairs import euler_sigmas
  from longlive_jax.vae.stream import decode

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  with tempfile.TemporaryDirectory() as tmp:  # the clips as the teacher's data is made (captions kept)
    path = data.build_latents(
      Path(tmp) / "clips.npz", vae=load_vae(a.vae_encoder), encode_text=enc, num=a.clips, latent_frames=21,
      size=64, seed=a.seed, caption_dropout=0.0,
    )  # fmt: skip
    with np.load(path) as z:
      x0, prompts = jnp.asarray(z["latents"]), [str(p) for p in z["prompt"]]  # [N, F, H, W, C], N captions
  n = len(prompts)
  cond = jnp.asarray(enc(prompts))
  ctx = jnp.concatenate([cond, jnp.broadcast_to(jnp.asarray(enc([""])), cond.shape)])  # [2N, L, D]
  sig = np.asarray(euler_sigmas(48, shift=5.0))

  @jax.jit
  def step(x, s, s_next):
    v = dit(jnp.concatenate([x, x]), jnp.full((2 * n,), 1000.0 * s), ctx)  # [2N, F, H, W, C]
    v = v[n:] + a.guidance * (v[:n] - v[n:])
    return x + (s_next - s) * v

  noise = jax.random.normal(jax.random.key(5), x0.shape)
  rows = []
  for s0 in STARTS:
    i0 = int(np.argmax(sig <= s0 + 1e-6))
    s = float(sig[i0])
    x = (1.0 - s) * x0 + s * noise
    for i in range(i0, 48):
      x = step(x, jnp.float32(sig[i]), jnp.float32(sig[i + 1]))
    acc = ev.score(ev._to_uint8(decode(vae, x)), [[p] for p in prompts])["accuracy"]
    rows.append({"start_sigma": s, "steps": 48 - i0, "accuracy": acc})
    print(f"from sigma {s:.2f} ({48 - i0} steps): " + " ".join(f"{k}={v:.2f}" for k, v in acc.items()), flush=True)
  if a.out:
    Path(a.out).write_text(json.dumps({"dit": a.dit, "clips": n, "seed": a.seed, "rows": rows}, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
