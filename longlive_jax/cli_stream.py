"""``longlive-jax generate`` and ``longlive-jax interactive``: streaming generation from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from longlive_jax.stream import run as srun
from longlive_jax.stream.driver import SWITCH_MODES, Switch


def _add_stream_options(p) -> None:
  p.add_argument(
    "--checkpoint",
    help="model folder written by 'longlive-jax convert' or 'longlive-jax toyworld assemble' "
    "(default: the shipped toy-world model)",
  )
  p.add_argument("--frames", type=int, default=120, help="latent frames to generate, a multiple of 3 (default 120)")
  p.add_argument(
    "--height", type=int, help="latent height (default: the checkpoint's native resolution / 8, else 60 = 480 px)"
  )
  p.add_argument("--width", type=int, help="latent width (default: the checkpoint's native resolution / 8, else 104)")
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


def _resolve_checkpoint(a) -> None:
  """Fills the defaults that come from the model: the checkpoint (the shipped toy-world model when none is
  given), the latent size (its native resolution) and the frame rate."""
  from longlive_jax import checkpoint
  from longlive_jax.toyworld.model import default_checkpoint

  if a.checkpoint is None:
    a.checkpoint = str(default_checkpoint())
  meta = checkpoint.read_meta(a.checkpoint).get("meta") or {}
  native = meta.get("native_resolution")
  stride = 8  # the Wan VAE's spatial stride
  if a.height is None:
    a.height = native[0] // stride if native else 60
  if a.width is None:
    a.width = native[1] // stride if native else 104
  if a.fps is None:
    a.fps = float(meta.get("fps", 16.0))


def enable_compile_cache() -> None:
  """JAX's persistent compilation cache (``$LONGLIVE_JAX_CACHE``, default ``~/.cache/longlive_jax/xla``): a
  second run of the same model and shape loads its compiled block step instead of compiling it (the first
  frame comes seconds sooner). ``LONGLIVE_JAX_CACHE=off`` disables it."""
  import os

  import jax

  where = os.environ.get("LONGLIVE_JAX_CACHE", str(Path.home() / ".cache" / "longlive_jax" / "xla"))
  if where.lower() in ("off", "0", "none", ""):
    return
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _opts(a) -> srun.StreamOptions:
  enable_compile_cache()
  _resolve_checkpoint(a)
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


def _is_embedding(prompt: str) -> bool:
  return Path(prompt).suffix in (".npy", ".npz")


class _Prompts:
  """Turns prompts into embeddings: a ``.npy`` / ``.npz`` path (relative to ``base``) is read as is; text goes
  through the checkpoint's umT5 encoder (loaded on first use, released by :meth:`release`)."""

  def __init__(self, streamer, checkpoint_dir: str, base: Path | None = None):
    self.cfg, self.ckpt, self.base = streamer.cfg, checkpoint_dir, base
    self.encoder = None

  def __call__(self, prompt: str) -> np.ndarray:
    if _is_embedding(prompt):
      path = Path(prompt)
      if self.base is not None and not path.is_absolute():
        path = self.base / path
      return srun.read_embedding(path, text_len=self.cfg.text_len, text_dim=self.cfg.text_dim)
    if self.encoder is None:
      from longlive_jax import pipeline

      if not pipeline.has_component(self.ckpt, "umt5"):
        raise srun.StreamInputError(
          f"prompt {prompt!r}: text prompts need the umT5 text encoder, which {self.ckpt} does not hold; convert "
          "the whole model (longlive-jax convert --wan-dir ...) or give a precomputed embedding (.npy / .npz)"
        )
      self.encoder = pipeline.TextEncoder(self.ckpt, text_len=self.cfg.text_len)
    from longlive_jax.text.tokenizer import TokenizerError

    try:
      return self.encoder([prompt])
    except TokenizerError as e:  # e.g. a word outside a closed vocabulary: names the word, lists the vocabulary
      raise srun.StreamInputError(str(e)) from e

  def release(self) -> None:
    if self.encoder is not None:
      self.encoder.release()
      self.encoder = None


def _outputs(a, checkpoint_dir: str, out: Path):
  """``(latents_path | None, video sink | None)`` for ``--out`` (.npz latents, or .mp4 video) and ``--png-dir``."""
  video = out if out.suffix == ".mp4" else None
  latents = getattr(a, "latents", None) or (None if video is not None else out)
  sink = None
  if video is not None or getattr(a, "png_dir", None):
    from longlive_jax import pipeline

    pipeline.require_components(checkpoint_dir, ["vae"], why="writing video")
    sink = pipeline.VideoSink(checkpoint_dir, video_path=video, png_dir=a.png_dir, fps=a.fps)
  return latents, sink


def _add_output_options(p) -> None:
  p.add_argument("--latents", help="also save the latents to this .npz when --out is a video")
  p.add_argument("--png-dir", help="also write every video frame as a PNG into this folder")
  p.add_argument("--fps", type=float, help="video frame rate (default: the checkpoint's, else 16 as LongLive)")


