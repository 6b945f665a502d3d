"""Incremental video output: frames are written as each block is decoded, so the first seconds of a
long video exist on disk while later blocks are still generating.

``VideoWriter`` encodes mp4 through PyAV (FFmpeg; H.264 when the build has libx264, else
MPEG-4 part 2) and flushes the container's packets as it goes; ``PngWriter`` writes numbered
PNG frames. Pixels come in as ``[T, H, W, 3]`` floats in [-1, 1] (the VAE's range) or uint8.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8 as upstream (``(x * 0.5 + 0.5).clamp(0, 1) * 255``, rounded)."""
  if frames.dtype == np.uint8:
    return frames
  x = np.clip(np.asarray(frames, np.float32) * 0.5 + 0.5, 0.0, 1.0)
  return np.round(x * 255.0).astype(np.uint8)


class VideoWriter:
  """Appends frames to an mp4; ``close()`` (or the context manager) finishes the file."""

  def __init__(self, path: str | Path, *, fps: float = 16.0, crf: int = 18):
    self.path = Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.fps, self.crf = fps, crf
    self._out = av.open(str(self.path), "w")
    self._stream = None
    self.frames = 0

  def _open_stream(self, h: int, w: int) -> None:
    if h % 2 or w % 2:
      raise ValueError(f"{self.path}: frame size {h}x{w} must be even for yuv420p video")
    if "libx264" in av.codecs_available:
      s = self._out.add_stream("libx264", rate=round(self.fps))
      s.options = {"crf": str(self.crf), "preset": "veryfast"}
    else:
      s = self._out.add_stream("mpeg4", rate=round(self.fps))
      s.options = {"qscale": "2"}
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    self._stream = s

  def write(self, frames: np.ndarray) -> None:
    """``frames [T, H, W, 3]`` in [-1, 1] or uint8."""
    frames = to_uint8(frames)
    if self._stream is None:
      self._open_stream(frames.shape[1], frames.shape[2])
    for img in frames:
      self._out.mux(self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
    self.frames += len(frames)

  def close(self) -> None:
    if self._out is None:
      return
    if self._stream is not None:
      self._out.mux(self._stream.encode())
    self._out.close()
    self._out = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


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
  """PNG through FFmpeg's encoder (no Pillow needed)."""
  with av.open(str(path), "w", format="image2") as out:
    s = out.add_stream("png", rate=1)
    s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], "rgb24"
    out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
    out.mux(s.encode())


def read_video(path: str | Path) -> np.ndarray:
  """All frames of a video file as ``[T, H, W, 3]`` uint8 (tests, checks)."""
  with av.open(str(path)) as f:
    return np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])
