"""The studio's generator: one thread runs takes block by block; the web side only posts requests to it.

A *take* is one stream with one seed and one switch mode, recorded to ``take-NNNN.*``. Each block:

1. wait, at the block boundary, while paused, while no viewer is connected (idle) or, in real-time mode, until
   a viewer playing at the model's frame rate is about to run out of frames (running further ahead would only
   delay typed prompts);
2. take the pending typed prompt, if any: it switches the prompt for this block (KV-recache, or keep / clear);
3. generate the block, decode it (VAE cache carried across blocks), encode its frames as JPEG once, hand them
   to ``publish`` (which never blocks: viewers have their own queues), append latents and video to disk.

Every request (:meth:`Studio.submit`, :meth:`~Studio.pause`, :meth:`~Studio.restart`, ...) takes the lock,
changes the state and wakes the thread; a prompt is acknowledged with the latent frame where it will switch
(the next block boundary not yet started), which is exactly the index the take's jsonl records.
"""

from __future__ import annotations

import dataclasses
import secrets
import statistics
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from longlive_jax.stream import run as srun
from longlive_jax.stream.driver import SWITCH_MODES
from longlive_jax.studio import recording
from longlive_jax.studio.engine import Engine, PromptRejected, encode_jpeg, video_frames

TOY_PROMPT = "a red circle moves right on a blue background"
FRAME_HEADER = struct.Struct("<II")  # take number, video frame index; then the JPEG bytes
ENDED = ("complete", "stopped", "failed")
STATS_WINDOW = 8  # blocks over which the generation rate and median latency are taken
PACE_MARGIN = 8  # video frames (0.5 s at 16 fps) a real-time viewer still has to play when the next block arrives


class ControlError(ValueError):
  """A request the studio cannot carry out now (model still loading, unknown switch mode, ...)."""


@dataclasses.dataclass(eq=False)
class Take:
  """One recorded stream. ``prompts[i]`` is active from latent frame ``([0] + switch_frames)[i]``."""

  number: int
  seed: int
  mode: str
  prompts: list[str]
  context: np.ndarray  # the first prompt's embedding
  rec: recording.Recording
  max_frames: int | None
  current: tuple[str, np.ndarray] | None = None  # the active prompt and its embedding (the next take starts with it)
  switch_frames: list[int] = dataclasses.field(default_factory=list)
  status: str = "starting"
  frames: int = 0  # latent frames generated
  pending: tuple[str, np.ndarray] | None = None
  mode_locked: bool = False  # a switch was applied: the take's mode is fixed (a replay uses one mode)
  t_start: float = dataclasses.field(default_factory=time.perf_counter)
  ttff: float | None = None
  seconds: float = 0.0  # generating, not waiting
  latencies: deque = dataclasses.field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
  error: str | None = None

  @property
  def ended(self) -> bool:
    return self.status in ENDED

  def record(self) -> dict:
    return recording.script_record(
      self.prompts, self.switch_frames, seed=self.seed, switch_mode=self.mode, frames=self.frames
    )


