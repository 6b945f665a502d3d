"""``longlive-jax generate`` and ``longlive-jax interactive``: streaming generation from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from longlive_jax.stream import run as srun
from longlive_jax.stream.driver import SWITCH_MODES, Switch


def _add_stream_options(p) -> None:
  p.add_argument("--checkpoint", required=True, help="model folder written by 'longlive-jax convert'")
  p.add_argument("--frames", type=int, default=120, help="latent frames to generate, a multiple of 3 (default 120)")
  p.add_argument("--height", type=int, default=60, help="latent height (default 60 = 480 pixels)")
  p.add_argument("--width", type=int, default=104, help="latent width (default 104 = 832 pixels)")
  p.add_argument("--seed", type=int, default=0, help="PRNG seed of the noise (block b draws from fold_in(seed, b))")
  p.add_argument("--block-frames", type=int, default=3, help="latent frames per block (num_frame_per_block)")
  p.add_argument("--sink", type=int, default=3, help="sink frames kept forever (sink_size)")
  p.add_argument("--window", type=int, default=12, help="attention window in frames, incl. sink (local_attn_size)")
  p.add_argument(
    "--relative-rope", action="store_true", help="infinity mode: RoPE relative to the window, no 1024-frame limit"
  )
  p.add_argument("--context-noise", type=float, default=0.0, help="timestep of the cache-writing pass (default 0)")
  p.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default: the checkpoint's)")
  p.add_argument("--quiet", action="store_true", help="no progress bar")


def _opts(a) -> srun.StreamOptions:
  return srun.StreamOptions(
    frames=a.frames,
    height=a.height,
    width=a.width,
    seed=a.seed,
    block_frames=a.block_frames,
    sink_frames=a.sink,
    window_frames=a.window,
    relative_rope=a.relative_rope,
    global_sink=not getattr(a, "no_global_sink", False),
    switch_mode=getattr(a, "switch_mode", "recache"),
    context_noise=a.context_noise,
    dtype=a.dtype,
  )


def _resolver(streamer, base: Path | None = None):
  """Turns a prompt into an embedding: today a path to a ``.npy`` / ``.npz`` (relative to ``base``)."""
  cfg = streamer.cfg

  def resolve(prompt: str) -> np.ndarray:
    path = Path(prompt)
    if base is not None and not path.is_absolute():
      path = base / path
    if path.suffix in (".npy", ".npz"):
      return srun.read_embedding(path, text_len=cfg.text_len, text_dim=cfg.text_dim)
    raise srun.StreamInputError(
      f"prompt {prompt!r}: text prompts need the umT5 text encoder, which this checkpoint does not hold; "
      "give a path to a precomputed embedding (.npy / .npz, [text_len, text_dim])"
    )

  return resolve


def add_generate(sub) -> None:
  p = sub.add_parser(
    "generate",
    help="generate a video's latents for one prompt",
    description=(
      "Stream N latent frames for one prompt, block by block (3 frames, 4 denoising steps, one cache-writing "
      "pass), with a progress bar. The prompt is a precomputed embedding (.npy / .npz); the output is an .npz "
      "holding latents [B, T, C, H, W] (LongLive layout) and the settings that reproduce them."
    ),
  )
  p.add_argument("embedding", help="prompt embedding: .npy / .npz, [text_len, text_dim] or [B, text_len, text_dim]")
  p.add_argument("--out", required=True, help="output .npz")
  p.add_argument(
    "--offline", action="store_true", help="run all blocks in one compiled lax.scan (same output, no per-block bar)"
  )
  _add_stream_options(p)


def cmd_generate(a) -> int:
  opts = _opts(a)
  st = srun.load_streamer(a.checkpoint, opts)
  ctx = _resolver(st)(a.embedding)
  if a.offline:
    meta = srun.run_offline(st, ctx, opts=opts, out_path=a.out, prompt=a.embedding)
  else:
    meta = srun.run_stream(st, [ctx], [], opts=opts, out_path=a.out, prompts=[a.embedding], progress=not a.quiet)
  print(f"wrote {a.out}: {meta['frames']} latent frames in {meta['seconds']:.1f} s")
  return 0


def add_interactive(sub) -> None:
  p = sub.add_parser(
    "interactive",
    help="generate with prompt switches (LongLive jsonl, or live prompts from stdin)",
    description=(
      "Interactive generation with KV-recache at every prompt switch. PROMPTS is LongLive's jsonl: one video per "
      'line, {"prompts": [p0, p1, ...], "switch_frame_indices": [f1, ...]} (the indices may come from '
      "--switch-frames instead); each prompt is an embedding file path relative to the jsonl. With --live, the "
      "first prompt starts the video and every line typed on stdin (an embedding path) becomes the prompt from "
      f"the next block on; '{srun.QUIT}' stops early."
    ),
  )
  p.add_argument("prompts", help="jsonl prompt script, or with --live the first prompt's embedding file")
  p.add_argument("--out", required=True, help="output .npz (one video) or folder (several jsonl lines)")
  p.add_argument("--switch-frames", help="comma-separated latent frame indices of the switches (e.g. 40,80,120)")
  p.add_argument("--line", type=int, help="only this line of the jsonl (1-based)")
  p.add_argument("--live", action="store_true", help="read new prompts from stdin while generating")
  p.add_argument("--no-global-sink", action="store_true", help="recache rebuilds the sink too (global_sink: false)")
  p.add_argument(
    "--switch-mode", choices=SWITCH_MODES, default="recache", help="what a switch does to the cache (default recache)"
  )
  _add_stream_options(p)


def _parse_frames(text: str | None) -> list[int] | None:
  if text is None:
    return None
  try:
    return [int(x) for x in text.replace(",", " ").split()]
  except ValueError:
    raise srun.StreamInputError(f"--switch-frames {text!r}: expected comma-separated integers") from None


def cmd_interactive(a) -> int:
  opts = _opts(a)
  st = srun.load_streamer(a.checkpoint, opts)
  if a.live:
    resolve = _resolver(st)
    live = srun.LivePrompts(sys.stdin)
    print(f"live mode: type an embedding path to switch prompts, '{srun.QUIT}' to stop", file=sys.stderr)
    meta = srun.run_stream(
      st,
      [resolve(a.prompts)],
      [],
      opts=opts,
      out_path=a.out,
      prompts=[a.prompts],
      live=live,
      resolve=resolve,
      progress=not a.quiet,
    )
    print(f"wrote {a.out}: {meta['frames']} latent frames, switches at {meta['switch_frames']}")
    return 0
  script = srun.read_prompt_script(a.prompts, switch_frames=_parse_frames(a.switch_frames))
  if a.line is not None:
    script = [s for s in script if s.line == a.line]
    if not script:
      raise srun.StreamInputError(f"{a.prompts}: no prompt line {a.line}")
  resolve = _resolver(st, Path(a.prompts).parent)
  out = Path(a.out)
  for s in script:
    try:
      contexts = [resolve(p) for p in s.prompts]
    except srun.StreamInputError as e:
      raise srun.StreamInputError(f"{a.prompts}:{s.line}: {e}") from e
    switches = [Switch(f, i + 1) for i, f in enumerate(s.switch_frames)]
    target = out if len(script) == 1 else out / f"line{s.line:04d}.npz"
    try:
      meta = srun.run_stream(
        st, contexts, switches, opts=opts, out_path=target, prompts=s.prompts, progress=not a.quiet
      )
    except srun.StreamInputError as e:
      raise srun.StreamInputError(f"{a.prompts}:{s.line}: {e}") from e
    print(f"wrote {target}: {meta['frames']} latent frames, switches at {meta['switch_frames']}")
  return 0
