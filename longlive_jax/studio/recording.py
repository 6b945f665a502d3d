"""One take's files, all inside the recordings folder the user named: ``take-NNNN.mp4``, ``.npz`` and ``.jsonl``.

* The video is a fragmented mp4 (``empty_moov`` + one fragment per keyframe, a keyframe every second, packets
  flushed as they are muxed): the file on disk is playable while it grows, so the page can download the
  recording of a running take (:func:`playable_prefix` cuts it after the last complete fragment).
* The latents go to disk block by block (:class:`~longlive_jax.stream.run.LatentFile`, LongLive layout
  ``[B, T, C, H, W]`` with the take's meta); the ``.npz`` exists once the take has ended.
* The script is LongLive's jsonl, one line: ``{"prompts": [...], "switch_frame_indices": [...]}`` plus a
  ``studio`` entry (seed, switch mode, frames) that ``longlive-jax interactive`` ignores; the same settings
  on its command line (:func:`replay_command`) replay the take's latents bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import struct
from pathlib import Path

import av
import numpy as np

from longlive_jax.stream import run as srun
from longlive_jax.video_io import add_video_stream, frame_rate, mux_frames

TAKE_NAME = re.compile(r"take-(\d{4,})\.")
_FLAGS = "frag_keyframe+empty_moov+default_base_moof"


def next_take_number(folder: Path) -> int:
  """One more than the highest ``take-NNNN`` in ``folder``: a new server never overwrites earlier takes."""
  nums = [int(m.group(1)) for p in folder.iterdir() if (m := TAKE_NAME.match(p.name))] if folder.is_dir() else []
  return max(nums, default=0) + 1


class FragmentedMp4:
  """An mp4 that is valid at every fragment boundary while it is written (H.264 when FFmpeg has it)."""

  def __init__(self, path: Path, *, fps: float, crf: int = 20):
    self.path, self.rate, self.crf = Path(path), frame_rate(fps), crf
    self.gop = max(1, round(float(fps)))
    self._out = None
    self._stream = None
    self.frames = 0

  def _open(self, h: int, w: int) -> None:
    if h % 2 or w % 2:  # checked before the file is created
      raise ValueError(f"{self.path}: frame size {h}x{w} must be even for yuv420p video")
    self._out = av.open(str(self.path), "w", format="mp4", options={"movflags": _FLAGS, "flush_packets": "1"})
    s = add_video_stream(self._out, path=self.path, height=h, width=w, rate=self.rate, crf=self.crf, tune="zerolatency")
    s.codec_context.gop_size = self.gop
    self._stream = s

  def write(self, frames: np.ndarray) -> None:
    """``frames [T, H, W, 3]`` uint8."""
    if self._out is None:
      self._open(frames.shape[1], frames.shape[2])
    mux_frames(self._out, self._stream, frames)
    self.frames += len(frames)

  def close(self) -> None:
    if self._out is None:
      return
    out, self._out = self._out, None
    out.mux(self._stream.encode())
    out.close()


def playable_prefix(path: Path) -> bytes:
  """The bytes of a (fragmented) mp4 up to its last complete top-level box that is not a ``moof`` waiting for its
  ``mdat``: a file that plays, cut at a fragment boundary, whatever the writer is doing."""
  data = Path(path).read_bytes()
  pos = end = 0
  while pos + 8 <= len(data):
    size, kind = struct.unpack(">I4s", data[pos : pos + 8])
    if size == 1 and pos + 16 <= len(data):
      size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
    if size < 8 or pos + size > len(data):
      break
    pos += size
    if kind != b"moof":
      end = pos
  return data[:end]


def script_record(prompts, switch_frames, *, seed: int, switch_mode: str, frames: int) -> dict:
  """The take as one line of LongLive's jsonl (plus the settings ``interactive`` needs, under ``studio``)."""
  return {
    "prompts": list(prompts),
    "switch_frame_indices": [int(f) for f in switch_frames],
    "studio": {"seed": int(seed), "switch_mode": switch_mode, "frames": int(frames)},
  }


def replay_command(jsonl: str, opts: srun.StreamOptions, *, checkpoint: str | None, seed: int, switch_mode: str,
                   frames: int, out: str) -> str:  # fmt: skip
  """The ``longlive-jax interactive`` command line that regenerates a take (every stream option spelled out)."""
  args = ["longlive-jax", "interactive", jsonl]
  if checkpoint is not None:
    args += ["--checkpoint", checkpoint]
  args += ["--frames", str(frames), "--seed", str(seed), "--switch-mode", switch_mode]
  args += ["--height", str(opts.height), "--width", str(opts.width), "--block-frames", str(opts.block_frames)]
  args += ["--sink", str(opts.sink_frames), "--window", str(opts.window_frames)]
  args += ["--relative-rope"] if opts.relative_rope else ["--rope-horizon", str(opts.rope_horizon)]
  args += ["--no-global-sink"] if not opts.global_sink else []
  args += ["--context-noise", f"{opts.context_noise:g}"] if opts.context_noise else []
  args += ["--dtype", opts.dtype] if opts.dtype else []
  args += ["--attention", opts.attention] if opts.attention else []
  args += ["--quantize", opts.quantize] if opts.quantize else []
  return shlex.join([*args, "--out", out])


def _write_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(f".{path.name}.partial")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


class Recording:
  """The files of take ``number`` in ``folder``; written by the generator thread, read by downloads."""

  def __init__(self, folder: Path, number: int, *, fps: float):
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"take-{number:04d}"
    self.mp4, self.npz, self.jsonl = (folder / f"{stem}{s}" for s in (".mp4", ".npz", ".jsonl"))
    self._video = FragmentedMp4(self.mp4, fps=fps)
    self._latents = srun.LatentFile(self.npz)
    self.closed = False  # close() has begun: no more blocks
    self.done = False  # the files are finished (the mp4 complete, the latents .npz written if any block was)

  def add_block(self, latents: np.ndarray, frames: np.ndarray) -> None:
    """One block: latents ``[1, n, h, w, z]`` (ours) and its decoded frames ``[T, H, W, 3]`` uint8."""
    self._latents.append(latents)
    self._video.write(frames)

  def write_script(self, record: dict) -> None:
    _write_atomic(self.jsonl, json.dumps(record) + "\n")

  def close(self, record: dict, **meta) -> None:
    """Finishes the mp4 and the latents (with ``meta``) and writes the script; a take without blocks leaves none."""
    if self.closed:
      return
    self.closed = True
    try:
      self._video.close()
    finally:
      try:
        if self._latents.frames:
          self._latents.close(**meta)
          self.write_script(record)
        else:
          self._latents.discard()
      finally:
        self.done = True
