"""``longlive-jax generate`` and ``longlive-jax interactive``: streaming generation from the command line.

Every option, output path and prompt file is checked before the model is loaded (one
:class:`~longlive_jax.stream.run.StreamInputError` naming the culprit, exit status 2). Outputs are
written under temporary names and renamed into place; an existing output is replaced only with
``--overwrite``. Ctrl-C and SIGTERM stop after the current block and keep what was generated.

The output-path checks and :class:`_Target` (the files of one video) live in :mod:`longlive_jax.cli_outputs`
and are re-exported here.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

from longlive_jax.cli_outputs import (  # noqa: F401  (re-exported: the output checks live there)
  _FRAME_FILE,
  LATENTS_SUFFIX,
  OUT_SUFFIXES,
  VIDEO_SUFFIX,
  _check_common,
  _check_folder_creatable,
  _check_out_suffix,
  _check_png_dir,
  _check_writable_file,
  _frame_files,
  _need_vae,
  _Target,
)
from longlive_jax.config import ATTENTION_IMPLS
from longlive_jax.quant import QUANT_MODES
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
    "--height",
    type=int,
    help="latent height (default: the checkpoint's native resolution / the VAE's stride, else 60 = 480 px)",
  )
  p.add_argument(
    "--width", type=int, help="latent width (default: the checkpoint's native resolution / the VAE's stride, else 104)"
  )
  p.add_argument(
    "--seed", type=int, default=0, help="PRNG seed of the noise, 0 to 2**32 - 1 (block b draws from fold_in(seed, b))"
  )
  p.add_argument(
    "--block-frames", type=int, help="latent frames per block (num_frame_per_block; default: the checkpoint's, else 3)"
  )
  p.add_argument("--sink", type=int, help="sink frames kept forever (sink_size; default: the checkpoint's, else 3)")
  p.add_argument(
    "--window",
    type=int,
    help="attention window in frames, incl. sink (local_attn_size; default: the checkpoint's, else 12)",
  )
  p.add_argument(
    "--relative-rope", action="store_true", help="infinity mode: RoPE relative to the window, no 1024-frame limit"
  )
  p.add_argument(
    "--rope-horizon",
    type=int,
    help="absolute RoPE positions up to this latent frame, then the window's geometry kept (the sink no farther "
    "away; no length limit); 0: absolute positions (default: the checkpoint's, else 0)",
  )
  p.add_argument(
    "--context-noise", type=float, default=0.0, help="timestep of the cache-writing pass, 0 to 1000 (default 0)"
  )
  p.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default: the checkpoint's)")
  p.add_argument(
    "--attention",
    choices=ATTENTION_IMPLS,
    help="attention kernel: auto (cuDNN on GPU, splash on TPU, chunked for large calls), xla, chunked, "
    "cudnn (GPU, bfloat16), splash (TPU) "
    "(default: the checkpoint's attention_impl)",
  )
  add_quantize_option(p)
  p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_quantize_option(p) -> None:
  """``--quantize`` (shared by every command that loads the DiT for streaming)."""
  p.add_argument(
    "--quantize",
    choices=QUANT_MODES,
    help="quantise the DiT's attention and FFN weights after loading (post-training, qwix; each mode about halves "
    "the bf16 weight memory): int8 (int8 weights, dequantised per matmul), w8a8 (int8 weights and per-token int8 "
    "activations: int8 matmuls), fp8 (float8_e4m3fn weights and activations: FP8 matmuls on GPUs of compute "
    "capability 8.9+, emulated elsewhere); norms, modulation, embeddings and the head stay as they are "
    "(default: no quantisation)",
  )


def _resolve_checkpoint(a) -> dict:
  """Fills the defaults that come from the model: the checkpoint (the shipped toy-world model when none is
  given), the latent size (its native resolution) and the frame rate. Returns the checkpoint's metadata."""
  from longlive_jax import checkpoint
  from longlive_jax.toyworld.model import default_checkpoint

  if a.checkpoint is None:
    a.checkpoint = str(default_checkpoint())
  info = checkpoint.read_meta(a.checkpoint)
  meta = info.get("meta") or {}
  native = checkpoint.native_latent_size(info)  # pixels / the VAE's stride (8 for Wan2.1, 4 for the toy world)
  if a.height is None:
    a.height = native[0] if native else 60
  if a.width is None:
    a.width = native[1] if native else 104
  if a.fps is None:
    a.fps = float(meta.get("fps", 16.0))
  apply_trained_stream(a, info)
  return info


