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
    noise (errors of early steps can be corrected);
  * an optional sixth field ``rho`` starts from noise correlated along latent time (an AR(1) chain with lag-1
    correlation ``rho`` and unit variance per frame), e.g. ``ode:3:5:1:0:0.4``: ``ode_cycle.py`` found that
    inverting true clips through the teacher's ODE gives noise with lag-1 correlation 0.41, so a teacher that
    expects such a start would turn i.i.d. noise into flicker.

If every variant fails alike, the weakness is the network's, not the sampler's.

``--by-motion N`` replaces the clips' prompts by N prompts per motion (colour, shape and background drawn from the
training split, seed 3) and also reports the accuracy per motion: a sampler whose objects flicker fails even
"stays still".
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

DEFAULT_VARIANTS = "ode:3:5:1:0,ode:1:5:1:0,ode:3:5:0.8:0,ode:3:10:1:0,sde:3:5:1:0.5"
STEPS = 48


def correlated_noise(key: jax.Array, shape: tuple, rho: float) -> jax.Array:
  """Unit-variance noise [N, T, ...] whose frames form an AR(1) chain along T with lag-1 correlation rho."""
  z = np.asarray(jax.random.normal(key, shape))
  out = z.copy()
  for t in range(1, shape[1]):
    out[:, t] = rho * out[:, t - 1] + np.sqrt(1.0 - rho * rho) * z[:, t]
  return jnp.asarray(out)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  fresh_clips.add_arguments(ap, clips=12)
  ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="kind:guidance:shift:guidance_below:eta,...")
  ap.add_argument("--strips", help="also write one PNG strip per variant into this folder")
  ap.add_argument("--out", help="also write the accuracies as JSON here")
  ap.add_argument("--by-motion", type=int, default=0, help="sample N prompts per motion instead of the clips'")
  ap.add_argument("--frames", type=int, default=21, help="latent frames per sample (with --by-motion)")
  a = ap.parse_args()

  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld import grammar, render
  from longlive_jax.train.ode_pairs import euler_sigmas
  from longlive_jax.vae.stream import decode
  from longlive_jax.video_io import _write_png

  if a.by_motion:
    dit, vae, enc = ev.load_models(a.dit, a.vae)
    prompts = fresh_clips.motion_prompts(a.by_motion)
    shape = (len(prompts), a.frames, render.LATENT_SIZE, render.LATENT_SIZE, dit.cfg.out_dim)
  else:
    dit, vae, enc, x0, prompts = fresh_clips.load(a)  # the clips' prompts and shape
    shape = x0.shape
  n = len(prompts)
  velocity = fresh_clips.guided_velocity(dit, enc, prompts)

  rows = []
  for variant in a.variants.split(","):
    kind, g, shift, below, eta, *rest = variant.split(":")
    g, shift, below, eta = float(g), float(shift), float(below), float(eta)
    rho = float(rest[0]) if rest else 0.0
    sig = np.asarray(euler_sigmas(STEPS, shift=shift))
    key = jax.random.key(5)
    x = correlated_noise(key, shape, rho)
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
    if a.by_motion:
      k = a.by_motion
      rows[-1]["by_motion"] = {
        m: ev.score(videos[i * k : (i + 1) * k], [[p] for p in prompts[i * k : (i + 1) * k]])["accuracy"]
        for i, m in enumerate(grammar.MOTIONS)
      }
      for m, r in rows[-1]["by_motion"].items():
        print(f"  {m}: " + " ".join(f"{key}={v:.2f}" for key, v in r.items()), flush=True)
    if a.strips:
      Path(a.strips).mkdir(parents=True, exist_ok=True)
      rows_shown = range(0, n, a.by_motion) if a.by_motion else range(min(n, 4))  # one per motion
      strip = np.concatenate(
        [
          np.concatenate(list(videos[i, 8 : 4 * a.frames - 1 : max(1, (4 * a.frames - 9) // 5)][:5]), 1)
          for i in rows_shown
        ],
        0,
      )
      _write_png(Path(a.strips) / f"{variant.replace(':', '_')}.png", strip)
  if a.out:
    Path(a.out).write_text(json.dumps({"dit": a.dit, "clips": n, "seed": a.seed, "rows": rows}, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
