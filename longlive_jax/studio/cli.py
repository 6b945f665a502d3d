"""``longlive-jax serve``: the studio's command line (options checked before anything loads)."""

from __future__ import annotations

import math
from pathlib import Path

from longlive_jax.cli_stream import add_quantize_option
from longlive_jax.config import ATTENTION_IMPLS
from longlive_jax.stream import run as srun
from longlive_jax.stream.driver import SWITCH_MODES

DEFAULT_RECORDINGS = "studio-recordings"


def add_serve(sub) -> None:
  p = sub.add_parser(
    "serve",
    help="the studio: steer a live video from a web page",
    description=(
      "A local web app on the streaming engine: the video plays in the page as it is generated, a typed prompt "
      "takes over at the next block (KV-recache, or keep / clear), with pause, restart with a new seed, live "
      "figures and downloads of each take (mp4, LongLive jsonl that 'longlive-jax interactive' replays bit for "
      "bit, latents). Listens on 127.0.0.1 unless --host says otherwise; writes only into --recordings."
    ),
  )
  p.add_argument(
    "--checkpoint",
    help="whole-model folder (DiT, VAE, text encoder; from 'longlive-jax convert --wan-dir' or 'longlive-jax "
    "toyworld assemble'; default: the shipped toy-world model)",
  )
  p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
  p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
  p.add_argument(
    "--recordings", default=DEFAULT_RECORDINGS, help=f"folder for the takes (default ./{DEFAULT_RECORDINGS})"
  )
  p.add_argument("--prompt", help="the first take's prompt (default: an example for the toy world, else typed)")
  p.add_argument("--seed", type=int, default=0, help="seed of the first take (default 0)")
  p.add_argument("--switch-mode", choices=SWITCH_MODES, default="recache", help="first take's switch mode")
  p.add_argument(
    "--frames", type=int, help="latent frames a take lasts at most (default: the model's RoPE table, 1024)"
  )
  p.add_argument(
    "--height", type=int, help="latent height (default: the checkpoint's native resolution / the VAE's stride)"
  )
  p.add_argument(
    "--width", type=int, help="latent width (default: the checkpoint's native resolution / the VAE's stride)"
  )
  p.add_argument("--fps", type=float, help="playback frame rate (default: the checkpoint's, else 16)")
  p.add_argument("--block-frames", type=int, help="latent frames per block (default: the checkpoint's, else 3)")
  p.add_argument("--sink", type=int, help="sink frames (default: the checkpoint's, else 3)")
  p.add_argument(
    "--window", type=int, help="attention window in frames, incl. sink (default: the checkpoint's, else 12)"
  )
  p.add_argument("--relative-rope", action="store_true", help="infinity mode: takes without a length limit")
  p.add_argument(
    "--rope-horizon",
    type=int,
    help="absolute RoPE positions up to this latent frame, then the window's geometry kept (no length limit); "
    "0: absolute positions (default: the checkpoint's, else 0)",
  )
  p.add_argument("--no-global-sink", action="store_true", help="recache rebuilds the sink too")
  p.add_argument("--context-noise", type=float, default=0.0, help="timestep of the cache-writing pass (default 0)")
  p.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default: the checkpoint's)")
  p.add_argument(
    "--attention", choices=ATTENTION_IMPLS, help="attention kernel (default: the checkpoint's attention_impl)"
  )
  add_quantize_option(p)
  p.add_argument("--max-viewers", type=int, default=4, help="viewers at once; more are refused politely (default 4)")
  p.add_argument("--max-prompt-chars", type=int, default=300, help="longest prompt in characters (default 300)")
  p.add_argument(
    "--no-realtime", action="store_true", help="generate as fast as possible (viewers skip frames to stay live)"
  )


def _check_folder(folder: Path) -> None:
  for d in [folder, *folder.parents]:
    if d.exists():
      if not d.is_dir():
        raise srun.StreamInputError(f"--recordings {folder}: {d} is a file, not a folder")
      return


def cmd_serve(a) -> int:
  from longlive_jax import checkpoint
  from longlive_jax.cli_stream import apply_trained_stream
  from longlive_jax.config import WanConfig
  from longlive_jax.convert.errors import CheckpointError
  from longlive_jax.studio.engine import Engine, model_defaults
  from longlive_jax.studio.server import check_port, serve
  from longlive_jax.studio.session import TOY_PROMPT, Studio
  from longlive_jax.toyworld.model import default_checkpoint

  if not 0 <= a.port <= 65535:
    raise srun.StreamInputError(f"--port {a.port}: must be in [0, 65535]")
  if a.max_viewers < 1:
    raise srun.StreamInputError(f"--max-viewers {a.max_viewers}: must be at least 1")
  if a.max_prompt_chars < 1:
    raise srun.StreamInputError(f"--max-prompt-chars {a.max_prompt_chars}: must be at least 1")
  if a.fps is not None and not (math.isfinite(a.fps) and a.fps > 0):
    raise srun.StreamInputError(f"--fps {a.fps:g}: must be a positive frame rate")
  recordings = Path(a.recordings)
  _check_folder(recordings)
  ckpt = a.checkpoint if a.checkpoint is not None else str(default_checkpoint())
  info = checkpoint.read_meta(ckpt)
  if info.get("config") is None:
    raise CheckpointError(f"{ckpt}: holds no diffusion transformer")
  cfg = WanConfig.from_dict(info["config"])
  if a.attention is not None:  # a ConfigError (exit 2) now if the dtype cannot run it
    cfg.replace(attention_impl=a.attention, dtype=a.dtype or cfg.dtype)
  d = model_defaults(ckpt)
  apply_trained_stream(a, info)  # what the model was trained with, unless the flags say otherwise
  limit = None if a.relative_rope or a.rope_horizon else cfg.rope_max_len // a.block_frames * a.block_frames
  frames = a.frames if a.frames is not None else (limit or a.block_frames)
  opts = srun.StreamOptions(
    frames=frames,
    height=a.height or d.height,
    width=a.width or d.width,
    seed=a.seed,
    block_frames=a.block_frames,
    sink_frames=a.sink,
    window_frames=a.window,
    relative_rope=a.relative_rope,
    rope_horizon=a.rope_horizon,
    global_sink=not a.no_global_sink,
    switch_mode=a.switch_mode,
    context_noise=a.context_noise,
    dtype=a.dtype,
    attention=a.attention,
    quantize=a.quantize,
  )
  srun.check_length(opts, cfg.rope_max_len)
  try:
    check_port(a.host, a.port)
  except OSError as e:
    raise srun.StreamInputError(f"--host {a.host} --port {a.port}: cannot listen there ({e}); pick another") from e
  fps = a.fps or d.fps
  prompt = a.prompt if a.prompt is not None else (TOY_PROMPT if d.toyworld else None)
  max_frames = a.frames

  def load() -> Engine:
    return Engine(ckpt, opts, fps=fps, max_frames=max_frames, max_prompt_chars=a.max_prompt_chars)

  studio = Studio(
    load,
    recordings=recordings,
    first_prompt=prompt,
    seed=a.seed,
    switch_mode=a.switch_mode,
    realtime=not a.no_realtime,
    checkpoint=a.checkpoint,
  )
  return serve(studio, host=a.host, port=a.port, max_viewers=a.max_viewers)