def apply_trained_stream(a, info: dict) -> None:
  """Fills ``--block-frames`` / ``--sink`` / ``--window`` left unset with what the checkpoint was trained with
  (:func:`longlive_jax.checkpoint.trained_stream`); flags given stay."""
  from longlive_jax import checkpoint

  trained = checkpoint.trained_stream(info)
  for arg, key in (("block_frames", "block_frames"), ("sink", "sink_frames"), ("window", "window_frames")):
    if getattr(a, arg, None) is None:
      setattr(a, arg, trained[key])
  if getattr(a, "rope_horizon", None) is None:  # --relative-rope asks for the other way to bound positions
    a.rope_horizon = 0 if getattr(a, "relative_rope", False) else trained["rope_horizon"]


def enable_compile_cache() -> None:
  """JAX's persistent compilation cache (``$LONGLIVE_JAX_CACHE``, default ``~/.cache/longlive_jax/xla``): a
  second run of the same model and shape loads its compiled block step instead of compiling it (the first
  frame comes seconds sooner). ``LONGLIVE_JAX_CACHE=off`` disables it."""
  import jax

  where = os.environ.get("LONGLIVE_JAX_CACHE", str(Path.home() / ".cache" / "longlive_jax" / "xla"))
  if where.lower() in ("off", "0", "none", ""):
    return
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class _Model:
  """What the checks need before any loading: the options, the checkpoint folder and its DiT config."""

  def __init__(self, a):
    from longlive_jax.config import WanConfig
    from longlive_jax.convert.errors import CheckpointError

    info = _resolve_checkpoint(a)
    if info.get("config") is None:
      have = ", ".join(info.get("components") or {}) or "nothing"
      raise CheckpointError(f"{a.checkpoint}: holds no diffusion transformer (only: {have})")
    self.ckpt = a.checkpoint
    self.cfg = WanConfig.from_dict(info["config"])
    if getattr(a, "attention", None) is not None:  # StreamOptions.attention; load_streamer applies it
      self.cfg = self.cfg.replace(attention_impl=a.attention)
      self.cfg.replace(dtype=a.dtype or self.cfg.dtype)  # a ConfigError now if they cannot run together
    self.components = set(info.get("components") or {})
    self.opts = srun.StreamOptions(
      frames=a.frames,
      height=a.height,
      width=a.width,
      seed=a.seed,
      block_frames=a.block_frames,
      sink_frames=a.sink,
      window_frames=a.window,
      relative_rope=a.relative_rope,
      rope_horizon=a.rope_horizon,
      global_sink=not getattr(a, "no_global_sink", False),
      switch_mode=getattr(a, "switch_mode", "recache"),
      context_noise=a.context_noise,
      dtype=a.dtype,
      attention=getattr(a, "attention", None),
      quantize=getattr(a, "quantize", None),
    )
    srun.check_length(self.opts, self.cfg.rope_max_len)

  def load(self):
    enable_compile_cache()
    if self.opts.quantize == "fp8":
      from longlive_jax.quant.dit import fp8_execution

      if fp8_execution() == "emulated":
        _say(
          "longlive-jax: --quantize fp8 runs emulated here (no FP8 matmul units): FP8 values and memory, no speed-up"
        )
    return srun.load_streamer(self.ckpt, self.opts)


def _is_embedding(prompt: str) -> bool:
  return Path(prompt).suffix in (".npy", ".npz")


class _Prompts:
  """Turns prompts into embeddings: a ``.npy`` / ``.npz`` path (relative to ``base``) is read as is; text goes
  through the checkpoint's umT5 encoder (loaded on first use, released by :meth:`release`).

  :meth:`check` validates a prompt before the model is loaded: embedding files are read (shape, width,
  values), text needs the checkpoint's text encoder.
  """

  def __init__(self, model: _Model, base: Path | None = None):
    self.cfg, self.ckpt, self.base, self.components = model.cfg, model.ckpt, base, model.components
    self.encoder = None

  def _read(self, prompt: str) -> np.ndarray:
    path = Path(prompt)
    if self.base is not None and not path.is_absolute():
      path = self.base / path
    return srun.read_embedding(path, text_len=self.cfg.text_len, text_dim=self.cfg.text_dim)

  def check(self, prompt: str) -> int:
    """The prompt's batch size (1 for text); a :class:`StreamInputError` naming it if it cannot be used."""
    if _is_embedding(prompt):
      return int(self._read(prompt).shape[0])
    if "umt5" not in self.components:
      raise srun.StreamInputError(
        f"prompt {prompt!r}: text prompts need the umT5 text encoder, which {self.ckpt} does not hold; convert "
        "the whole model (longlive-jax convert --wan-dir ...) or give a precomputed embedding (.npy / .npz)"
      )
    return 1

  def __call__(self, prompt: str) -> np.ndarray:
    if _is_embedding(prompt):
      return self._read(prompt)
    self.check(prompt)
    if self.encoder is None:
      from longlive_jax import pipeline

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


# ----------------------------------------------------------------------------------------- commands


