"""Running a stream from files: the logic behind ``longlive-jax generate`` / ``interactive``.

Inputs until the text encoder is wired in are precomputed prompt embeddings (``.npy`` or
``.npz``, ``[text_len, text_dim]`` or ``[B, text_len, text_dim]``); outputs are latents in
an ``.npz`` (LongLive layout ``[B, T, C, H, W]``) with the prompts, switch frames and seed
needed to reproduce them. Every user mistake raises :class:`StreamInputError` naming the
file, line or option at fault. A stream stopped early (Ctrl-C, SIGTERM, ``:quit``, an error,
non-finite latents) still writes the blocks generated so far, with its ``status`` in the meta.

Latents go to disk block by block (:class:`LatentFile`), so memory does not grow with the
length of the video; the ``.npz`` appears under its final name only when complete.

This module holds the run loops (:func:`run_stream`, :func:`run_offline`) and re-exports the rest, so
``srun.X`` works for all of it: options, errors and :func:`load_streamer` live in
:mod:`~longlive_jax.stream.options`; embeddings, prompt scripts, switch frames and live prompts in
:mod:`~longlive_jax.stream.prompts`; :class:`LatentFile` in :mod:`~longlive_jax.stream.latents`;
:class:`StopSignals` in :mod:`~longlive_jax.stream.signals`.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax.stream.driver import Streamer, Switch, check_switches
from longlive_jax.stream.latents import LatentFile, save_latents
from longlive_jax.stream.noise import BlockShape, KeyNoise
from longlive_jax.stream.options import (
  MAX_SEED,
  MAX_TIMESTEP,
  StreamFailure,
  StreamInputError,
  StreamOptions,
  check_length,
  load_streamer,
)
from longlive_jax.stream.prompts import (
  EMBEDDING_KEYS,
  QUIT,
  LivePrompts,
  PromptScript,
  check_switch_frames,
  read_embedding,
  read_prompt_script,
)
from longlive_jax.stream.signals import Interrupted, StopSignals

__all__ = [
  "EMBEDDING_KEYS",
  "MAX_SEED",
  "MAX_TIMESTEP",
  "OFFLINE_CHUNK_BLOCKS",
  "QUIT",
  "Interrupted",
  "LatentFile",
  "LivePrompts",
  "PromptScript",
  "StopSignals",
  "StreamFailure",
  "StreamInputError",
  "StreamOptions",
  "check_length",
  "check_switch_frames",
  "check_switches",
  "load_streamer",
  "offline_chunk",
  "read_embedding",
  "read_prompt_script",
  "run_offline",
  "run_stream",
  "save_latents",
]

OFFLINE_CHUNK_BLOCKS = 8  # --offline scans this many blocks per compiled call (at most): Ctrl-C waits for one chunk


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
