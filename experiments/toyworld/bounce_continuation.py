"""Can a model continue a bouncing object's diagonal from its past? The past is the truth; only the last block is
the model's.

  python experiments/toyworld/bounce_continuation.py --model shipped=longlive_jax/toyworld/default_model \
      [--model NAME=DIT ...] [--teacher NAME=DIT ...] [--num 24] --out experiments/results/F.json

``num`` training-split prompts whose motion is ``bounces`` (prompt seed 5), each rendered by the world as a
9-latent window of a longer video (a lead-in of 0..128 frames, seed 9: the object enters along any of the four
diagonals) and encoded by the shipped model's VAE. A causal student (``--model``) streams the window with the
world's own latents committed to its cache for blocks 0 and 1 (sink and window as at inference), then generates
block 2 as at inference (4 steps, noise seed 31). A bidirectional teacher (``--teacher``) samples the whole
window (48 guided Euler steps, CFG ``--guidance``) with latents 0-5 replaced by the world's, noised to the
current sigma, at every step (RePaint-style inpainting; weaker conditioning than a clean cache: at high noise
the kept latents are mostly noise). Blocks 0-1 (the truth) and the model's block 2 are decoded together; the
judge tracks the object and block 2's displacement (video frames 21 -> 32, px/frame) is compared with the
world's: its speed, the cosine of the two displacements and the fraction with both signs right (a model that
cannot read the diagonal from the past scores about 0.25 on signs: the caption names no diagonal).

Why: every student of the recipe draws ``bounces`` worst. The directions come from the caption; a bounce's
diagonal is only in the past frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

LATENTS = 9  # the window: blocks 0-1 given, block 2 generated
KEEP = 6  # latent frames of the true past
FIRST, LAST = 21, 32  # video frames of block 2 (latent 6 starts at frame 4 * 6 - 3)


def pair(text: str) -> tuple[str, str]:
  name, sep, path = text.partition("=")
  if not sep or not name or not path:
    raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
  return name, path


def world_clips(num: int):
  """``(prompts, uint8 videos [N, 33, H, W, 3])``: bouncing windows of longer videos."""
  from longlive_jax.toyworld import grammar
  from longlive_jax.toyworld.render import Scene, num_video_frames, render

  rng = np.random.default_rng(5)
  prompts: list[str] = []
  while len(prompts) < num:
    attrs = grammar.sample_attributes(rng, split="train")
    if attrs.motion == "bounces":
      prompts.append(attrs.caption)
  leads = np.random.default_rng(9).integers(0, 129, size=num)
  scenes = [
    dataclasses.replace(Scene.from_prompts([p], seed=1000 + i), lead_in=int(leads[i])) for i, p in enumerate(prompts)
  ]
  return prompts, np.stack([render(sc, num_video_frames(LATENTS)) for sc in scenes])


def student_block(dit, z, cond):
  """Block 2 of a causal student ``[N, 3, h, w, c]`` after committing the true blocks 0 and 1 of ``z``."""
  import jax
  import jax.numpy as jnp

  from longlive_jax.stream.noise import BlockShape, block_draws

  sys.path.insert(0, str(Path(__file__).resolve().parent))
  from forced_student import forced_step  # the teacher-forced block step of forced_student.py

  st, step = forced_step(dit)
  bf = st.spec.block_frames
  n, _, h, w, c = z.shape
  ck, cv = st.encode(cond)
  cache = st.init_cache(batch=n)
  shape = BlockShape(batch=n, frames=bf, height=h, width=w, channels=c)
  x0 = None
  for blk in range(LATENTS // bf):
    noise, renoise, _ = block_draws(
      jax.random.key(31), jnp.int32(blk), shape=shape, num_steps=st.num_steps, dtype=jnp.float32
    )
    x0, cache = step(st.params, cache, noise, renoise, z[:, blk * bf : (blk + 1) * bf], ck, cv)
  return x0  # the last block's


def teacher_block(dit, z, cond, uncond, *, guidance: float, num_steps: int = 48, batch: int = 8):
  """The last 3 latents of a teacher's inpainted sample ``[N, 3, h, w, c]`` (latents 0-5 kept from ``z``)."""
  import jax
  import jax.numpy as jnp

  from longlive_jax.train.ode_pairs import euler_sigmas

  sig = jnp.asarray(euler_sigmas(num_steps, shift=5.0))
  keep = (jnp.arange(LATENTS) < KEEP)[None, :, None, None, None]  # [1, F, 1, 1, 1]

  @jax.jit
  def run(z, cond, uncond, eps):
    b = z.shape[0]

    def body(x, i):
      x = jnp.where(keep, (1.0 - sig[i]) * z + sig[i] * eps, x)  # the known latents at this step's noise
      t = jnp.full((2 * b,), 1000.0 * sig[i], jnp.float32)
      v = dit(jnp.concatenate([x, x]), t, jnp.concatenate([cond, uncond]))  # [2B, F, h, w, c]
      v = v[b:] + guidance * (v[:b] - v[b:])
      return x + (sig[i + 1] - sig[i]) * v, None

    out, _ = jax.lax.scan(body, eps, jnp.arange(num_steps))
    return out[:, KEEP:]

  eps = jax.random.normal(jax.random.key(31), z.shape)
  return jnp.concatenate(
    [
      run(z[s : s + batch], cond[s : s + batch], uncond[s : s + batch], eps[s : s + batch])
      for s in range(0, len(z), batch)
    ]
  )