def _add_output_options(p) -> None:
  p.add_argument("--latents", help="also save the latents to this .npz when --out is a video")
  p.add_argument("--png-dir", help="also write every video frame as a PNG into this folder")
  p.add_argument("--fps", type=float, help="video frame rate (default: the checkpoint's, else 16 as LongLive)")
  p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist (default: refuse)")


def add_generate(sub) -> None:
  p = sub.add_parser(
    "generate",
    help="generate a video for one prompt",
    description=(
      "Stream N latent frames for one prompt, block by block (3 frames, 4 denoising steps, one cache-writing "
      "pass), with a progress bar. PROMPT is text (needs a whole-model checkpoint: longlive-jax convert --wan-dir) "
      "or a precomputed embedding (.npy / .npz). --out x.mp4 decodes each block with the VAE and appends it to the "
      "video as it is generated; --out x.npz saves latents [B, T, C, H, W] (LongLive layout) and the settings that "
      "reproduce them. Outputs are written under temporary names and renamed when complete; existing files are "
      "replaced only with --overwrite. Ctrl-C / SIGTERM stop after the current block and keep what was generated."
    ),
  )
  p.add_argument("prompt", help="the prompt text, or an embedding file: .npy / .npz, [text_len, text_dim]")
  p.add_argument("--out", required=True, help="output: .mp4 (video) or .npz (latents)")
  p.add_argument(
    "--offline", action="store_true", help="run the blocks in compiled lax.scan chunks (latents only, no video)"
  )
  _add_output_options(p)
  _add_stream_options(p)


