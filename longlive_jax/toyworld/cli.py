"""``longlive-jax toyworld ACTION``: the toy world's data preparation, ODE pairs, model assembly and rendering.

Actions (each a step of ``experiments/toyworld/train_all.sh``, or a tool for users):
  prompts     captions of the world's training combinations (``--pairs``: with a natural edit each) -> .npz
  latents     rendered clips encoded with a trained VAE + caption embeddings -> .npz (the teacher's data)
  centred     the clips of a latents .npz that start near the centre -> .npz (a teacher's centred-only phase)
  ode-pairs   the teacher's guided ODE trajectories for prompts -> .npz (the ode-init stage's data)
  assemble    DiT export + VAE export + the frozen text encoder + tokenizer -> one whole-model checkpoint
  render      the world's own ground-truth video for prompts (with switches) -> .mp4 / PNG strip
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def add_toyworld(sub) -> None:
  p = sub.add_parser(
    "toyworld",
    help="toy world: data preparation, ODE pairs, model assembly, ground-truth rendering",
    description=__doc__.split("\n\n", 1)[1],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  acts = p.add_subparsers(dest="action", metavar="ACTION")
  acts.required = True

  q = acts.add_parser("text", help="pretrain the world's tiny text encoder on its grammar (the shipped weights)")
  q.add_argument("--out", required=True, help="an .npz (the package's: longlive_jax/toyworld/text_encoder.npz)")
  q.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
  q.add_argument("--seed", type=int, default=0, help="initialisation and data seed (default 0)")

  q = acts.add_parser("prompts", help="sample training prompts (or prompt pairs) into an .npz")
  q.add_argument("--out", required=True, help="the .npz to write")
  q.add_argument("--num", type=int, required=True, help="how many prompts (or pairs)")
  q.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
  q.add_argument(
    "--split",
    default="train",
    choices=["train", "held_out", "all"],
    help="combinations to draw from: the training split (default), the held-out 10%%, or all",
  )
  q.add_argument("--pairs", action="store_true", help="prompt_a / prompt_b pairs (a natural edit) for switches")
  _add_motion_weight(q, "prompts", note="; pairs: the first")

  q = acts.add_parser("latents", help="encode rendered clips with a trained VAE (teacher data)")
  q.add_argument("--vae", required=True, help="a checkpoint folder with a 'vae' component (the vae stage's export)")
  q.add_argument("--out", required=True, help="the .npz of encoded clips to write (the teacher stage's data.source)")
  q.add_argument("--num", type=int, required=True, help="how many clips")
  q.add_argument("--latent-frames", type=int, default=21, help="latent frames per clip (default 21: 81 video frames)")
  q.add_argument("--size", type=int, default=64, help="frame height = width in pixels (default 64)")
  q.add_argument("--seed", type=int, default=1, help="seed of the rendered clips (default 1)")
  q.add_argument("--caption-dropout", type=_fraction, default=0.1, help="fraction of clips captioned '' (CFG)")
  q.add_argument(
    "--centre-fraction", type=_fraction, default=0.0, help="fraction of clips starting near the centre (default 0)"
  )
  q.add_argument(
    "--lead-in",
    type=_non_negative,
    default=0,
    help="the other clips are windows of a longer video: the world runs 0..N frames before each (default 0)",
  )
  q.add_argument(
    "--switch-prob",
    type=_fraction,
    default=0.0,
    help="fraction of clips that switch prompts once (the forced stage's switch clips; default 0)",
  )
  q.add_argument(
    "--switch-block", type=_positive, default=3, help="switches fall on multiples of N latents (default 3: a block)"
  )
  _add_motion_weight(q, "clips")

  q = acts.add_parser("centred", help="keep the clips of a latents .npz that start near the centre")
  q.add_argument("latents", help="an .npz written by `toyworld latents` with --centre-fraction > 0")
  q.add_argument("--out", required=True, help="the .npz to write")
  q.add_argument("--frames", type=int, default=None, help="keep each clip's first N latents (default: all)")

  q = acts.add_parser("ode-pairs", help="the teacher's guided ODE trajectories (ode-init data)")
  q.add_argument("--teacher", required=True, help="the teacher stage's export folder")
  q.add_argument("--prompts", required=True, help="an .npz with a 'prompt' array (toyworld prompts)")
  q.add_argument("--out", required=True, help="the .npz to write (the trajectories and their prompts)")
  q.add_argument("--latent-frames", type=int, default=21, help="latent frames per clip (default 21)")
  q.add_argument("--latent-size", type=int, default=16, help="latent height = width (64 px through the 4x VAE: 16)")
  q.add_argument("--steps", type=int, default=48, help="Euler steps (a multiple of --points)")
  q.add_argument(
    "--points",
    type=int,
    default=4,
    help="states kept per trajectory: those of an evenly spaced N-step student schedule (default 4: LongLive's)",
  )
  q.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
  q.add_argument("--seed", type=int, default=2, help="noise seed (default 2)")
  q.add_argument("--batch", type=int, default=16, help="clips sampled together (default 16)")

  q = acts.add_parser("assemble", help="one whole-model checkpoint from the DiT and VAE exports")
  q.add_argument("--dit", required=True, help="the DiT's export folder (a training stage's export)")
  q.add_argument("--vae", required=True, help="a checkpoint folder with a 'vae' component (the vae stage's export)")
  q.add_argument("--out", required=True, help="the whole-model checkpoint folder to write")
  q.add_argument("--size", type=int, default=64, help="native frame height = width in pixels (default 64)")
  q.add_argument(
    "--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="stored weight dtype (default bfloat16)"
  )
  q.add_argument("--sink", type=int, default=3, help="sink frames it was trained with (default 3)")
  q.add_argument(
    "--window", type=int, default=9, help="attention window incl. sink it was trained with (local_attn_size; default 9)"
  )
  q.add_argument(
    "--rope-horizon",
    type=_non_negative,
    default=0,
    help="the RoPE horizon generate / interactive / serve stream it with by default (StreamSpec.rope_horizon; "
    "0: absolute positions; default 0)",
  )
  q.add_argument("--meta", help="a JSON file of extra metadata (training record)")
  q.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

  q = acts.add_parser("render", help="the world's ground truth for prompts (with switches)")
  q.add_argument("prompts", nargs="+", help="one or more prompts of the world's grammar")
  q.add_argument("--switch-frames", default="", help="latent frames where prompts 2, 3, ... start (e.g. 10,20)")
  q.add_argument("--frames", type=int, default=30, help="latent frames (video frames = 1 + 4 (F - 1))")
  q.add_argument("--size", type=int, default=64, help="frame height = width in pixels (default 64)")
  q.add_argument("--seed", type=int, default=0, help="the world's seed: start position and speed (default 0)")
  q.add_argument("--out", required=True, help=".mp4 video or .png strip")


def _text(a) -> int:
  from longlive_jax.toyworld.text_train import pretrain, save_params

  params, metrics = pretrain(steps=a.steps, seed=a.seed, progress=True)
  out = save_params(a.out, params)
  print(f"wrote {out}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
  return 0


def _fraction(text: str) -> float:
  """argparse type: a float in [0, 1] (else argparse's usage error, exit 2)."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
  if not 0.0 <= value <= 1.0:
    raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
  return value


def _non_negative(text: str) -> int:
  """argparse type: an integer >= 0 (else argparse's usage error, exit 2)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
  if value < 0:
    raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
  return value


def _positive(text: str) -> int:
  """argparse type: an integer >= 1 (else argparse's usage error, exit 2)."""
  value = _non_negative(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
  return value


def _add_motion_weight(q: argparse.ArgumentParser, what: str, *, note: str = "") -> None:
  """``--motion-weight MOTION=W`` (repeatable) on ``q``: ``what`` of that motion drawn W times as often."""
  q.add_argument(
    "--motion-weight",
    type=_motion_weight,
    action="append",
    default=[],
    metavar="MOTION=W",
    help=f"draw {what} of MOTION W times as often as the others (repeatable; e.g. 'bounces=2'{note})",
  )


def _motion_weight(text: str) -> tuple[str, float]:
  """argparse type: ``MOTION=W`` with a motion of the grammar and a weight >= 0."""
  from longlive_jax.toyworld.grammar import MOTIONS

  motion, sep, weight = text.rpartition("=")
  try:
    value = float(weight)
  except ValueError:
    value = -1.0
  if not sep or motion not in MOTIONS or not value >= 0:
    raise argparse.ArgumentTypeError(
      f"expected MOTION=W with MOTION one of {', '.join(repr(m) for m in MOTIONS)} and W >= 0, got {text!r}"
    )
  return motion, value


def cmd_toyworld(a) -> int:
  return {
    "text": _text,
    "prompts": _prompts,
    "latents": _latents,
    "centred": _centred,
    "ode-pairs": _ode_pairs,
    "assemble": _assemble,
    "render": _render,
  }[a.action](a)


def _prompts(a) -> int:
  from longlive_jax.toyworld import data

  build = data.build_prompt_pairs if a.pairs else data.build_prompts
  out = build(a.out, num=a.num, seed=a.seed, split=a.split, motion_weights=dict(a.motion_weight) or None)
  weights = "".join(f", {m} x{w:g}" for m, w in a.motion_weight)
  print(f"wrote {out}: {a.num} {'prompt pairs' if a.pairs else 'prompts'} ({a.split} combinations{weights})")
  return 0


def _latents(a) -> int:
  from longlive_jax.pipeline import load_vae
  from longlive_jax.toyworld import data
  from longlive_jax.toyworld.text import TextEncoder

  out = data.build_latents(
    a.out,
    vae=load_vae(a.vae),
    encode_text=TextEncoder(),
    num=a.num,
    latent_frames=a.latent_frames,
    size=a.size,
    seed=a.seed,
    caption_dropout=a.caption_dropout,
    centre_fraction=a.centre_fraction,
    lead_in_frames=a.lead_in,
    switch_prob=a.switch_prob,
    switch_block=a.switch_block,
    motion_weights=dict(a.motion_weight) or None,
  )
  print(f"wrote {out}: {a.num} clips of {a.latent_frames} latent frames")
  return 0


def _centred(a) -> int:
  from longlive_jax.toyworld import data

  try:
    out, kept, total = data.select_centred(a.latents, a.out, frames=a.frames)
  except (OSError, ValueError) as e:
    print(f"longlive-jax toyworld centred: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out}: {kept} of {total} clips (those starting near the centre)")
  return 0


def _ode_pairs(a) -> int:
  from longlive_jax import checkpoint
  from longlive_jax.data.pipeline import NpzRecords
  from longlive_jax.model.params import model_from_params
  from longlive_jax.toyworld.text import TextEncoder
  from longlive_jax.train.ode_pairs import make_pairs, save_pairs

  if a.points < 1 or a.steps % a.points:
    print(
      f"longlive-jax toyworld ode-pairs: error: --steps {a.steps} must be a multiple of --points {a.points} (>= 1)",
      file=sys.stderr,
    )
    return 2
  cfg, params, _, _ = checkpoint.load(a.teacher)
  prompts = [str(p) for p in NpzRecords(a.prompts).arrays["prompt"]]
  pairs = make_pairs(
    model_from_params(cfg, params),
    prompts=prompts,
    encode_text=TextEncoder(),
    negative_prompt="",
    latent_shape=(a.latent_frames, a.latent_size, a.latent_size, cfg.in_dim),
    num_steps=a.steps,
    guidance=a.guidance,
    seed=a.seed,
    batch=a.batch,
    points=a.points,
  )
  out = save_pairs(a.out, pairs)
  print(f"wrote {out}: {len(prompts)} trajectories {pairs['trajectory'].shape[1:]}")
  return 0


def _assemble(a) -> int:
  from longlive_jax.toyworld.model import assemble
  from longlive_jax.toyworld.render import FPS

  if a.rope_horizon and a.rope_horizon < a.window:
    print(
      f"longlive-jax toyworld assemble: error: --rope-horizon {a.rope_horizon} must be 0 (off) or at least "
      f"--window ({a.window})",
      file=sys.stderr,
    )
    return 2
  meta = json.loads(Path(a.meta).read_text()) if a.meta else {}
  stream = {"block_frames": 3, "sink_frames": a.sink, "window_frames": a.window}
  if a.rope_horizon:
    stream["rope_horizon"] = a.rope_horizon
  out = assemble(
    a.out, dit_checkpoint=a.dit, vae_checkpoint=a.vae, size=a.size, fps=FPS, stream=stream, dtype=a.dtype,
    meta=meta, overwrite=a.overwrite,
  )  # fmt: skip
  size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
  print(f"wrote {out}: {size / 2**20:.1f} MiB")
  return 0


def _render(a) -> int:
  from longlive_jax.toyworld.render import FPS, Scene, latent_to_video_frame, num_video_frames, render
  from longlive_jax.video_io import VideoWriter, _write_png

  switches = [int(x) for x in a.switch_frames.replace(",", " ").split()]
  scene = Scene.from_prompts(
    a.prompts, seed=a.seed, switch_frames=[latent_to_video_frame(s) for s in switches], size=a.size
  )
  video = render(scene, num_video_frames(a.frames))
  out = Path(a.out)
  if out.suffix == ".png":
    _write_png(out, np.concatenate(list(video[:: max(1, len(video) // 12)]), axis=1))
  else:
    w = VideoWriter(out, fps=FPS)
    w.write(video)
    w.close()
  print(f"wrote {out}: {len(video)} frames")
  return 0
