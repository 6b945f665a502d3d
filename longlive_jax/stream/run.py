"""Running a stream from files: the logic behind ``longlive-jax generate`` / ``interactive``.

Inputs until the text encoder is wired in are precomputed prompt embeddings (``.npy`` or
``.npz``, ``[text_len, text_dim]`` or ``[B, text_len, text_dim]``); outputs are latents in
an ``.npz`` (LongLive layout ``[B, T, C, H, W]``) with the prompts, switch frames and seed
needed to reproduce them. Every user mistake raises :class:`StreamInputError` naming the
file, line or option at fault. A stream stopped early (Ctrl-C, SIGTERM, ``:quit``, an error,
non-finite latents) still writes the blocks generated so far, with its ``status`` in the meta.

Latents go to disk block by block (:class:`LatentFile`), so memory does not grow with the
length of the video; the ``.npz`` appears under its final name only when complete.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import layout
from longlive_jax.config import ATTENTION_IMPLS
from longlive_jax.quant import QUANT_MODES
from longlive_jax.stream.cache import StreamSpec
from longlive_jax.stream.driver import SWITCH_MODES, Streamer, Switch, check_switches
from longlive_jax.stream.noise import BlockShape, KeyNoise

EMBEDDING_KEYS = ("prompt_embeds", "context", "embedding", "embeddings")
QUIT = ":quit"
MAX_SEED = 2**32 - 1  # jax.random.key keeps 32 bits: larger seeds would silently repeat smaller ones
MAX_TIMESTEP = 1000.0  # timesteps are raw floats in [0, 1000] (schedule.NUM_TRAIN_TIMESTEPS)
OFFLINE_CHUNK_BLOCKS = 8  # --offline scans this many blocks per compiled call (at most): Ctrl-C waits for one chunk


class StreamInputError(ValueError):
  """A user input (file, option, prompt script) that cannot drive a stream."""


class StreamFailure(RuntimeError):
  """The stream itself went wrong (e.g. non-finite latents); what came before was written."""


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
  attention: str | None = None  # overrides the checkpoint's attention_impl (auto, xla, chunked, cudnn, splash)
  quantize: str | None = None  # int8, w8a8 or fp8: quantise the DiT's large linear layers (longlive_jax.quant)

  def __post_init__(self):
    if self.block_frames < 1:
      raise StreamInputError(f"--block-frames {self.block_frames}: must be at least 1 latent frame")
    if self.frames <= 0 or self.frames % self.block_frames:
      raise StreamInputError(
        f"--frames {self.frames}: must be a positive multiple of the block size ({self.block_frames} latent frames)"
      )
    if self.height % 2 or self.width % 2 or self.height <= 0 or self.width <= 0:
      raise StreamInputError(
        f"--height {self.height} / --width {self.width}: the latent height and width must be positive and even"
      )
    if not 0 <= self.seed <= MAX_SEED:
      raise StreamInputError(f"--seed {self.seed}: must be in [0, 2**32 - 1 = {MAX_SEED}]")
    if self.sink_frames < 0:
      raise StreamInputError(f"--sink {self.sink_frames}: must be >= 0 frames")
    if self.window_frames <= self.sink_frames + self.block_frames:
      raise StreamInputError(
        f"--window {self.window_frames}: must exceed --sink + --block-frames ({self.sink_frames} + "
        f"{self.block_frames} = {self.sink_frames + self.block_frames}) so that at least one past frame is attended"
      )
    if not (math.isfinite(self.context_noise) and 0.0 <= self.context_noise <= MAX_TIMESTEP):
      raise StreamInputError(
        f"--context-noise {self.context_noise:g}: must be a timestep in [0, {MAX_TIMESTEP:g}] (0: a clean cache, "
        "as LongLive at inference)"
      )
    if self.attention is not None and self.attention not in ATTENTION_IMPLS:
      raise StreamInputError(f"--attention {self.attention!r}: choose one of {', '.join(ATTENTION_IMPLS)}")
    if self.quantize is not None and self.quantize not in QUANT_MODES:
      raise StreamInputError(f"--quantize {self.quantize!r}: choose one of {', '.join(QUANT_MODES)}")
    if self.switch_mode not in SWITCH_MODES:
      raise StreamInputError(f"switch mode {self.switch_mode!r}: choose one of {', '.join(SWITCH_MODES)}")
    self.spec()

  def spec(self, *, patch: tuple[int, int] = (2, 2)) -> StreamSpec:
    """The cache layout for a model with spatial ``patch`` (Wan2.1: 2x2; the toy world's DiT: 4x4)."""
    ph, pw = patch
    if self.height % ph or self.width % pw:
      raise StreamInputError(
        f"--height {self.height} / --width {self.width}: the latent size must be a multiple of the model's "
        f"patch ({ph}x{pw})"
      )
    try:
      return StreamSpec(
        block_frames=self.block_frames,
        sink_frames=self.sink_frames,
        window_frames=self.window_frames,
        tokens_per_frame=(self.height // ph) * (self.width // pw),
        relative_rope=self.relative_rope,
      )
    except ValueError as e:
      raise StreamInputError(str(e)) from e


def check_length(opts: StreamOptions, rope_max_len: int) -> None:
  """Absolute RoPE tables hold ``rope_max_len`` positions: longer videos need ``--relative-rope``."""
  if not opts.relative_rope and opts.frames > rope_max_len:
    raise StreamInputError(
      f"--frames {opts.frames}: exceeds the {rope_max_len}-frame RoPE table of absolute positions (the model's "
      "rope_max_len); add --relative-rope (infinity mode: positions relative to the attention window, no length "
      "limit) for longer videos"
    )


def check_switch_frames(frames: Sequence[int], *, opts: StreamOptions, where: str = "switch frame") -> None:
  """Switch frames must be block boundaries (multiples of ``opts.block_frames``) inside the video.

  The streaming engine would move a switch at frame 10 to the next block start (12); the command line
  refuses it instead, naming the nearest valid frames.
  """
  bf = opts.block_frames
  for f in frames:
    if f % bf == 0:
      continue
    lo, hi = f // bf * bf, (f // bf + 1) * bf
    near = [str(v) for v in (lo, hi) if 0 < v < opts.frames]
    hint = f"; the nearest valid frames are {' and '.join(near)}" if near else ""
    raise StreamInputError(
      f"{where} {f}: switches happen at block boundaries, i.e. at multiples of the block size "
      f"(--block-frames {bf} latent frames){hint}"
    )


def load_streamer(checkpoint_dir: str | Path, opts: StreamOptions) -> Streamer:
  """A :class:`Streamer` for a converted checkpoint (a separate LoRA adapter is merged in).

  Order: LoRA merge, the cast to the compute dtype, then ``opts.quantize`` (the quantised layers keep the
  compute dtype for what they do not quantise: activations of weight-only modes, biases, scales applied).
  """
  from longlive_jax import checkpoint
  from longlive_jax.model import lora as model_lora
  from longlive_jax.model.params import model_from_params

  cfg, params, adapter, info = checkpoint.load(checkpoint_dir, dtype=opts.dtype)
  if opts.attention is not None:
    cfg = cfg.replace(attention_impl=opts.attention)  # a ConfigError if the dtype cannot run it (cudnn: 16-bit)
  if adapter is not None:
    params = model_lora.merge(params, adapter, scale=float(info["lora"]["scale"]))
  if cfg.param_dtype != cfg.dtype:  # cast once here, not in every compiled pass (e.g. bfloat16-stored weights)
    params = jax.tree.map(lambda p: jnp.asarray(p, cfg.dtype), params)
    cfg = cfg.replace(param_dtype=cfg.dtype)
  model = model_from_params(cfg, params)
  del params  # the float kernels go with `model` when it is replaced by its quantised copy below
  if opts.quantize is not None:
    from longlive_jax.quant.dit import quantize_dit

    model = quantize_dit(model, opts.quantize)
  return Streamer(
    model,
    opts.spec(patch=cfg.patch_size[1:]),
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
  want = f"[text_len <= {text_len}, {text_dim}] (or with a batch axis)"
  if arr.ndim not in (2, 3):
    raise StreamInputError(
      f"{path}: embedding is a {arr.ndim}-D array of shape {tuple(arr.shape)}; the model expects {want}"
    )
  if arr.ndim == 2:
    arr = arr[None]
  if arr.shape[2] != text_dim:
    raise StreamInputError(
      f"{path}: embedding has shape {tuple(arr.shape)}; the model expects {want}: "
      f"width {arr.shape[2]} != text_dim {text_dim}"
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

  ``switch_frames`` (LongLive's config ``switch_frame_indices``, the CLI's ``--switch-frames``) applies to
  lines without their own; a line with its own is a conflict (an error). A line with P prompts needs P - 1
  switch frames, integers (a comma-separated string of them is accepted too).
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
    own = rec.get("switch_frame_indices")
    if own is not None and switch_frames is not None:
      raise StreamInputError(
        f"{path}:{i}: --switch-frames {','.join(map(str, switch_frames))} conflicts with the line's own "
        f"switch_frame_indices {own!r}; give the switch frames in one place only"
      )
    sw = _switch_indices(own, f"{path}:{i}: switch_frame_indices") if own is not None else tuple(switch_frames or ())
    if len(sw) != len(prompts) - 1:
      raise StreamInputError(
        f"{path}:{i}: {len(prompts)} prompts need {len(prompts) - 1} switch frame indices, got {len(sw)} {list(sw)}"
      )
    out.append(PromptScript(i, tuple(prompts), sw))
  if not out:
    raise StreamInputError(f"{path}: no prompts")
  return out


def _switch_indices(value, where: str) -> tuple[int, ...]:
  """Switch frame indices from a jsonl line: a list of integers, or a comma-separated string of them."""
  items = value.replace(",", " ").split() if isinstance(value, str) else value
  if not isinstance(items, list):
    raise StreamInputError(f"{where}: expected a list of latent frame indices (integers), got {value!r}")
  out = []
  for x in items:
    if isinstance(value, str):
      try:
        x = int(x)
      except ValueError:
        raise StreamInputError(f"{where}: {x!r} is not an integer latent frame index") from None
    elif isinstance(x, bool) or not isinstance(x, int):
      raise StreamInputError(f"{where}: {x!r} ({type(x).__name__}) is not an integer latent frame index")
    out.append(x)
  return tuple(out)


class LatentFile:
  """An ``.npz`` of latents written block by block, so memory stays flat however long the video.

  Every block (ours ``[B, n, H, W, C]``) is appended at once, in LongLive's layout ``[n, C, H, W]``, to one
  raw temporary file per sample beside ``path``. :meth:`close` writes the ``.npz`` (``latents`` ``[B, T, C,
  H, W]``, ``layout``, ``meta``) under a temporary name, copying the raw files in chunks, and renames it
  into place; :meth:`discard` removes the temporary files. ``np.load`` reads the result as usual.
  """

  def __init__(self, path: str | Path):
    self.path = Path(path)
    self.frames = 0
    self._files: list = []
    self._names: list[Path] = []
    self._shape: tuple | None = None  # [C, H, W]
    self._dtype = None

  def append(self, x0: np.ndarray) -> None:
    x = layout.to_longlive(np.asarray(x0))  # [B, n, C, H, W]
    if not self._files:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self._shape, self._dtype = x.shape[2:], x.dtype
      for i in range(x.shape[0]):
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=f".sample{i}.partial", dir=self.path.parent)
        self._files.append(os.fdopen(fd, "w+b"))
        self._names.append(Path(name))
    if x.shape[0] != len(self._files) or x.shape[2:] != self._shape or x.dtype != self._dtype:
      raise ValueError(f"{self.path}: block {x.shape} {x.dtype} does not match the earlier blocks")
    for f, xb in zip(self._files, x, strict=True):
      f.write(np.ascontiguousarray(xb).tobytes())
      f.flush()
    self.frames += x.shape[1]

  @property
  def bytes_written(self) -> int:
    return sum(os.fstat(f.fileno()).st_size for f in self._files)

  def close(self, **meta) -> Path:
    """Writes the ``.npz`` (atomically) and removes the temporary files."""
    if not self._files:
      raise ValueError(f"{self.path}: no latents to write")
    tmp = self.path.with_name(f".{self.path.name}.partial")
    shape = (len(self._files), self.frames, *self._shape)
    try:
      with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("latents.npy", "w", force_zip64=True) as f:
          header = {"descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False, "shape": shape}
          np.lib.format.write_array_header_1_0(f, header)
          for raw in self._files:
            raw.seek(0)
            shutil.copyfileobj(raw, f, 16 << 20)
        for name, value in (("layout", "BTCHW"), ("meta", json.dumps(meta))):
          with zf.open(f"{name}.npy", "w") as f:
            np.lib.format.write_array(f, np.asarray(value))
      os.replace(tmp, self.path)
    except BaseException:
      tmp.unlink(missing_ok=True)
      raise
    finally:
      self.discard()
    return self.path

  def discard(self) -> None:
    for f, name in zip(self._files, self._names, strict=True):
      f.close()
      name.unlink(missing_ok=True)
    self._files, self._names = [], []


def save_latents(path: str | Path, latents: np.ndarray, **meta) -> Path:
  """Writes ``latents`` (ours ``[B, T, H, W, C]``) as LongLive ``[B, T, C, H, W]`` atomically, with ``meta``."""
  f = LatentFile(path)
  f.append(latents)
  return f.close(**meta)


class LivePrompts:
  """Prompts typed while generating: a thread reads lines from ``stream`` into a queue.

  Each non-empty line is a new prompt (resolved by the caller); ``:quit`` ends the stream.
  """

  def __init__(self, stream: Iterable[str]):
    self.queue: queue.Queue[str] = queue.Queue()
    self._held: str | None = None
    self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
    self._thread.start()

  def _read(self, stream):
    for line in stream:
      if line.strip():
        self.queue.put(line.strip())

  def poll(self, *, prompts: bool = True) -> str | None:
    """The next line, or None. With ``prompts=False`` only ``:quit`` is taken; a prompt line waits."""
    if self._held is None:
      try:
        self._held = self.queue.get_nowait()
      except queue.Empty:
        return None
    if self._held != QUIT and not prompts:
      return None
    line, self._held = self._held, None
    return line


class StopSignals:
  """SIGINT (Ctrl-C) and SIGTERM for a command that writes a stream (main thread only; elsewhere inert).

  Outside :meth:`deferred` either signal raises :class:`Interrupted` (a ``KeyboardInterrupt``) at once.
  Inside it, the first one only sets :attr:`signum`: the stream stops after the current block and its
  outputs are finished and kept; a second one raises at once. Exit status: ``128 + signum``.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, say: Callable[[str], None] | None = None):
    self.signum: int | None = None
    self._defer = False
    self._old: dict = {}
    self._say = say

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._old[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> bool:
    for s, old in self._old.items():
      signal.signal(s, old)
    self._old = {}
    return False

  def deferred(self):
    stop = self

    class _Deferred:
      def __enter__(self):
        stop._defer = True

      def __exit__(self, *exc):
        stop._defer = False
        return False

    return _Deferred()

  def _handle(self, signum, frame) -> None:
    if not self._defer or self.signum is not None:
      raise Interrupted(signum)
    self.signum = signum
    if self._say is not None:
      self._say(
        f"{signal.Signals(signum).name}: stopping after the current block and keeping what was generated "
        "(send it again to stop at once)"
      )


class Interrupted(KeyboardInterrupt):
  """Stopped by a signal: ``signum`` (SIGINT or SIGTERM)."""

  def __init__(self, signum: int = signal.SIGINT):
    super().__init__(signal.Signals(signum).name)
    self.signum = int(signum)


def _rate_text(blk: int, t_first: float, elapsed: float, block_frames: int) -> str:
  """The progress bar's postfix after block ``blk``: the first block's time, then the steady rate (no rate, and
  no ``nan``, before a second block exists)."""
  text = f"first block {t_first:.1f} s"
  if blk == 0:
    return text
  fps = block_frames * blk / max(elapsed - t_first, 1e-9)
  return f"{text}, {fps:.2f} latent frames/s, {4 * fps:.1f} video frames/s"


def _non_finite(blk: int, block_frames: int, kept: int, out_path) -> StreamFailure:
  where = f"; the {kept} latent frames before it were written to {out_path}" if out_path and kept else ""
  return StreamFailure(
    f"block {blk} (latent frames {blk * block_frames}-{(blk + 1) * block_frames - 1}) has NaN or infinite "
    f"latents: generation stopped there{where}"
  )


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
  stop: StopSignals | None = None,
) -> dict:
  """Generates ``opts.frames`` latent frames with scheduled (and, with ``live``, typed) prompt switches.

  ``on_block(x0 [B, n, H, W, C])`` receives every block as soon as it exists (e.g. the streaming
  VAE decoder writing video). Returns a summary; the latents go to ``out_path`` (if given) block by
  block, and the ``.npz`` is written however generation ends (with the blocks generated so far).

  Live prompts: the first prompt always makes block 0 (a line typed earlier waits for block 1); a
  line that cannot be resolved (``resolve`` raises :class:`StreamInputError`) is reported on stderr
  and ignored. ``:quit`` stops (status ``stopped``). With ``stop`` (:class:`StopSignals`), a signal
  stops after the current block (status ``interrupted``, returned); a ``KeyboardInterrupt`` is
  re-raised after writing. Non-finite latents stop with :class:`StreamFailure` naming the block
  (the blocks before it are written).
  """
  spec = streamer.spec
  nb = opts.frames // spec.block_frames
  batch = int(contexts[0].shape[0])
  if any(c.shape[0] != batch for c in contexts):
    raise StreamInputError(f"prompt embeddings have different batch sizes: {[c.shape[0] for c in contexts]}")
  try:
    check_switches(switches, num_frames=opts.frames, num_prompts=len(contexts))
  except ValueError as e:
    raise StreamInputError(str(e)) from e
  check_switch_frames([sw.frame for sw in switches], opts=opts)
  check_length(opts, streamer.cfg.rope_max_len)
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
  writer = LatentFile(out_path) if out_path is not None else None
  frames = 0
  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=nb, desc="blocks", unit="block")

  def say(msg: str) -> None:
    if bar is not None:
      bar.write(msg, file=sys.stderr)
    else:
      print(msg, file=sys.stderr, flush=True)

  def next_live_prompt(blk: int):
    """``(line, context)`` of the next usable typed prompt, ``(QUIT, None)``, or None."""
    while (line := live.poll(prompts=blk > 0)) is not None:
      if line == QUIT:
        return line, None
      try:
        ctx = resolve(line)
        if ctx.shape[0] != batch:
          raise StreamInputError(f"embedding batch {ctx.shape[0]} != the stream's batch {batch}")
      except StreamInputError as e:
        say(f"live prompt {line!r} ignored: {e}")
        continue
      return line, ctx
    return None

  t0 = time.perf_counter()
  t_first = None
  status = "complete"
  raised: BaseException | None = None
  try:
    for blk in range(nb):
      if stop is not None and stop.requested:
        status = "interrupted"
        break
      if live is not None:
        got = next_live_prompt(blk)
        if got is not None and got[0] == QUIT:
          status = "stopped"
          break
        if got is not None:
          prompts.append(got[0])
          sess.switch(jnp.asarray(got[1]), prompt=len(prompts) - 1)
      if pending and sess.frame >= pending[0].frame:
        sw = pending.pop(0)
        sess.switch(jnp.asarray(contexts[sw.prompt]), prompt=sw.prompt)
      _, x0, info = sess.next_block()
      host = np.asarray(x0)
      if not np.isfinite(host).all():
        status = "failed"
        raised = _non_finite(blk, spec.block_frames, frames, out_path)
        break
      if on_block is not None:
        on_block(x0)
      if writer is not None:
        writer.append(host)  # to disk at once: nothing accumulates in memory
      frames += host.shape[1]
      if info["switched_to"] is not None:
        start = sess.frame - spec.block_frames
        if start == 0:  # only a switch scheduled at frame 0 can land here (check_switches refuses it)
          first = prompts[info["switched_to"]]
        else:
          done_switches.append((start, prompts[info["switched_to"]]))
      if t_first is None:
        t_first = time.perf_counter() - t0
      if bar is not None:
        bar.set_postfix_str(_rate_text(blk, t_first, time.perf_counter() - t0, spec.block_frames), refresh=False)
        bar.update(1)
  except BaseException as e:  # noqa: BLE001 (Ctrl-C, a failing sink, ...): write what exists, then re-raise
    status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
    raised = e
  finally:
    if bar is not None:
      bar.close()
  if status == "interrupted" and raised is None and stop is not None:
    say(f"interrupted ({signal.Signals(stop.signum).name}) after {frames} latent frames")
  if not frames:
    if writer is not None:
      writer.discard()
    if raised is not None:
      raise raised
    if status == "interrupted":
      raise Interrupted(stop.signum)
    raise StreamInputError("no block was generated: nothing written")
  meta = {
    "status": status,
    "frames": frames,
    "seed": opts.seed,
    "prompts": [first] + [p for _, p in done_switches],
    "switch_frames": [f for f, _ in done_switches],
    "options": dataclasses.asdict(opts),
    "seconds": time.perf_counter() - t0,
    "first_block_seconds": t_first,
  }
  if writer is not None:
    writer.close(**meta)
  if raised is not None:
    raise raised
  return meta


def offline_chunk(num_blocks: int, cap: int = OFFLINE_CHUNK_BLOCKS) -> int:
  """Blocks per compiled scan call of :func:`run_offline`: the largest divisor of ``num_blocks`` up to ``cap``
  (equal chunks: one compilation)."""
  return max(d for d in range(1, min(cap, num_blocks) + 1) if num_blocks % d == 0)


def run_offline(
  streamer: Streamer,
  context: np.ndarray,
  *,
  opts: StreamOptions,
  out_path: str | Path,
  prompt: str,
  stop: StopSignals | None = None,
  progress: bool = False,
) -> dict:
  """All blocks in compiled ``lax.scan`` calls (same draws, same output as :func:`run_stream`).

  The scan runs in chunks of :func:`offline_chunk` blocks (one compilation for all of them), so an
  interruption (``stop``, Ctrl-C) takes effect after the current chunk and the finished blocks are
  written (status ``interrupted``); non-finite latents stop with :class:`StreamFailure` naming the
  first bad block, after the blocks before it are written.
  """
  spec = streamer.spec
  check_length(opts, streamer.cfg.rope_max_len)
  batch = int(context.shape[0])
  shape = BlockShape(
    batch=batch, frames=spec.block_frames, height=opts.height, width=opts.width, channels=streamer.cfg.in_dim
  )
  nb = opts.frames // spec.block_frames
  chunk = offline_chunk(nb)
  writer = LatentFile(out_path)
  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=nb, desc="blocks", unit="block")
  t0 = time.perf_counter()
  t_first = None
  status, raised, frames = "complete", None, 0
  try:
    cross = streamer.encode(jnp.asarray(context))
    cache = streamer.init_cache(batch=batch)
    key = jax.random.key(opts.seed)
    for first in range(0, nb, chunk):
      if stop is not None and stop.requested:
        status = "interrupted"
        break
      out, cache = streamer.generate_keyed(cache, key, cross, num_blocks=chunk, shape=shape, first_block=first)
      out = np.asarray(out)  # [chunk, B, n, H, W, C]
      for i, blk_x0 in enumerate(out):
        if not np.isfinite(blk_x0).all():
          raised = _non_finite(first + i, spec.block_frames, frames, out_path)
          break
        writer.append(blk_x0)
        frames += blk_x0.shape[1]
      if raised is not None:
        status = "failed"
        break
      if t_first is None:
        t_first = time.perf_counter() - t0
      if bar is not None:
        bar.set_postfix_str(
          _rate_text(first // chunk, t_first, time.perf_counter() - t0, spec.block_frames * chunk), refresh=False
        )
        bar.update(chunk)
  except BaseException as e:  # noqa: BLE001 (Ctrl-C between chunks): write the finished blocks, then re-raise
    status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
    raised = e
  finally:
    if bar is not None:
      bar.close()
  if not frames:
    writer.discard()
    if raised is not None:
      raise raised
    raise Interrupted(stop.signum if stop is not None and stop.signum else signal.SIGINT)
  meta = {
    "status": status,
    "frames": frames,
    "seed": opts.seed,
    "prompts": [prompt],
    "switch_frames": [],
    "options": dataclasses.asdict(opts),
    "seconds": time.perf_counter() - t0,
    "first_block_seconds": t_first,
  }
  writer.close(**meta)
  if raised is not None:
    raise raised
  return meta