def add_generate(sub) -> None:
  p = sub.add_parser(
    "generate",
    help="generate a video for one prompt",
    description=(
      "Stream N latent frames for one prompt, block by block (3 frames, 4 denoising steps, one cache-writing "
      "pass), with a progress bar. PROMPT is text (needs a whole-model checkpoint: longlive-jax convert --wan-dir) "
      "or a precomputed embedding (.npy / .npz). --out x.mp4 decodes each block with the VAE and appends it to the "
      "video as it is generated; --out x.npz saves latents [B, T, C, H, W] (LongLive layout) and the settings that "
      "reproduce them."
    ),
  )
  p.add_argument("prompt", help="the prompt text, or an embedding file: .npy / .npz, [text_len, text_dim]")
  p.add_argument("--out", required=True, help="output: .mp4 (video) or .npz (latents)")
  p.add_argument(
    "--offline", action="store_true", help="run all blocks in one compiled lax.scan (latents only, no per-block bar)"
  )
  _add_output_options(p)
  _add_stream_options(p)


def cmd_generate(a) -> int:
  opts = _opts(a)
  st = srun.load_streamer(a.checkpoint, opts)
  prompts = _Prompts(st, a.checkpoint)
  ctx = prompts(a.prompt)
  prompts.release()
  out = Path(a.out)
  if a.offline:
    if out.suffix == ".mp4":
      raise srun.StreamInputError("--offline writes latents only: give --out x.npz")
    meta = srun.run_offline(st, ctx, opts=opts, out_path=out, prompt=a.prompt)
    print(f"wrote {out}: {meta['frames']} latent frames in {meta['seconds']:.1f} s")
    return 0
  latents, sink = _outputs(a, a.checkpoint, out)
  try:
    meta = srun.run_stream(
      st, [ctx], [], opts=opts, out_path=latents, prompts=[a.prompt], on_block=sink, progress=not a.quiet
    )
  finally:
    if sink is not None:
      sink.close()
  _report(out, meta, sink)
  return 0


def _report(out: Path, meta: dict, sink) -> None:
  what = f"{meta['frames']} latent frames"
  if sink is not None:
    what += f" -> {sink.frames} video frames"
  print(
    f"wrote {out}: {what} in {meta['seconds']:.1f} s (first block {meta['first_block_seconds']:.1f} s), "
    f"switches at {meta['switch_frames']}"
  )


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
  p.add_argument("prompts", help="jsonl prompt script, or with --live the first prompt (text or embedding file)")
  p.add_argument(
    "--out", required=True, help="output .mp4 or .npz (one video), or a folder (several jsonl lines: .mp4 each)"
  )
  p.add_argument("--switch-frames", help="comma-separated latent frame indices of the switches (e.g. 40,80,120)")
  p.add_argument("--line", type=int, help="only this line of the jsonl (1-based)")
  p.add_argument("--live", action="store_true", help="read new prompts from stdin while generating")
  p.add_argument("--no-global-sink", action="store_true", help="recache rebuilds the sink too (global_sink: false)")
  p.add_argument(
    "--switch-mode", choices=SWITCH_MODES, default="recache", help="what a switch does to the cache (default recache)"
  )
  _add_output_options(p)
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
    prompts = _Prompts(st, a.checkpoint)  # kept loaded: typed prompts are encoded as they come
    live = srun.LivePrompts(sys.stdin)
    print(f"live mode: type a prompt (or an embedding path) to switch, '{srun.QUIT}' to stop", file=sys.stderr)
    out = Path(a.out)
    latents, sink = _outputs(a, a.checkpoint, out)
    try:
      meta = srun.run_stream(
        st,
        [prompts(a.prompts)],
        [],
        opts=opts,
        out_path=latents,
        prompts=[a.prompts],
        live=live,
        resolve=prompts,
        on_block=sink,
        progress=not a.quiet,
      )
    finally:
      if sink is not None:
        sink.close()
    _report(out, meta, sink)
    return 0
  script = srun.read_prompt_script(a.prompts, switch_frames=_parse_frames(a.switch_frames))
  if a.line is not None:
    script = [s for s in script if s.line == a.line]
    if not script:
      raise srun.StreamInputError(f"{a.prompts}: no prompt line {a.line}")
  prompts = _Prompts(st, a.checkpoint, Path(a.prompts).parent)
  encoded = {}
  for s in script:  # every prompt encoded up front (as upstream), then the text encoder is released
    try:
      encoded[s.line] = [prompts(p) for p in s.prompts]
    except srun.StreamInputError as e:
      raise srun.StreamInputError(f"{a.prompts}:{s.line}: {e}") from e
  prompts.release()
  out = Path(a.out)
  for s in script:
    switches = [Switch(f, i + 1) for i, f in enumerate(s.switch_frames)]
    target = out if (len(script) == 1 and out.suffix) else out / f"line{s.line:04d}.mp4"
    latents, sink = _outputs(a, a.checkpoint, target)
    try:
      meta = srun.run_stream(
        st,
        encoded[s.line],
        switches,
        opts=opts,
        out_path=latents,
        prompts=s.prompts,
        on_block=sink,
        progress=not a.quiet,
      )
    except srun.StreamInputError as e:
      raise srun.StreamInputError(f"{a.prompts}:{s.line}: {e}") from e
    finally:
      if sink is not None:
        sink.close()
    _report(target, meta, sink)
  return 0
