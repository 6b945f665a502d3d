"""A causal student's blocks with the world's own past in its cache: how far is its output from the truth?

  python experiments/toyworld/forced_student.py --dit longlive_jax/toyworld/default_model \
      --vae runs/toyworld/vae_decoder/export [--clips 48] [--latents 21] [--free] [--motion bounces] \
      [--out F.json] [--save F.npz]

Rendered world clips (a third each of circles, squares and triangles, other attributes from the training split,
seeds 30000 + i) are encoded by the VAE. The student then streams them teacher-forced: every block is generated
as at inference (4 steps from noise, LongLive's schedule) with a cache that holds the *true* latents of every
earlier block (committed with the clean pass instead of the student's own output). Its blocks therefore continue
the true clip: position and motion are fixed by the past, and what differs from the truth is the student's own
error (shape, edges). Reported: the judge on the decoded forced blocks against the clip's prompt, next to the
judge on the VAE's round trips of the same clips and (``--free``) on the student's free-running videos of the same
prompts, with the dynamics along ``moves`` prompts: the median displacement per latent frame within blocks and
across block boundaries (the world's: 3 px) and the forced blocks' median offset from the truth along the motion.
``--motion`` gives every clip that motion (e.g. ``bounces``). ``--save`` writes the forced and true latents.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle")


def forced_step(dit):
  """``(streamer, step)``: the model's streamer at the recipe's settings and its jitted teacher-forced block step
  ``step(params, cache, noise, renoise, true_block, ck, cv) -> (x0, cache)``: the block generated as at inference,
  and the cache with ``true_block`` committed instead of it."""
  import jax
  from flax import nnx

  from longlive_jax.stream import engine
  from longlive_jax.toyworld import evaluate as ev

  st = ev.streamer(dit, ev.StreamSettings())
  spec, graphdef = st.spec, st.graphdef

  @jax.jit
  def step(params, cache, noise, renoise, true_block, ck, cv):
    m = nnx.merge(graphdef, params)
    x0, _, _ = engine.generate_block(
      m, cache, noise, renoise, cross=(ck, cv), timesteps=st.timesteps, sigmas=st.sigmas, spec=spec
    )  # the cache it returns holds the student's own block: dropped
    return x0, engine.commit(m, cache, true_block, cross=(ck, cv), spec=spec)

  return st, step


def forced_latents(dit, vae, encode_text, videos, prompts, *, seed: int, batch: int = 16):
  """``(forced [N, F, h, w, z], true [N, F, h, w, z])``: teacher-forced student blocks and the clips' latents."""
  import jax
  import jax.numpy as jnp

  from longlive_jax.stream.noise import BlockShape, block_draws
  from longlive_jax.vae.stream import encode

  st, step = forced_step(dit)
  spec = st.spec

  forced, true = [], []
  for s in range(0, len(videos), batch):
    x = jnp.asarray(videos[s : s + batch], jnp.float32) / 127.5 - 1.0
    z = encode(vae, x)  # [B, F, h, w, z] normalised
    b, f, h, w, c = z.shape
    ck, cv = st.encode(jnp.asarray(encode_text(list(prompts[s : s + batch]))))
    cache = st.init_cache(batch=b)
    shape = BlockShape(batch=b, frames=spec.block_frames, height=h, width=w, channels=c)
    key = jax.random.fold_in(jax.random.key(seed), s)
    out = []
    for blk in range(f // spec.block_frames):
      noise, renoise, _ = block_draws(key, jnp.int32(blk), shape=shape, num_steps=st.num_steps, dtype=jnp.float32)
      sl = slice(blk * spec.block_frames, (blk + 1) * spec.block_frames)
      x0, cache = step(st.params, cache, noise, renoise, z[:, sl], ck, cv)
      out.append(x0)
    forced.append(np.asarray(jnp.concatenate(out, axis=1)))
    true.append(np.asarray(z))
  return np.concatenate(forced), np.concatenate(true)


def per_shape(result) -> dict:
  """Shape accuracy per true shape from :func:`evaluate.score`'s confusion."""
  conf = result["confusion"]["shape"]
  return {s: round(conf[s].get(s, 0) / max(1, sum(conf[s].values())), 3) for s in SHAPES if s in conf}


AXES = {"right": (0, 1.0), "left": (0, -1.0), "down": (1, 1.0), "up": (1, -1.0)}  # track axis (x, y) and sign


def along(prompt: str):
  """``(axis, sign)`` of a ``moves <dir>`` prompt, else None."""
  words = prompt.split()
  return AXES[words[words.index("moves") + 1]] if "moves" in words else None


def latent_positions(video: np.ndarray, prompt: str) -> np.ndarray:
  """The judge's tracked centre ``[F, 2]`` (x, y px) at the last video frame of every latent (frames 0, 4, 8 ...)."""
  from longlive_jax.toyworld import judge

  track = np.asarray(judge.judge_video(video, prompts=[prompt]).track)  # [T, 2]
  return track[::4]


def wrapped(d: np.ndarray, size: int = 64) -> np.ndarray:
  return (d + size / 2) % size - size / 2


def dynamics(free: np.ndarray, forced: np.ndarray, truth: np.ndarray, prompts, block: int = 3) -> dict:
  """Median displacement per latent step along a ``moves`` prompt's direction in the free videos, within blocks and
  across block boundaries (the world's: 4 frames x 0.75 px = 3 px), and the forced blocks' median offset from the
  truth along it (blocks after the first)."""
  intra, cross, offset = [], [], []
  for i, p in enumerate(prompts):
    ax = along(p)
    if ax is None:
      continue
    a, sgn = ax
    pos = latent_positions(free[i], p)[:, a]
    d = wrapped(np.diff(pos)) * sgn  # step k - 1 -> k at index k - 1
    for k in range(1, len(pos)):
      (cross if k % block == 0 else intra).append(d[k - 1])
    off = wrapped(latent_positions(forced[i], p)[:, a] - latent_positions(truth[i], p)[:, a]) * sgn
    offset.extend(off[block:].tolist())

  def med(x):
    return round(float(np.nanmedian(x)), 2)

  return {
    "world_px_per_latent": 3.0,
    "free_within_blocks": med(intra),
    "free_across_boundaries": med(cross),
    "forced_offset_px": med(offset),
  }


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dit", default="longlive_jax/toyworld/default_model", help="a causal DiT export or whole model")
  ap.add_argument("--vae", default="runs/toyworld/vae_decoder/export", help="checkpoint with the VAE")
  ap.add_argument("--clips", type=int, default=48)
  ap.add_argument("--latents", type=int, default=21, help="latent frames per clip (a multiple of 3)")
  ap.add_argument("--seed", type=int, default=4243, help="attribute draws; clip i uses world seed --world-seed + i")
  ap.add_argument("--world-seed", type=int, default=30000)
  ap.add_argument("--free", action="store_true", help="also stream the same prompts free-running")
  ap.add_argument("--motion", help="every clip with this motion (e.g. bounces) instead of the split's draw")
  ap.add_argument("--out")
  ap.add_argument("--save", help="write forced latents + seeds + prompts here (.npz)")
  a = ap.parse_args()

  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld import grammar, render

  rng = np.random.default_rng(a.seed)
  attrs = [grammar.sample_attributes(rng).replace(shape=SHAPES[i % 3]) for i in range(a.clips)]
  if a.motion:
    attrs = [x.replace(motion=a.motion) for x in attrs]
    attrs = [x if not grammar.is_held_out(x) else x.replace(shape=SHAPES[(i + 1) % 3]) for i, x in enumerate(attrs)]
  prompts = [x.caption for x in attrs]
  frames = render.num_video_frames(a.latents)
  videos = np.stack(
    [render.render(render.Scene.from_prompts([x], seed=a.world_seed + i), frames) for i, x in enumerate(attrs)]
  )
  dit, vae, enc = ev.load_models(a.dit, a.vae)
  forced, true = forced_latents(dit, vae, enc, videos, prompts, seed=a.seed)
  from longlive_jax.vae.stream import decode

  def dec(z):
    return np.concatenate([ev._to_uint8(decode(vae, z[s : s + 16])) for s in range(0, len(z), 16)])

  scripts = [[p] for p in prompts]
  out = {"dit": a.dit, "vae": a.vae, "clips": a.clips, "latents": a.latents, "rows": {}}
  rows = {"truth": videos, "round_trip": dec(true), "forced": dec(forced)}
  if a.free:
    rows["free"], _ = ev.causal_videos(dit, vae, enc, [[p] for p in prompts], latent_frames=a.latents, seed=a.seed)
  for name, vids in rows.items():
    r = ev.score(vids, scripts)
    conf = r["confusion"]["motion"]
    row = {
      "accuracy": {k: round(float(v), 3) for k, v in r["accuracy"].items()},
      "shape": per_shape(r),
      "motion": {m: round(conf[m].get(m, 0) / max(1, sum(conf[m].values())), 3) for m in sorted(conf)},
    }
    if name != "truth":
      err = vids.astype(np.float32) - videos.astype(np.float32)
      row["psnr"] = round(float(10 * np.log10(255.0**2 / np.mean(err**2))), 2)
    out["rows"][name] = row
    print(name, row, flush=True)
  if a.free:
    out["dynamics"] = dynamics(rows["free"], rows["forced"], videos, prompts)
    print("dynamics", out["dynamics"])
  dz = forced - true
  out["latent_rmse_per_block"] = [
    round(float(np.sqrt(np.mean(dz[:, i : i + 3] ** 2))), 4) for i in range(0, a.latents, 3)
  ]
  print("latent rmse per block", out["latent_rmse_per_block"])
  if a.out:
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
  if a.save:
    np.savez(a.save, forced=forced, true=true, seeds=a.world_seed + np.arange(a.clips), prompts=np.asarray(prompts))
  return 0


if __name__ == "__main__":
  sys.exit(main())