def _say(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _finish(command: str, out: Path, meta: dict, sink, stop: srun.StopSignals) -> int:
  _report(out, meta, sink)
  if meta["status"] == "interrupted" and stop.signum is not None:
    _say(f"longlive-jax {command}: interrupted by {signal.Signals(stop.signum).name}; kept what was generated")
    return 128 + stop.signum
  return 0


def _stream(
  command: str,
  a,
  *,
  st,
  target: _Target,
  model: _Model,
  stop: srun.StopSignals,
  contexts: list,
  prompts: list,
  **kw,
) -> int:
  """Streams one video into ``target`` (the video file is finished, or left out, even on failure); ``kw``
  goes to :func:`longlive_jax.stream.run.run_stream` (switches, live prompts). Returns the command's exit code."""
  switches = kw.pop("switches", [])
  sink = target.sink(model, a.fps)
  with stop.deferred():
    try:
      meta = srun.run_stream(
        st,
        contexts,
        switches,
        opts=model.opts,
        out_path=target.latents,
        prompts=prompts,
        on_block=sink,
        progress=not a.quiet,
        stop=stop,
        **kw,
      )
    finally:
      if sink is not None:
        sink.close()  # finishes the video under its temporary name, then renames it into place
  return _finish(command, target.out, meta, sink, stop)


def cmd_generate(a) -> int:
  out = Path(a.out)
  _check_out_suffix(out)
  _check_common(a)
  if a.offline and (out.suffix == VIDEO_SUFFIX or a.png_dir):
    raise srun.StreamInputError("--offline writes latents only: give --out x.npz and no --png-dir")
  with srun.StopSignals(say=_say) as stop:
    model = _Model(a)
    prompts = _Prompts(model)
    batch = prompts.check(a.prompt)
    target = _Target(out, latents=a.latents, png_dir=a.png_dir, batch=batch, overwrite=a.overwrite)
    _need_vae(model, target)
    st = model.load()
    ctx = prompts(a.prompt)
    prompts.release()
    if a.offline:
      with stop.deferred():
        meta = srun.run_offline(
          st, ctx, opts=model.opts, out_path=out, prompt=a.prompt, stop=stop, progress=not a.quiet
        )
      return _finish("generate", out, meta, None, stop)
    return _stream("generate", a, st=st, target=target, model=model, stop=stop, contexts=[ctx], prompts=[a.prompt])


def _report(out: Path, meta: dict, sink) -> None:
  what = f"{meta['frames']} latent frames"
  if sink is not None:
    what += f" -> {sink.frames} video frames"
  status = "" if meta["status"] == "complete" else f" ({meta['status']})"
  print(
    f"wrote {out}: {what} in {meta['seconds']:.1f} s (first block {meta['first_block_seconds']:.1f} s), "
    f"switches at {meta['switch_frames']}{status}"
  )


def add_interactive(sub) -> None:
  p = sub.add_parser(
    "interactive",
    help="generate with prompt switches (LongLive jsonl, or live prompts from stdin)",
    description=(
      "Interactive generation with KV-recache at every prompt switch. PROMPTS is LongLive's jsonl: one video per "
      'line, {"prompts": [p0, p1, ...], "switch_frame_indices": [f1, ...]} (the indices may come from '
      "--switch-frames instead, for lines without their own; switches happen at block boundaries: multiples of "
      "--block-frames); each prompt is an embedding file path relative to the jsonl, or text. With --live, the "
      "first prompt starts the video and every line typed on stdin (text or an embedding path) becomes the prompt "
      f"from the next block on (a line that cannot be used is reported and ignored); '{srun.QUIT}' stops early."
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


def _cmd_live(a, stop: srun.StopSignals) -> int:
  out = Path(a.out)
  _check_out_suffix(out)
  if a.switch_frames is not None or a.line is not None:
    raise srun.StreamInputError("--switch-frames and --line go with a jsonl script, not --live (type the prompts)")
  model = _Model(a)
  prompts = _Prompts(model)  # kept loaded: typed prompts are encoded as they come
  batch = prompts.check(a.prompts)
  target = _Target(out, latents=a.latents, png_dir=a.png_dir, batch=batch, overwrite=a.overwrite)
  _need_vae(model, target)
  st = model.load()
  first = prompts(a.prompts)
  live = srun.LivePrompts(sys.stdin)
  print(f"live mode: type a prompt (or an embedding path) to switch, '{srun.QUIT}' to stop", file=sys.stderr)
  return _stream(
    "interactive",
    a,
    st=st,
    target=target,
    model=model,
    stop=stop,
    contexts=[first],
    prompts=[a.prompts],
    live=live,
    resolve=prompts,
  )


def cmd_interactive(a) -> int:
  _check_common(a)
  if a.line is not None and a.line < 1:
    raise srun.StreamInputError(f"--line {a.line}: lines are numbered from 1")
  with srun.StopSignals(say=_say) as stop:
    if a.live:
      return _cmd_live(a, stop)
    return _cmd_script(a, stop)


def _cmd_script(a, stop: srun.StopSignals) -> int:
  out = Path(a.out)
  model = _Model(a)
  script = srun.read_prompt_script(a.prompts, switch_frames=_parse_frames(a.switch_frames))
  if a.line is not None:
    script = [s for s in script if s.line == a.line]
    if not script:
      raise srun.StreamInputError(f"{a.prompts}: no prompt line {a.line}")
  folder = len(script) > 1 or not out.suffix
  if folder:
    if out.suffix:
      raise srun.StreamInputError(
        f"--out {out}: {a.prompts} has {len(script)} lines, one video each; give a folder (each line is written "
        "as lineNNNN.mp4 into it) or pick one line with --line"
      )
    if out.exists() and not out.is_dir():
      raise srun.StreamInputError(f"--out {out}: is a file, not a folder")
    if a.latents is not None and len(script) > 1:
      raise srun.StreamInputError(f"--latents {a.latents}: one file cannot hold {len(script)} videos; use --line")
  else:
    _check_out_suffix(out)
  prompts = _Prompts(model, Path(a.prompts).parent)
  targets = {}
  for s in script:
    where = f"{a.prompts}:{s.line}"
    try:
      srun.check_switches([Switch(f, i + 1) for i, f in enumerate(s.switch_frames)], num_frames=model.opts.frames,
                          num_prompts=len(s.prompts))  # fmt: skip
    except ValueError as e:
      raise srun.StreamInputError(f"{where}: {e}") from e
    srun.check_switch_frames(s.switch_frames, opts=model.opts, where=f"{where}: switch frame")
    batches = set()
    for p in s.prompts:
      try:
        batches.add(prompts.check(p))
      except srun.StreamInputError as e:
        raise srun.StreamInputError(f"{where}: {e}") from e
    if len(batches) > 1:
      raise srun.StreamInputError(f"{where}: prompt embeddings have different batch sizes: {sorted(batches)}")
    target = out / f"line{s.line:04d}{VIDEO_SUFFIX}" if folder else out
    png = a.png_dir and (str(Path(a.png_dir) / f"line{s.line:04d}") if len(script) > 1 else a.png_dir)
    targets[s.line] = _Target(target, latents=a.latents, png_dir=png, batch=batches.pop(), overwrite=a.overwrite)
    _need_vae(model, targets[s.line])
  st = model.load()
  encoded = {}
  for s in script:  # every prompt encoded up front (as upstream), then the text encoder is released
    try:
      encoded[s.line] = [prompts(p) for p in s.prompts]
    except srun.StreamInputError as e:
      raise srun.StreamInputError(f"{a.prompts}:{s.line}: {e}") from e
  prompts.release()
  for s in script:
    switches = [Switch(f, i + 1) for i, f in enumerate(s.switch_frames)]
    try:
      code = _stream(
        "interactive",
        a,
        st=st,
        target=targets[s.line],
        model=model,
        stop=stop,
        contexts=encoded[s.line],
        prompts=s.prompts,
        switches=switches,
      )
    except srun.StreamInputError as e:
      raise srun.StreamInputError(f"{a.prompts}:{s.line}: {e}") from e
    if code:
      return code  # interrupted: the next lines are not started
  return 0
