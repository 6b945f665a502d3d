"""Does the teacher pool an object's evidence over time? One step on still vs moving clips, and its attention.

  python experiments/toyworld/pooling.py --dit runs/toyworld/teacher/export [--out pooling.json]

12 still and 12 rightward clips (attributes from the training split, world seeds 1000+, 21 latents) are noised
to sigma 0.97 / 0.95 / 0.93 / 0.9 with one noise draw; the teacher's clean estimate (no guidance) is decoded
and judged. A teacher that pools a still object's 20 latent frames finds it at noise levels where one frame
shows nothing, and puts it at one position (judged "stays still"); for the still clips the script also reports, per sigma, the
median over clips of the estimate's distance to the true centre and of its frame-to-frame step (the judge's
per-frame tracks; a blurred estimate jitters, and 4-frame steps above 0.15 px/frame read as motion). Then the self-attention of every block on 4
still clips: per head, the mass a query puts on its own position in the other frames (uniform: 20/336) and on
its own frame (uniform: 1/21), at sigma 0.5, 0.9 and 0.95.
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

ONE_STEP_SIGMAS = (0.97, 0.95, 0.93, 0.9)
ATTENTION_SIGMAS = (0.5, 0.9, 0.95)


def clips(enc, vae_encoder: str, motion: str, num: int, seed: int):
  """``(x0 [num, 21, h, w, C], prompts)``: rendered clips of ``motion``, encoded by ``vae_encoder``."""
  from longlive_jax.pipeline import load_vae
  from longlive_jax.toyworld.render import Scene, render
  from longlive_jax.vae.stream import encode

  prompts = fresh_clips.motion_prompts(num, motions=[motion], seed=11)
  venc = load_vae(vae_encoder)
  videos = np.stack([render(Scene.from_prompts([p], seed=seed + i), 81) for i, p in enumerate(prompts)])
  x = jnp.asarray(videos, jnp.float32) / 127.5 - 1.0  # [N, T, H, W, 3]
  return jnp.concatenate([encode(venc, x[b : b + 8]) for b in range(0, num, 8)]), prompts


def attention_masses(dit, x0, ctx, sigma: float) -> list[dict[str, list[float]]]:
  """Per block, per head: the self-attention mass on the query's position in other frames and on its frame."""
  from longlive_jax.model import blocks

  n, f, h, w, _ = x0.shape
  ph, pw = dit.cfg.patch_size[1:]
  tpf = (h // ph) * (w // pw)
  frame, pos = np.repeat(np.arange(f), tpf), np.tile(np.arange(tpf), f)
  same_pos = (pos[:, None] == pos[None, :]) & (frame[:, None] != frame[None, :])  # [S, S]
  same_frame = frame[:, None] == frame[None, :]
  store, orig = [], blocks.attention

  def recording(q, k, v, *, key_mask=None, impl="auto"):
    if k.shape[1] == f * tpf:  # self-attention (cross-attention has the text's keys)
      logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) / np.sqrt(q.shape[-1])
      jax.debug.callback(lambda p: store.append(np.asarray(p)), jax.nn.softmax(logits, -1))  # [B, H, S, S]
    return orig(q, k, v, key_mask=key_mask, impl=impl)

  blocks.attention = recording
  try:
    eps = jax.random.normal(jax.random.key(0), x0.shape)
    jax.block_until_ready(dit((1 - sigma) * x0 + sigma * eps, jnp.full((n,), 1000.0 * sigma), ctx))
  finally:
    blocks.attention = orig
  return [
    {
      "same_position_other_frames": [round(float(m), 3) for m in (p * same_pos).sum(-1).mean((0, 2))],
      "own_frame": [round(float(m), 3) for m in (p * same_frame).sum(-1).mean((0, 2))],
    }
    for p in store
  ]


def still_track(vae, x0, est, prompts: list[str]) -> dict[str, float]:
  """Medians over still clips of the estimate's per-frame distance to the true centre (the true clip's median
  track) and of its frame-to-frame step, in pixels; frames where the judge sees no object are skipped."""
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld import judge
  from longlive_jax.vae.stream import decode

  truth, videos = ev._to_uint8(decode(vae, x0)), ev._to_uint8(decode(vae, est))
  dist, step = [], []
  for i, p in enumerate(prompts):
    centre = np.nanmedian(judge.judge_video(truth[i], prompts=[p]).track, axis=0)  # [2]
    track = judge.judge_video(videos[i], prompts=[p]).track  # [T, 2], NaN where absent
    track = track[~np.isnan(track[:, 0])]
    if len(track) > 1:
      dist.append(float(np.median(np.linalg.norm(track - centre, axis=1))))
      step.append(float(np.median(np.linalg.norm(np.diff(track, axis=0), axis=1))))
  med = lambda a: round(float(np.median(a)), 2) if a else float("nan")  # noqa: E731
  return {"distance_to_truth": med(dist), "frame_step": med(step), "clips_with_object": len(dist)}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  fresh_clips.add_model_arguments(ap)
  ap.add_argument("--out", help="also write the figures as JSON here")
  a = ap.parse_args()

  from longlive_jax.toyworld import evaluate as ev

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  sets = {m: clips(enc, a.vae_encoder, m, 12, 1000) for m in ("stays still", "moves right")}
  one_step = {}
  for s in ONE_STEP_SIGMAS:
    for m, (x0, prompts) in sets.items():
      eps = jax.random.normal(jax.random.key(0), x0.shape)
      xt, v = fresh_clips.velocities_at(dit, x0, eps, jnp.asarray(enc(prompts)), s)
      acc = {k: round(float(x), 3) for k, x in fresh_clips.judged(vae, xt - s * v, prompts).items()}
      one_step.setdefault(str(s), {})[m] = acc
      print(f"one step, sigma {s}, {m}: " + " ".join(f"{k}={x:.2f}" for k, x in acc.items()), flush=True)
      if m == "stays still":
        one_step[str(s)]["still_track_px"] = still_track(vae, x0, xt - s * v, prompts)
        print(f"  still clips' estimates (px): {one_step[str(s)]['still_track_px']}", flush=True)
  x0, prompts = sets["stays still"][0][:4], sets["stays still"][1][:4]
  attention = {}
  for s in ATTENTION_SIGMAS:
    attention[str(s)] = attention_masses(dit, x0, jnp.asarray(enc(prompts)), s)
    for i, row in enumerate(attention[str(s)]):
      print(f"attention, sigma {s}, block {i}: same position {row['same_position_other_frames']}", flush=True)
  if a.out:
    f, tpf = x0.shape[1], (x0.shape[2] // dit.cfg.patch_size[1]) * (x0.shape[3] // dit.cfg.patch_size[2])
    uniform = {"same_position_other_frames": (f - 1) / (f * tpf), "own_frame": 1 / f}
    out = {"dit": a.dit, "one_step": one_step, "attention": attention, "uniform": uniform}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
