"""Incremental video output: frames are written as each block is decoded, so the first seconds of a
long video exist on disk while later blocks are still generating.

``VideoWriter`` encodes mp4 through PyAV (FFmpeg; H.264 when the build has libx264, else
MPEG-4 part 2) and flushes the container's packets as it goes; ``PngWriter`` writes numbered
PNG frames. Pixels come in as ``[T, H, W, 3]`` floats in [-1, 1] (the VAE's range) or uint8.

Files are written under a temporary name beside the final one (:func:`partial_path`) and renamed
into place once complete: an interrupted run never leaves a truncated, unplayable file under the
final name.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8 as upstream (``(x * 0.5 + 0.5).clamp(0, 1) * 255``, rounded)."""
  if frames.dtype == np.uint8:
    return frames
  x = np.clip(np.asarray(frames, np.float32) * 0.5 + 0.5, 0.0, 1.0)
  return np.round(x * 255.0).astype(np.uint8)


def partial_path(path: str | Path) -> Path:
  """The temporary name a file is written under before it is renamed into place: ``.<stem>.partial<suffix>``
  in the same folder (same file system, so the rename is atomic; the suffix still tells FFmpeg the format)."""
  path = Path(path)
  return path.with_name(f".{path.stem}.partial{path.suffix}")


def frame_rate(fps: float) -> Fraction:
  """``fps`` as the exact rational rate of the stream (12.5 stays 12.5, 29.97 becomes 30000/1001)."""
  if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
    raise ValueError(f"frame rate {fps!r}: must be a positive number")
  rate = Fraction(fps).limit_denominator(1001)
  if rate <= 0:
    raise ValueError(f"frame rate {fps!r}: too small (below 1/1001 frames per second)")
  return rate


def add_video_stream(container, *, path: Path, height: int, width: int, rate: Fraction, crf: int, **x264_options):
  """The yuv420p video stream of ``container``: H.264 at ``crf`` (plus ``x264_options``) when FFmpeg has
  libx264, else MPEG-4 part 2 at the best fixed quality. ``path`` only names the file in errors."""
  if height % 2 or width % 2:
    raise ValueError(f"{path}: frame size {height}x{width} must be even for yuv420p video")
  if "libx264" in av.codecs_available:
    s = container.add_stream("libx264", rate=rate)
    s.options = {"crf": str(crf), "preset": "veryfast", **x264_options}
  else:
    s = container.add_stream("mpeg4", rate=rate)
    s.options = {"qscale": "2"}
  s.width, s.height, s.pix_fmt = width, height, "yuv420p"
  return s


def mux_frames(container, stream, frames: np.ndarray) -> None:
  """Encodes ``frames [T, H, W, 3]`` uint8 into ``stream`` and muxes the packets as they come."""
  for img in frames:
    container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))


class VideoWriter:
  """Appends frames to an mp4; ``close()`` (or the context manager) finishes the file.

  The video is written to :func:`partial_path` and renamed to ``path`` by ``close()``, so ``path`` only
  ever holds a finished, playable file (the frames written so far when closed early). A writer closed
  without frames leaves no file; ``discard()`` removes the partial file instead of keeping it.
  """

  def __init__(self, path: str | Path, *, fps: float = 16.0, crf: int = 18):
    self.path = Path(path)
    self.rate = frame_rate(fps)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.fps, self.crf = fps, crf
    self.tmp = partial_path(self.path)
    self._out = av.open(str(self.tmp), "w")
    self._stream = None
    self.frames = 0

  def write(self, frames: np.ndarray) -> None:
    """``frames [T, H, W, 3]`` in [-1, 1] or uint8."""
    frames = to_uint8(frames)
    if self._stream is None:
      self._stream = add_video_stream(
        self._out, path=self.path, height=frames.shape[1], width=frames.shape[2], rate=self.rate, crf=self.crf
      )
    mux_frames(self._out, self._stream, frames)
    self.frames += len(frames)

  def close(self) -> None:
    """Finishes the file and renames it into place (removes it when no frame was written)."""
    if self._out is None:
      return
    out, self._out = self._out, None
    try:
      if self._stream is not None:
        out.mux(self._stream.encode())
      out.close()
    except BaseException:
      self.tmp.unlink(missing_ok=True)
      raise
    if self.frames:
      os.replace(self.tmp, self.path)
    else:
      self.tmp.unlink(missing_ok=True)

  def discard(self) -> None:
    """Closes the file and removes it: nothing is left under either name."""
    if self._out is not None:
      out, self._out = self._out, None
      try:
        out.close()
      except Exception:  # noqa: BLE001 (a half-written container: it is removed anyway)
        pass
    self.tmp.unlink(missing_ok=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()  # keeps the frames written so far, even when the block raised


class PngWriter:
  """Writes ``frame_000000.png``, ... into a folder."""

  def __init__(self, folder: str | Path):
    self.folder = Path(folder)
    self.folder.mkdir(parents=True, exist_ok=True)
    self.frames = 0

  def write(self, frames: np.ndarray) -> None:
    for img in to_uint8(frames):
      _write_png(self.folder / f"frame_{self.frames:06d}.png", np.ascontiguousarray(img))
      self.frames += 1

  def close(self) -> None:
    pass


def _write_png(path: Path, img: np.ndarray) -> None:
  """PNG through FFmpeg's encoder (no Pillow needed), written under a temporary name and renamed into place."""
  path = Path(path)
  tmp = partial_path(path)
  try:
    with av.open(str(tmp), "w", format="image2") as out:
      s = out.add_stream("png", rate=1)
      s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], "rgb24"
      out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
      out.mux(s.encode())
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  os.replace(tmp, path)


def read_video(path: str | Path) -> np.ndarray:
  """All frames of a video file as ``[T, H, W, 3]`` uint8 (tests, checks)."""
  with av.open(str(path)) as f:
    return np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])
