"""Is the teacher's failure from pure noise a sampler problem? The same clips sampled several ways, judged.

  python experiments/toyworld/samplers.py --dit runs/toyworld/teacher/export [--clips 12] [--out samplers.json]

Prompts and noise are those of ``noise_levels.py`` (fresh clips of an unseen world seed, their captions); each
variant samples from pure noise with 48 steps and the decoded videos are judged against their prompts. Variants
(``--variants``, comma-separated ``kind:guidance:shift:guidance_below:eta``):

  * ``ode:3:5:1:0``: the teacher's grid as used by ``ode-pairs`` and ``peek.py`` (Euler, CFG 3, shift 5);
  * ``ode:1:5:1:0``: no guidance;
  * ``ode:3:5:0.8:0``: guidance only where sigma <= 0.8 (a guidance interval: CFG at high noise can spread
    the object's colour over the frame);
  * ``ode:3:10:1:0``: a shift-10 grid (more of the 48 steps above sigma 0.85, where the layout is decided);
  * ``sde:3:5:1:0.5``: stochastic: after each step a fraction ``eta`` of the implied noise is replaced by fresh
    noise (errors of early steps can be corrected).

If every variant fails alike, the weakness is the network's, not the sampler's.
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

DEFAULT_VARIANTS = "ode:3:5:1:0,ode:1:5:1:0,ode:3:5:0.8:0,ode:3:10:1:0,sde:3:5:1:0.5"
STEPS = 48


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dit", required=True, help="the teacher's export folder")
  ap.add_argument("--vae", default="runs/toyworld/vae_decoder/export", help="checkpoint with the decoding VAE")
  ap.add_argument("--vae-encoder", default="runs/toyworld/vae/export", help="checkpoint that encoded the data")
  ap.add_argument("--clips", type=int, default=12, help="fresh captioned clips (default 12)")
  ap.add_argument("--seed", type=int, default=777, help="world seed of the fresh clips (training used 1)")
  ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="kind:guidance:shift:guidance_below:eta,...")
  ap.add_argument("--strips", help="also write one PNG strip per variant into this folder")
  ap.add_argument("--out", help="also write the accuracies as JSON here")
  a = ap.parse_args()

  from longlive_jax.pipeline import load_vae
  from longlive_jax.toyworld import data
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.train.ode_pairs import euler_sigmas
  from longlive_jax.vae.stream import decode
  from longlive_jax.video_io import _write_png

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  with tempfile.TemporaryDirectory() as tmp:  # the prompts of clips made as the teacher's data is made
    path = data.build_latents(
      Path(tmp) / "clips.npz", vae=load_vae(a.vae_encoder), encode_text=enc, num=a.clips, latent_frames=21,
      size=64, seed=a.seed, caption_dropout=0.0,
    )  # fmt: skip
    with np.load(path) as z:
      shape, prompts = z["latents"].shape, [str(p) for p in z["prompt"]]  # [N, F, H, W, C], N captions
  n = len(prompts)
  cond = jnp.asarray(enc(prompts))
  ctx = jnp.concatenate([cond, jnp.broadcast_to(jnp.asarray(enc([""])), cond.shape)])  # [2N, L, D]

  @jax.jit
  def velocity(x, s, g):
    v = dit(jnp.concatenate([x, x]), jnp.full((2 * n,), 1000.0 * s), ctx)  # [2N, F, H, W, C]
    return v[n:] + g * (v[:n] - v[n:])

  rows = []
  for variant in a.variants.split(","):
    kind, g, shift, below, eta = variant.split(":")
    g, shift, below, eta = float(g), float(shift), float(below), float(eta)
    sig = np.asarray(euler_sigmas(STEPS, shift=shift))
    key = jax.random.key(5)
    x = jax.random.normal(key, shape)
    for i in range(STEPS):
      s, s_next = float(sig[i]), float(sig[i + 1])
      v = velocity(x, jnp.float32(s), jnp.float32(g if s <= below else 1.0))
      if kind == "sde" and s_next > 0:
        x0 = x - s * v  # the step's clean estimate and the noise it implies
        eps = (x - (1.0 - s) * x0) / s
        key, k = jax.random.split(key)
        x = (1.0 - s_next) * x0 + s_next * (np.sqrt(1.0 - eta) * eps + np.sqrt(eta) * jax.random.normal(k, x.shape))
      else:
        x = x + (s_next - s) * v
    videos = ev._to_uint8(decode(vae, x))  # [N, T, H, W, 3]
    acc = ev.score(videos, [[p] for p in prompts])["accuracy"]
    rows.append({"variant": variant, "accuracy": acc})
    print(f"{variant}: " + " ".join(f"{k}={v:.2f}" for k, v in acc.items()), flush=True)
    if a.strips:
      Path(a.strips).mkdir(parents=True, exist_ok=True)
      strip = np.concatenate([np.concatenate(list(videos[i, 8:80:16]), 1) for i in range(min(n, 4))], 0)
      _write_png(Path(a.strips) / f"{variant.replace(':', '_')}.png", strip)
  if a.out:
    Path(a.out).write_text(json.dumps({"dit": a.dit, "clips": n, "seed": a.seed, "rows": rows}, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
