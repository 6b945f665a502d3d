"""Where `bounces` is lost on long videos: the tracked object of a causal model's bouncing videos against the world's.

  python experiments/toyworld/bounce_tracks.py [--model CHECKPOINT] [--num 20] [--latent-frames 42]
      --out experiments/results/toyworld_bounce_tracks.json [--plot docs/toyworld_bounce_tracks.png]
  python experiments/toyworld/bounce_tracks.py --teacher runs/toyworld/teacher_uniform/export --latent-frames 9
      --out experiments/results/toyworld_bounce_tracks_teacher.json   # the bidirectional teacher (48 steps, CFG 3)
  python experiments/toyworld/bounce_tracks.py --teacher runs/toyworld/teacher_uniform/export --latent-frames 9 \
      --denoise 0.5,0.7,0.9 --out experiments/results/toyworld_bounce_tracks_denoise.json  # one step on true clips
  python experiments/toyworld/bounce_tracks.py --teacher runs/toyworld/teacher_uniform/export --latent-frames 9 \
      --denoise 0.5,0.7,0.9 --lead-in 128 --num 40 --out ...  # on windows of long videos (any diagonal)
  python experiments/toyworld/bounce_tracks.py --clips --out experiments/results/toyworld_bounce_tracks_clips.json

``num`` training-split prompts whose motion is ``bounces`` (prompt seed 5), streamed by the model as
``evaluate.py`` does (noise seed 31, never used in training), and the world's own rendering of the same prompts
(uniform start). Each video is judged (``judge.judge_video``: its object's centre per frame and 1-s windows). Reported
per second: the mean speed along the track (px/frame; the world's: 0.75), the mean distance of the centre from
the nearest wall a bouncing object reflects at (``Scene.margin`` from the frame's edge) and from the down-right
corner of those walls (where a (+, +) start heads); per video: the span of the track in the second half (px per
axis, both axes averaged; a bouncing object covers the box between the walls). The judge's motion verdict per
1-s window is kept too; and, for short clips too, the mean speed where the centre is within 3 px of those walls
(where the world reflects at full speed) against where it is more than 6 px away. ``--clips`` instead counts the
bouncing clips (no switch) of the teachers' training sets (``train_all.sh``'s: 4000 9-latent clips, 70% centred,
seed 11; and uniform starts, seed 13) whose object reflects within the clip, from the scenes alone. ``--denoise
SIGMAS`` (with ``--teacher``) asks whether the teacher knows a reflection when it sees one: the world's clips of
the prompts (VAE-encoded) noised to each sigma and denoised in one unguided step (``x0 = x_t - sigma v``), then
tracked like the samples; sigma 0 is the VAE's own round trip. With ``--lead-in N`` those clips are windows of
longer videos (a lead-in of 0..N frames, seed 9), which a bouncing object enters along any diagonal; then per sigma
how the estimate's track follows the clip's (cosine of 4-frame displacements) and how far it is pulled along
(+, +), for clips entering along (+, +) and along the others: a teacher that only knows bounces setting off
(+, +) pulls the others towards it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

FPS = 16


def summarise(videos: np.ndarray, prompts: list[str], *, size: int, margin: float) -> dict:
  """The figures of the module docstring for ``videos`` (uint8 ``[N, T, H, W, 3]``) of ``prompts``."""
  from longlive_jax.toyworld import judge

  scores = [judge.judge_video(v, prompts=[p]) for v, p in zip(videos, prompts, strict=True)]  # 16-frame windows
  tr = np.stack([sc.track for sc in scores])  # [N, T, 2] (x, y) px; NaN where no object: left out of every mean
  found = np.isfinite(tr).all(axis=-1)  # [N, T]
  step = np.linalg.norm(np.diff(tr, axis=1), axis=-1)  # [N, T-1] px/frame (no wrap: bouncing objects stay inside)
  lo, hi = margin, size - margin
  wall = np.minimum(np.minimum(tr[..., 0] - lo, hi - tr[..., 0]), np.minimum(tr[..., 1] - lo, hi - tr[..., 1]))
  corner = np.linalg.norm(tr - hi, axis=-1)  # [N, T] px from where a (+, +) start first runs into both walls
  half = tr[:, tr.shape[1] // 2 :]
  span = (np.nanmax(half, axis=1) - np.nanmin(half, axis=1)).mean(axis=-1)  # [N] px covered per axis in the second half
  secs = videos.shape[1] // FPS
  near, away = wall[:, 1:] <= 3.0, wall[:, 1:] > 6.0  # [N, T-1] per step (its end frame)
  verdicts = [[w.observed.motion for w in sc.windows] for sc in scores]  # one per second
  return {
    "object_found": float(found.mean()),
    "speed_per_second": [float(np.nanmean(step[:, s * FPS : (s + 1) * FPS])) for s in range(secs)],
    "wall_distance_per_second": [float(np.nanmean(wall[:, s * FPS : (s + 1) * FPS])) for s in range(secs)],
    "corner_distance_per_second": [float(np.nanmean(corner[:, s * FPS : (s + 1) * FPS])) for s in range(secs)],
    "second_half_span": float(np.nanmean(span)),
    "speed_near_walls": float(np.nanmean(step[near])) if near.any() else float("nan"),
    "speed_away_from_walls": float(np.nanmean(step[away])) if away.any() else float("nan"),
    "frames_near_walls": float(near.mean()),
    "bounces_windows": float(np.mean([[x == "bounces" for x in v] for v in verdicts])),
    "bounces_windows_per_second": [
      float(np.mean([v[s] == "bounces" for v in verdicts])) for s in range(len(verdicts[0]))
    ],
    "tracks": np.round(tr[:, ::4], 1).tolist(),  # every 4th frame
  }


def direction_agreement(est: dict, world: dict, first: np.ndarray) -> dict:
  """How an estimate's track follows the world's it was made from (``summarise`` outputs of the same clips):
  the mean cosine of their 4-frame displacements, and the pull along (+, +) (the estimate's displacement minus
  the world's, projected on the (+, +) diagonal, px/frame), for clips entering along (+, +) (``first``, [N]
  bool) and along the other diagonals."""
  e, w = np.diff(np.asarray(est["tracks"]), axis=1) / 4, np.diff(np.asarray(world["tracks"]), axis=1) / 4  # [N, S, 2]
  ne, nw = np.linalg.norm(e, axis=-1), np.linalg.norm(w, axis=-1)
  cos = np.where((ne > 0) & (nw > 0), (e * w).sum(-1) / np.maximum(ne * nw, 1e-9), np.nan)  # [N, S]
  pull = ((e - w) @ np.asarray([1.0, 1.0])) / np.sqrt(2.0)  # [N, S]
  out = {}
  for name, rows in (("enter_plus_plus", first), ("enter_other", ~first)):
    out[name] = {
      "clips": int(rows.sum()),
      "cosine": float(np.nanmean(cos[rows])) if rows.any() else float("nan"),
      "pull_plus_plus": float(np.nanmean(pull[rows])) if rows.any() else float("nan"),
    }
  return out


def clip_reflections(*, centre_fraction: float, seed: int, num: int = 4000, latent_frames: int = 9) -> dict:
  """Of the bouncing clips (no switch) of a teacher's training set, those whose object reflects within the clip."""
  from longlive_jax.toyworld.data import ClipSource
  from longlive_jax.toyworld.render import num_video_frames, simulate

  src = ClipSource(num_records=num, latent_frames=latent_frames, centre_fraction=centre_fraction, seed=seed)
  frames = num_video_frames(latent_frames)
  clips, after = 0, []
  for i in range(num):
    scene = src.scene(i)
    if len(scene.segments) > 1 or scene.segments[0].attrs.motion != "bounces":
      continue
    d = np.sign(np.diff(simulate(scene, frames), axis=0))  # [T-1, 2] direction of each step
    flips = np.nonzero((d[1:] != d[:-1]).any(axis=1))[0]
    clips += 1
    if len(flips):
      after.append(int(frames - 2 - flips[0]))  # frames of the clip after the first reflection
  return {
    "centre_fraction": centre_fraction,
    "seed": seed,
    "bouncing_clips": clips,
    "with_a_reflection": len(after),
    "median_frames_after_it": float(np.median(after)) if after else float("nan"),
  }