def displacement(vae, z, prompts) -> np.ndarray:
  """``[N, 2]`` px/frame: the tracked object's displacement over block 2 of the decoded latents ``z``."""
  import jax.numpy as jnp

  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld import judge
  from longlive_jax.vae.stream import decode

  videos = ev._to_uint8(jnp.concatenate([decode(vae, z[s : s + 8]) for s in range(0, len(z), 8)]))
  tracks = np.stack([judge.judge_video(v, prompts=[p]).track for v, p in zip(videos, prompts, strict=True)])
  return (tracks[:, LAST] - tracks[:, FIRST]) / (LAST - FIRST)


def compare(d: np.ndarray, world: np.ndarray) -> dict:
  nd, nw = np.linalg.norm(d, axis=-1), np.linalg.norm(world, axis=-1)
  cos = (d * world).sum(-1) / np.maximum(nd * nw, 1e-9)
  return {
    "speed": float(np.nanmean(nd)),
    "cosine": float(np.nanmean(cos)),
    "signs_right": float(np.nanmean(np.all(np.sign(d) == np.sign(world), axis=-1))),
    "tracked": float(np.isfinite(d).all(axis=-1).mean()),
  }


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", type=pair, action="append", default=[], help="NAME=PATH of a causal DiT (repeatable)")
  ap.add_argument("--teacher", type=pair, action="append", default=[], help="NAME=PATH of a bidirectional DiT")
  ap.add_argument("--guidance", type=float, default=3.0, help="the teachers' CFG scale (3: the recipe's)")
  ap.add_argument("--num", type=int, default=24)
  ap.add_argument("--out", required=True)
  a = ap.parse_args(argv)
  if not a.model and not a.teacher:
    ap.error("give at least one --model or --teacher")

  import jax.numpy as jnp

  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld.model import default_checkpoint
  from longlive_jax.vae.stream import encode

  shipped = str(default_checkpoint())
  prompts, world = world_clips(a.num)
  _, vae, enc = ev.load_models(shipped, shipped)
  x = jnp.asarray(world, jnp.float32) / 127.5 - 1.0  # [N, T, H, W, 3]
  z = jnp.concatenate([encode(vae, x[s : s + 8]) for s in range(0, a.num, 8)])  # [N, 9, h, w, c]
  cond = jnp.asarray(enc(prompts))
  uncond = jnp.broadcast_to(jnp.asarray(enc([""])), cond.shape)
  truth = displacement(vae, z, prompts)
  out = {"prompts": prompts, "guidance": a.guidance, "rows": {"true latents": compare(truth, truth)}}
  for kind, rows in (("model", a.model), ("teacher", a.teacher)):
    for name, path in rows:
      dit, _, _ = ev.load_models(path, shipped)
      last = (
        student_block(dit, z, cond) if kind == "model" else teacher_block(dit, z, cond, uncond, guidance=a.guidance)
      )
      out["rows"][name] = {
        "kind": kind,
        "path": path,
        **compare(displacement(vae, jnp.concatenate([z[:, :KEEP], last], 1), prompts), truth),
      }
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(out, indent=1))
  for name, r in out["rows"].items():
    print(
      f"{name:>24}: speed {r['speed']:.2f} px/frame, cosine {r['cosine']:+.2f}, both signs right {r['signs_right']:.2f}"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