class Studio:
  """Takes, controls and the generator thread around an :class:`Engine` (loaded in that thread by ``load``).

  Args:
    load: builds the engine (in the generator thread, so a server is up while the model compiles).
    recordings: the only folder written to.
    first_prompt: the prompt the first take starts with; without one the first typed prompt starts it.
    seed, switch_mode: of the first take (later takes: the page's choice).
    realtime: pace generation to the frame rate (at most about one block ahead of playback).
    checkpoint: the checkpoint as named on the command line (None: the default model), for replay commands.
    publish: ``publish(kind, payload)`` with kind ``"frame"`` (bytes) or ``"json"`` (dict); must not block.
  """

  def __init__(
    self,
    load: Callable[[], Engine],
    *,
    recordings: str | Path,
    first_prompt: str | None,
    seed: int = 0,
    switch_mode: str = "recache",
    realtime: bool = True,
    checkpoint: str | None = None,
    publish: Callable[[str, object], None] | None = None,
  ):
    if switch_mode not in SWITCH_MODES:
      raise ControlError(f"switch mode {switch_mode!r}: choose one of {', '.join(SWITCH_MODES)}")
    self._load = load
    self.recordings = Path(recordings)
    self.realtime = realtime
    self.checkpoint = checkpoint
    self.publish = publish or (lambda kind, payload: None)
    self.engine: Engine | None = None
    self.load_error: str | None = None
    self.mode = switch_mode
    self._first_text = first_prompt
    self._next_first: tuple[str, np.ndarray] | None = None
    self._start: tuple[int, str] | None = (seed, switch_mode)  # the first take starts once it has a prompt
    self._end: str | None = None  # end the current take ("stopped")
    self._cond = threading.Condition()
    self._closed = False
    self._paused = False
    self._viewers = 0
    self._next_block = 0
    self.take: Take | None = None
    self.takes: dict[int, Take] = {}
    self._thread = threading.Thread(target=self._main, name="studio-generator", daemon=True)

  # ------------------------------------------------------------------------------------ requests

  def start(self) -> None:
    self._thread.start()

  def close(self, timeout: float = 60.0) -> None:
    """Ends the current take (its files are finished) and stops the thread."""
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    if self._thread.is_alive():
      self._thread.join(timeout)

  def viewer_joined(self) -> None:
    with self._cond:
      self._viewers += 1
      self._cond.notify_all()

  def viewer_left(self) -> None:
    with self._cond:
      self._viewers = max(0, self._viewers - 1)
      self._cond.notify_all()

  @property
  def viewers(self) -> int:
    return self._viewers

  def encode(self, text: object) -> tuple[str, np.ndarray]:
    """Checks and encodes a prompt (call it off the event loop); :class:`PromptRejected` if unusable."""
    if self.engine is None:
      raise ControlError(self.load_error or "the model is still loading; try again in a moment")
    return self.engine.encode(text)

  def submit(self, text: str, context: np.ndarray) -> dict:
    """Makes an encoded prompt the next one. A running take switches at its next block boundary (the reply's
    ``frame``); a newer prompt typed before that boundary replaces it. Without a running take it becomes the
    first prompt of the next take (and starts the first take if none has run)."""
    with self._cond:
      take = self.take
      if take is not None and not take.ended:
        replaced = take.pending[0] if take.pending is not None else None
        take.pending = (text, context)
        frame = self._next_block * self.engine.block_frames
        ack = {"take": take.number, "frame": frame, "video_frame": video_frames(frame), "replaced": replaced}
      else:
        self._next_first = (text, context)
        ack = {"take": None, "frame": 0, "video_frame": 0, "next_take": True, "replaced": None}
      self._cond.notify_all()
    self.publish_state()
    return ack

  def pause(self) -> None:
    self._set(paused=True)

  def resume(self) -> None:
    self._set(paused=False)

  def _set(self, *, paused: bool) -> None:
    with self._cond:
      self._paused = paused
      self._cond.notify_all()
    self.publish_state()

  def stop(self) -> None:
    """Ends the current take; its files are finished (the latents ``.npz`` becomes downloadable)."""
    with self._cond:
      if self.take is not None and not self.take.ended:
        self._end = "stopped"
        self._cond.notify_all()

  def restart(self, seed: int | None = None, mode: str | None = None) -> int:
    """Ends the current take and starts a new one (a random seed when None) with the newest prompt."""
    mode = self._check_mode(mode or self.mode)
    if seed is None:
      seed = secrets.randbelow(srun.MAX_SEED + 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= srun.MAX_SEED:
      raise ControlError(f"seed {seed!r}: must be an integer in [0, {srun.MAX_SEED}]")
    with self._cond:
      if self.engine is None:
        raise ControlError(self.load_error or "the model is still loading; try again in a moment")
      self.mode = mode
      self._start = (seed, mode)
      if self.take is not None and not self.take.ended:
        self._end = "stopped"
      self._paused = False
      self._cond.notify_all()
    return seed

  def set_mode(self, mode: str) -> str:
    """The switch mode of the running take if it has not switched yet (a replay uses one mode per take), and of
    the next takes. Returns a note for the page."""
    mode = self._check_mode(mode)
    with self._cond:
      self.mode = mode
      take = self.take
      if take is None or take.ended:
        note = f"switch mode {mode}: for the next take"
      elif take.mode_locked and take.mode != mode:
        note = f"this take has switched with {take.mode} (one mode per take); {mode} applies from the next take"
      else:
        take.mode = mode
        note = f"switch mode {mode}"
    self.publish_state()
    return note

  @staticmethod
  def _check_mode(mode: object) -> str:
    if mode not in SWITCH_MODES:
      raise ControlError(f"switch mode {mode!r}: choose one of {', '.join(SWITCH_MODES)}")
    return mode

  # ------------------------------------------------------------------------------------ state

  def snapshot(self) -> dict:
    """The state the page shows (JSON)."""
    with self._cond:
      eng = self.engine
      model = None
      if eng is not None:
        model = {
          "checkpoint": Path(eng.ckpt).name,
          "fps": eng.fps,
          "height": eng.opts.height * eng.vae.cfg.space_stride,
          "width": eng.opts.width * eng.vae.cfg.space_stride,
          "block_frames": eng.block_frames,
          "max_prompt_chars": eng.max_prompt_chars,
          "load_seconds": round(eng.load_seconds, 2),
          "warm_seconds": None if eng.warm_seconds is None else round(eng.warm_seconds, 2),
        }
      return {
        "type": "state",
        "ready": eng is not None,
        "error": self.load_error,
        "paused": self._paused,
        "viewers": self._viewers,
        "mode": self.mode,
        "modes": list(SWITCH_MODES),
        "realtime": self.realtime,
        "model": model,
        "take": None if self.take is None else self._take_json(self.take),
        "takes": [self._take_json(t, brief=True) for t in reversed(self.takes.values())],
        "waiting_for_prompt": self._start is not None and self._next_first is None and self._first_text is None,
      }

  def _take_json(self, t: Take, *, brief: bool = False) -> dict:
    d = {"number": t.number, "seed": t.seed, "mode": t.mode, "status": t.status, "frames": t.frames,
         "video_frames": video_frames(t.frames), "ended": t.ended, "latents": t.ended and t.rec.npz.is_file()}  # fmt: skip
    if brief:
      return d
    starts = [0, *t.switch_frames]
    timeline = [
      {"text": p, "frame": f, "video_frame": video_frames(f), "seconds": round(video_frames(f) / self.engine.fps, 2)}
      for p, f in zip(t.prompts, starts, strict=True)
    ]
    pending = None
    if t.pending is not None:
      f = self._next_block * self.engine.block_frames
      pending = {"text": t.pending[0], "frame": f, "video_frame": video_frames(f)}
    d.update(
      timeline=timeline,
      pending=pending,
      max_frames=t.max_frames,
      ttff_s=None if t.ttff is None else round(t.ttff, 3),
      error=t.error,
      replay=recording.replay_command(
        t.rec.jsonl.name,
        self.engine.opts,
        checkpoint=self.checkpoint,
        seed=t.seed,
        switch_mode=t.mode,
        frames=max(t.frames, self.engine.block_frames),
        out=f"{t.rec.jsonl.stem}-replay.npz",
      ),
    )
    return d

  def take_by_number(self, number: int) -> Take | None:
    with self._cond:
      return self.takes.get(number)

  def script_text(self, take: Take) -> str:
    """The take's jsonl as of now (a running take: the blocks generated so far)."""
    import json

    with self._cond:
      return json.dumps(take.record()) + "\n"

  def publish_state(self) -> None:
    self.publish("json", self.snapshot())

  def _error(self, message: str) -> None:
    self.publish("json", {"type": "error", "message": message})

  # ------------------------------------------------------------------------------------ the thread

  def _main(self) -> None:
    try:
      eng = self._load()
      first = None
      if self._first_text is not None:
        try:
          first = eng.encode(self._first_text)
        except PromptRejected as e:
          raise ControlError(f"the first prompt {self._first_text!r} cannot be used: {e}") from e
      eng.warm_up(first[0] if first else None)
    except BaseException as e:  # noqa: BLE001 (shown on the page; the server stays up to say so)
      with self._cond:
        self.load_error = f"could not load the model: {e}"
      self.publish_state()
      return
    with self._cond:
      self.engine = eng
      self._next_first = first
      self._first_text = None
    self.publish_state()
    while True:
      with self._cond:
        while not self._closed and (self._start is None or self._next_first is None):
          self._cond.wait()
        if self._closed:
          return
        seed, mode = self._start
        self._start, self._end = None, None
        (text, ctx), self._next_first = self._next_first, None
        number = recording.next_take_number(self.recordings)
        take = Take(
          number=number, seed=seed, mode=mode, prompts=[text], context=ctx, max_frames=eng.max_frames,
          rec=recording.Recording(self.recordings, number, fps=eng.fps),
        )  # fmt: skip
        self.take = self.takes[number] = take
        self._next_block = 0
      self.publish_state()
      self._run(eng, take)

  def _wait_for_block(self, eng: Engine, take: Take, clock: list) -> str | None:
    """Under the lock: waits until the next block may start. Returns why the take ends, or None.

    Real-time pacing: ``clock`` is when a viewer playing at ``fps`` showed (or would have shown) video frame 0;
    the next block starts once such a viewer has only ``PACE_MARGIN`` frames plus one block latency's worth
    left to play, so it arrives just in time and a typed prompt waits for at most about one block.
    """
    was = take.status
    while True:
      if self._closed or self._end is not None:
        return self._end or "stopped"
      if take.max_frames is not None and take.frames >= take.max_frames:
        return "complete"
      if self._paused or self._viewers == 0:
        take.status = "paused" if self._paused else "idle"
        if take.status != was:
          was = take.status
          self.publish_state()  # the lock is re-entrant; publishing never blocks
        if take.ttff is None:
          take.t_start = time.perf_counter()  # time to first frame counts generation, not waiting for viewers
        self._cond.wait()
        if clock:  # after a pause a viewer has played what it had: the clock restarts at the last frame
          clock[0] = time.perf_counter() - video_frames(take.frames) / eng.fps
        continue
      now = time.perf_counter()
      if self.realtime and clock and take.latencies:
        lead = PACE_MARGIN + eng.fps * statistics.median(take.latencies)
        due = clock[0] + (video_frames(take.frames) - lead) / eng.fps
        if now < due:
          self._cond.wait(due - now)
          continue
      take.status = "running"
      if was != "running":
        self.publish_state()
      return None

  def _run(self, eng: Engine, take: Take) -> None:
    bf = eng.block_frames
    reason, raised = "complete", None
    try:
      sess = eng.session(take.seed, take.context, switch_mode=take.mode)
      decoder = eng.decoder()
      clock: list = []
      while True:
        with self._cond:
          reason = self._wait_for_block(eng, take, clock)
          if reason is not None:
            break
          pending, take.pending = take.pending, None
          start = sess.block_index * bf
          if pending is not None and start > 0:
            take.mode_locked = True
            eng.streamer.switch_mode = take.mode
          self._next_block = sess.block_index + 1
        if pending is not None:
          sess.switch(jnp.asarray(pending[1]))
        t0 = time.perf_counter()
        _, x0, _ = sess.next_block()
        latents = np.asarray(x0)
        if not np.isfinite(latents).all():
          raise srun.StreamFailure(f"block {start // bf} has NaN or infinite latents: the take stopped there")
        frames = decoder(x0)
        jpegs = [encode_jpeg(f) for f in frames]
        latency = time.perf_counter() - t0
        first = video_frames(take.frames)
        with self._cond:
          if pending is not None and start == 0:
            take.prompts[0] = pending[0]  # typed before the first block: the take starts with it
          elif pending is not None:
            take.prompts.append(pending[0])
            take.switch_frames.append(start)
          if pending is not None:
            take.current = pending
          take.frames += bf
          take.seconds += latency
          take.latencies.append(latency)
          if take.ttff is None:
            take.ttff = time.perf_counter() - take.t_start
        for i, jpg in enumerate(jpegs):
          self.publish("frame", FRAME_HEADER.pack(take.number, first + i) + jpg)
        if not clock:
          clock.append(time.perf_counter())  # a viewer starts playing frame 0 now
        self.publish_state()  # frames, timeline and replay command of the take as of this block
        self.publish("json", self._stats(eng, take, start // bf, latency, len(frames)))
        take.rec.add_block(latents, frames)
    except BaseException as e:  # noqa: BLE001 (the take ends with what it has; the server goes on)
      reason, raised = "failed", e
    with self._cond:
      take.status = reason
      take.error = None if raised is None else f"{type(raised).__name__}: {raised}"
      nxt = take.pending or take.current or (take.prompts[0], take.context)
      self._end = None
    try:
      meta = dict(status=reason, frames=take.frames, seed=take.seed, prompts=take.prompts,
                  switch_frames=take.switch_frames, switch_mode=take.mode,
                  options=dataclasses.asdict(dataclasses.replace(eng.opts, frames=max(take.frames, bf))),
                  seconds=take.seconds, first_frame_seconds=take.ttff)  # fmt: skip
      take.rec.close(take.record(), **meta)
    except Exception as e:  # noqa: BLE001
      take.error = take.error or f"could not finish the recording: {e}"
    with self._cond:
      if self._next_first is None:  # the next take goes on with the newest prompt
        self._next_first = nxt
    if take.error:
      self._error(f"take {take.number}: {take.error}")
    self.publish_state()

  def _stats(self, eng: Engine, take: Take, block: int, latency: float, n_frames: int) -> dict:
    lat = list(take.latencies)
    rate = 4 * eng.block_frames * len(lat) / max(sum(lat), 1e-9)  # steady blocks give 4 video frames per latent
    return {
      "type": "stats",
      "take": take.number,
      "block": block,
      "frames": take.frames,
      "video_frames": video_frames(take.frames),
      "block_frames": n_frames,
      "latency_ms": round(1000 * latency, 1),
      "median_latency_ms": round(1000 * statistics.median(lat), 1),
      "gen_fps": round(rate, 2),
      "ttff_s": None if take.ttff is None else round(take.ttff, 3),
    }