def denoise_rows(a: argparse.Namespace, prompts: list[str], world: np.ndarray, margin: float, first: np.ndarray) -> int:
  """``--denoise``: the teacher's one-step estimate of the world's clips at each sigma, tracked (``first``: which
  clips enter along (+, +))."""
  import jax
  import jax.numpy as jnp

  sys.path.insert(0, str(Path(__file__).resolve().parent))
  import fresh_clips

  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.vae.stream import decode, encode

  dit, vae, enc = ev.load_models(a.teacher, a.vae)
  x = jnp.asarray(world, jnp.float32) / 127.5 - 1.0  # [N, T, H, W, 3]
  x0 = jnp.concatenate([encode(vae, x[b : b + 8]) for b in range(0, len(x), 8)])  # [N, F, h, w, C]
  eps = jax.random.normal(jax.random.key(31), x0.shape)
  ctx = jnp.asarray(enc(prompts))
  size = world.shape[2]
  out = {"teacher": a.teacher, "prompts": prompts, "latent_frames": a.latent_frames, "margin_px": margin}
  out["lead_in_max"] = a.lead_in
  out["world"] = summarise(world, prompts, size=size, margin=margin)
  for sigma in [0.0, *(float(s) for s in a.denoise.split(","))]:
    xt, v = fresh_clips.velocities_at(dit, x0, eps, ctx, sigma)  # unguided, batches of 8
    x0_hat = xt - sigma * v  # [N, F, h, w, C]
    est = ev._to_uint8(jnp.concatenate([decode(vae, x0_hat[b : b + 8]) for b in range(0, len(x0_hat), 8)]))
    out[f"sigma_{sigma}"] = summarise(est, prompts, size=size, margin=margin)
    out[f"sigma_{sigma}"]["direction"] = direction_agreement(out[f"sigma_{sigma}"], out["world"], first)
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(out, indent=1))
  for name, r in out.items():
    if isinstance(r, dict):
      d = "".join(
        f"; {k}: cosine {v['cosine']:.2f}, pull (+,+) {v['pull_plus_plus']:+.2f} ({v['clips']})"
        for k, v in r.get("direction", {}).items()
      )
      print(
        f"{name:>10}: speed px/frame near the walls {r['speed_near_walls']:.2f}, away {r['speed_away_from_walls']:.2f}{d}"
      )
  return 0


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", help="whole-model checkpoint (default: the shipped toy-world model)")
  ap.add_argument("--teacher", help="a bidirectional DiT export instead: its guided samples (48 steps, CFG 3)")
  ap.add_argument("--guidance", type=float, default=3.0, help="with --teacher: CFG scale (3: the recipe's)")
  ap.add_argument("--vae", default="runs/toyworld/vae/export", help="with --teacher: the VAE export")
  ap.add_argument("--denoise", help="with --teacher: comma-separated sigmas: one step on the world's clips instead")
  ap.add_argument(
    "--lead-in", type=int, default=0, help="with --denoise: the world's clips are windows (0..N frames of lead-in)"
  )
  ap.add_argument("--clips", action="store_true", help="count reflections in the teachers' training clips instead")
  ap.add_argument("--num", type=int, default=20)
  ap.add_argument("--latent-frames", type=int, default=42, help="42: the 10-s videos of the evidence table")
  ap.add_argument("--out", required=True)
  ap.add_argument("--plot", help="PNG of the tracks (needs matplotlib: pip install -e '.[experiments]')")
  a = ap.parse_args()

  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld import grammar
  from longlive_jax.toyworld.model import default_checkpoint
  from longlive_jax.toyworld.render import Scene, num_video_frames, render, simulate

  if a.clips:
    out = {"clips": [clip_reflections(centre_fraction=0.7, seed=11), clip_reflections(centre_fraction=0.0, seed=13)]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    for c in out["clips"]:
      print(
        f"centre fraction {c['centre_fraction']}: {c['with_a_reflection']} of {c['bouncing_clips']} bouncing clips reflect "
        f"(median {c['median_frames_after_it']:.0f} frames after the first reflection)"
      )
    return 0
  ckpt = Path(a.model or default_checkpoint())
  rng = np.random.default_rng(5)
  prompts: list[str] = []
  while len(prompts) < a.num:
    attrs = grammar.sample_attributes(rng, split="train")
    if attrs.motion == "bounces":
      prompts.append(attrs.caption)
  n = num_video_frames(a.latent_frames)
  leads = np.random.default_rng(9).integers(0, a.lead_in + 1, size=a.num) if a.lead_in else np.zeros(a.num, int)
  scenes = [
    dataclasses.replace(Scene.from_prompts([p], seed=1000 + i), lead_in=int(leads[i])) for i, p in enumerate(prompts)
  ]
  world = np.stack([render(sc, n) for sc in scenes])
  first = np.asarray([np.all(np.diff(simulate(sc, 2), axis=0) > 0) for sc in scenes])  # [N] enters along (+, +)
  margin = scenes[0].margin
  if a.teacher and a.denoise:
    return denoise_rows(a, prompts, world, margin, first)
  if a.teacher:
    ckpt = Path(a.teacher)
    model, vae, enc = ev.load_models(ckpt, a.vae)
    videos, _ = ev.teacher_videos(model, vae, enc, prompts, latent_frames=a.latent_frames, seed=31, guidance=a.guidance)
  else:
    model, vae, enc = ev.load_models(ckpt, ckpt)  # a whole-model checkpoint holds both (as evaluate.py loads it)
    videos, _ = ev.causal_videos(model, vae, enc, [[p] for p in prompts], latent_frames=a.latent_frames, seed=31)
  size = videos.shape[2]
  out = {
    "model": str(ckpt),
    "prompts": prompts,
    "latent_frames": a.latent_frames,
    "guidance": a.guidance if a.teacher else None,
    "margin_px": margin,
    "model_videos": summarise(videos, prompts, size=size, margin=margin),
    "world": summarise(world, prompts, size=size, margin=margin),
  }
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(out, indent=1))
  for name in ("world", "model_videos"):
    r = out[name]
    print(
      f"{name:>12}: second-half span {r['second_half_span']:.1f} px, `bounces` windows {100 * r['bounces_windows']:.0f}%; "
      f"speed px/frame near the walls {r['speed_near_walls']:.2f}, away {r['speed_away_from_walls']:.2f}; "
      "per second " + " ".join(f"{x:.2f}" for x in r["speed_per_second"])
    )
  if a.plot:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6), sharex=True, sharey=True)
    for ax, name, title in (
      (axes[0], "world", "the world"),
      (axes[1], "model_videos", "the teacher" if a.teacher else "the model"),
    ):
      for t in np.asarray(out[name]["tracks"])[:8]:
        ax.plot(t[:, 0], t[:, 1], lw=1)
        ax.plot(t[:1, 0], t[:1, 1], "k.", ms=5)
      ax.add_patch(
        plt.Rectangle((margin, margin), size - 2 * margin, size - 2 * margin, fill=False, ls="--", color="gray")
      )
      ax.set(xlim=(0, size), ylim=(size, 0), aspect="equal", title=f"{title}: `bounces`, {n / FPS:.0f} s")
    fig.suptitle("object centre (dot: start; dashed: where a bouncing centre reflects)")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=110)
    print(f"wrote {a.plot}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
