"""Running a stream from files: the logic behind ``longlive-jax generate`` / ``interactive``.

Inputs until the text encoder is wired in are precomputed prompt embeddings (``.npy`` or
``.npz``, ``[text_len, text_dim]`` or ``[B, text_len, text_dim]``); outputs are latents in
an ``.npz`` (LongLive layout ``[B, T, C, H, W]``) with the prompts, switch frames and seed
needed to reproduce them. Every user mistake raises :class:`StreamInputError` naming the
file, line or option at fault. A stream stopped early (Ctrl-C, error) still writes the
blocks generated so far, marked ``partial``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import layout
from longlive_jax.stream.cache import StreamSpec
from longlive_jax.stream.driver import SWITCH_MODES, Streamer, Switch, check_switches
from longlive_jax.stream.noise import BlockShape, KeyNoise

EMBEDDING_KEYS = ("prompt_embeds", "context", "embedding", "embeddings")
QUIT = ":quit"


class StreamInputError(ValueError):
  """A user input (file, option, prompt script) that cannot drive a stream."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamOptions:
  """What to generate. Sizes are latent: 60 x 104 latents = 480 x 832 pixels (LongLive)."""

  frames: int = 120
  height: int = 60
  width: int = 104
  seed: int = 0
  block_frames: int = 3
  sink_frames: int = 3
  window_frames: int = 12
  relative_rope: bool = False
  global_sink: bool = True
  switch_mode: str = "recache"
  context_noise: float = 0.0
  dtype: str | None = None

  def __post_init__(self):
    if self.frames <= 0 or self.frames % self.block_frames:
      raise StreamInputError(
        f"--frames {self.frames}: must be a positive multiple of the block size ({self.block_frames} latent frames)"
      )
    if self.height % 2 or self.width % 2 or self.height <= 0 or self.width <= 0:
      raise StreamInputError(f"latent size {self.height}x{self.width}: height and width must be positive and even")
    if self.switch_mode not in SWITCH_MODES:
      raise StreamInputError(f"switch mode {self.switch_mode!r}: choose one of {', '.join(SWITCH_MODES)}")

  def spec(self) -> StreamSpec:
    try:
      return StreamSpec(
        block_frames=self.block_frames,
        sink_frames=self.sink_frames,
        window_frames=self.window_frames,
        tokens_per_frame=(self.height // 2) * (self.width // 2),
        relative_rope=self.relative_rope,
      )
    except ValueError as e:
      raise StreamInputError(str(e)) from e


def load_streamer(checkpoint_dir: str | Path, opts: StreamOptions) -> Streamer:
  """A :class:`Streamer` for a converted checkpoint (a separate LoRA adapter is merged in)."""
  from longlive_jax import checkpoint
  from longlive_jax.model import lora as model_lora
  from longlive_jax.model.params import model_from_params

  cfg, params, adapter, info = checkpoint.load(checkpoint_dir, dtype=opts.dtype)
  if adapter is not None:
    params = model_lora.merge(params, adapter, scale=float(info["lora"]["scale"]))
  if cfg.param_dtype != cfg.dtype:  # cast once here, not in every compiled pass (e.g. bfloat16-stored weights)
    params = jax.tree.map(lambda p: jnp.asarray(p, cfg.dtype), params)
    cfg = cfg.replace(param_dtype=cfg.dtype)
  model = model_from_params(cfg, params)
  return Streamer(
    model,
    opts.spec(),
    context_t=opts.context_noise,
    global_sink=opts.global_sink,
    switch_mode=opts.switch_mode,
  )


def read_embedding(path: str | Path, *, text_len: int, text_dim: int) -> np.ndarray:
  """A prompt embedding ``[B, text_len, text_dim]`` float32 from ``.npy`` / ``.npz``.

  Shorter sequences are zero-padded to ``text_len`` (the DiT expects zero rows past the prompt).
  """
  path = Path(path)
  if not path.is_file():
    raise StreamInputError(f"{path}: no such embedding file")
  try:
    data = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise StreamInputError(f"{path}: not a .npy/.npz array file ({e})") from e
  if isinstance(data, np.lib.npyio.NpzFile):
    keys = list(data.keys())
    key = next((k for k in EMBEDDING_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
    if key is None:
      raise StreamInputError(f"{path}: holds {keys}; name the embedding one of {EMBEDDING_KEYS} or store one array")
    arr = data[key]
  else:
    arr = data
  if arr.ndim == 2:
    arr = arr[None]
  if arr.ndim != 3 or arr.shape[2] != text_dim:
    raise StreamInputError(
      f"{path}: embedding has shape {arr.shape}; the model expects [text_len <= {text_len}, {text_dim}] "
      f"(or with a batch axis): width {arr.shape[-1]} != text_dim {text_dim}"
    )
  if arr.shape[1] > text_len:
    raise StreamInputError(f"{path}: embedding has {arr.shape[1]} tokens; the model takes at most {text_len}")
  if not np.all(np.isfinite(arr)):
    raise StreamInputError(f"{path}: embedding contains NaN or inf")
  out = np.zeros((arr.shape[0], text_len, text_dim), np.float32)
  out[:, : arr.shape[1]] = arr
  return out


@dataclasses.dataclass(frozen=True)
class PromptScript:
  """One line of LongLive's interactive jsonl: segment prompts and the frames where they start."""

  line: int
  prompts: tuple[str, ...]
  switch_frames: tuple[int, ...]


def read_prompt_script(path: str | Path, *, switch_frames: Sequence[int] | None = None) -> list[PromptScript]:
  """Parses ``{"prompts": [...], "switch_frame_indices": [...]?}`` per line (LongLive's ``MultiTextDataset``).

  ``switch_frames`` (LongLive's config ``switch_frame_indices``) applies to lines without their own.
  A line with P prompts needs P - 1 switch frames.
  """
  path = Path(path)
  if not path.is_file():
    raise StreamInputError(f"{path}: no such prompt file")
  out = []
  for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not raw.strip():
      continue
    try:
      rec = json.loads(raw)
    except json.JSONDecodeError as e:
      raise StreamInputError(f"{path}:{i}: not valid JSON ({e.msg})") from e
    prompts = rec.get("prompts") if isinstance(rec, dict) else None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
      raise StreamInputError(f'{path}:{i}: expected {{"prompts": ["...", ...]}} with non-empty strings')
    sw = rec.get("switch_frame_indices", switch_frames)
    if isinstance(sw, str):
      sw = [int(x) for x in sw.replace(",", " ").split()]
    sw = tuple(int(x) for x in (sw or ()))
    if len(sw) != len(prompts) - 1:
      raise StreamInputError(
        f"{path}:{i}: {len(prompts)} prompts need {len(prompts) - 1} switch frame indices, got {len(sw)} {list(sw)}"
      )
    out.append(PromptScript(i, tuple(prompts), sw))
  if not out:
    raise StreamInputError(f"{path}: no prompts")
  return out


def save_latents(path: str | Path, latents: np.ndarray, **meta) -> Path:
  """Writes ``latents`` (ours ``[B, T, H, W, C]``) as LongLive ``[B, T, C, H, W]`` atomically, with ``meta``."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.partial")
  with open(tmp, "wb") as f:
    np.savez(f, latents=layout.to_longlive(latents), layout=np.asarray("BTCHW"), meta=np.asarray(json.dumps(meta)))
  os.replace(tmp, path)
  return path


class LivePrompts:
  """Prompts typed while generating: a thread reads lines from ``stream`` into a queue.

  Each non-empty line is a new prompt (resolved by the caller); ``:quit`` ends the stream.
  """

  def __init__(self, stream: Iterable[str]):
    self.queue: queue.Queue[str] = queue.Queue()
    self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
    self._thread.start()

  def _read(self, stream):
    for line in stream:
      if line.strip():
        self.queue.put(line.strip())

  def poll(self) -> str | None:
    try:
      return self.queue.get_nowait()
    except queue.Empty:
      return None


def run_stream(
  streamer: Streamer,
  contexts: Sequence[np.ndarray],
  switches: Sequence[Switch],
  *,
  opts: StreamOptions,
  out_path: str | Path | None,
  prompts: Sequence[str],
  live: LivePrompts | None = None,
  resolve: Callable[[str], np.ndarray] | None = None,
  on_block: Callable[[np.ndarray], None] | None = None,
  progress: bool = True,
) -> dict:
  """Generates ``opts.frames`` latent frames with scheduled (and, with ``live``, typed) prompt switches.

  ``on_block(x0 [B, n, H, W, C])`` receives every block as soon as it exists (e.g. the streaming
  VAE decoder writing video). Returns a summary; the latents go to ``out_path`` (if given) even if
  generation stops early.
  """
  spec = streamer.spec
  nb = opts.frames // spec.block_frames
  batch = int(contexts[0].shape[0])
  if any(c.shape[0] != batch for c in contexts):
    raise StreamInputError(f"prompt embeddings have different batch sizes: {[c.shape[0] for c in contexts]}")
  try:
    check_switches(switches, num_frames=opts.frames, num_prompts=len(contexts))
    streamer.check_length(opts.frames)
  except ValueError as e:
    raise StreamInputError(str(e)) from e
  shape = BlockShape(
    batch=batch, frames=spec.block_frames, height=opts.height, width=opts.width, channels=streamer.cfg.in_dim
  )
  draws = KeyNoise(
    jax.random.key(opts.seed), shape=shape, num_steps=streamer.num_steps, context_eps=streamer.renoise_context
  )
  sess = streamer.session(draws, jnp.asarray(contexts[0]), batch=batch)
  prompts = list(prompts)
  first = prompts[0]
  pending = list(switches)
  done_switches: list[tuple[int, str]] = []
  blocks: list[np.ndarray] = []
  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=nb, desc="blocks", unit="block")
  t0 = time.perf_counter()
  t_first = None
  status = "complete"
  try:
    for blk in range(nb):
      if live is not None:
        line = live.poll()
        if line == QUIT:
          status = "stopped"
          break
        if line is not None:
          ctx = resolve(line)
          prompts.append(line)
          sess.switch(jnp.asarray(ctx), prompt=len(prompts) - 1)
      if pending and sess.frame >= pending[0].frame:
        sw = pending.pop(0)
        sess.switch(jnp.asarray(contexts[sw.prompt]), prompt=sw.prompt)
      _, x0, info = sess.next_block()
      if on_block is not None:
        on_block(x0)  # the device array: the VAE decode is dispatched before the host copy below
      blocks.append(np.asarray(x0))
      if info["switched_to"] is not None:
        start = sess.frame - spec.block_frames
        if start == 0:  # a prompt typed before the first block replaces the first prompt
          first = prompts[info["switched_to"]]
        else:
          done_switches.append((start, prompts[info["switched_to"]]))
      if t_first is None:
        t_first = time.perf_counter() - t0
      if bar is not None:
        steady = (time.perf_counter() - t0 - t_first) / max(blk, 1)
        fps = spec.block_frames / steady if blk else float("nan")
        bar.set_postfix_str(
          f"first block {t_first:.1f} s, {fps:.2f} latent frames/s, {4 * fps:.1f} video frames/s", refresh=False
        )
        bar.update(1)
  except KeyboardInterrupt:
    status = "interrupted"
  finally:
    if bar is not None:
      bar.close()
  if not blocks:
    raise StreamInputError("no block was generated: nothing written")
  seconds = time.perf_counter() - t0
  latents = np.concatenate(blocks, axis=1)  # [B, T, H, W, C]
  meta = {
    "status": status,
    "frames": int(latents.shape[1]),
    "seed": opts.seed,
    "prompts": [first] + [p for _, p in done_switches],
    "switch_frames": [f for f, _ in done_switches],
    "options": dataclasses.asdict(opts),
    "seconds": seconds,
    "first_block_seconds": t_first,
  }
  if out_path is not None:
    save_latents(out_path, latents, **meta)
  if status == "interrupted":
    raise KeyboardInterrupt
  return meta


def run_offline(streamer: Streamer, context: np.ndarray, *, opts: StreamOptions, out_path: str | Path, prompt: str):
  """All blocks in one compiled ``lax.scan`` (same draws, same output as :func:`run_stream`)."""
  spec = streamer.spec
  try:
    streamer.check_length(opts.frames)
  except ValueError as e:
    raise StreamInputError(str(e)) from e
  batch = int(context.shape[0])
  shape = BlockShape(
    batch=batch, frames=spec.block_frames, height=opts.height, width=opts.width, channels=streamer.cfg.in_dim
  )
  t0 = time.perf_counter()
  cross = streamer.encode(jnp.asarray(context))
  out, _ = streamer.generate_keyed(
    streamer.init_cache(batch=batch),
    jax.random.key(opts.seed),
    cross,
    num_blocks=opts.frames // spec.block_frames,
    shape=shape,
  )
  out = np.asarray(out)  # [nb, B, n, H, W, C]
  latents = out.transpose(1, 0, 2, 3, 4, 5).reshape(batch, opts.frames, *out.shape[3:])  # [B, T, H, W, C]
  meta = {
    "status": "complete",
    "frames": opts.frames,
    "seed": opts.seed,
    "prompts": [prompt],
    "switch_frames": [],
    "options": dataclasses.asdict(opts),
    "seconds": time.perf_counter() - t0,
  }
  save_latents(out_path, latents, **meta)
  return meta
