"""Video decoding to fixed-size training clips (PyAV), and synthetic captioned videos for tests.

PyAV (``av``, FFmpeg bundled in the wheel, decoding in-process) is the one video library used;
LongLive itself pins ``av``. A clip is ``num_frames`` RGB frames ``[F, H, W, 3]`` uint8 taken from
the start of the video:

* ``fps=None``: the first ``num_frames`` decoded frames;
* ``fps=r``: frames resampled to rate r by presentation time (frame k is the decoded frame nearest
  to ``k / r`` seconds; LongLive's data is 16 fps), so a 30 fps source is subsampled and a 8 fps
  source repeats frames.

Each frame is resized (FFmpeg swscale, area filter) to *cover* ``height x width`` with its aspect
ratio kept, then center-cropped: LongLive trains at 480x832 (H x W). Rotation metadata is ignored.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import av
import numpy as np

from longlive_jax.video_io import VideoWriter

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


class ClipError(Exception):
  """A video cannot give a clip; ``kind`` is ``"unreadable_video"`` or ``"too_short"``."""

  def __init__(self, kind: str, reason: str):
    super().__init__(reason)
    self.kind = kind
    self.reason = reason


def _cover_crop(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
  h0, w0 = frame.height, frame.width
  scale = max(height / h0, width / w0)
  rh, rw = max(height, round(h0 * scale)), max(width, round(w0 * scale))
  img = frame.reformat(width=rw, height=rh, format="rgb24", interpolation="AREA").to_ndarray()  # [rh, rw, 3]
  top, left = (rh - height) // 2, (rw - width) // 2
  return img[top : top + height, left : left + width]  # [H, W, 3]


def read_clip(path: str | Path, *, num_frames: int, height: int, width: int, fps: float | None) -> np.ndarray:
  """Decodes the first ``num_frames`` frames (at ``fps`` if given) of a video: ``[F, H, W, 3]`` uint8.

  Raises :class:`ClipError` for files FFmpeg cannot read and videos too short for the clip.
  """
  if num_frames < 1 or height < 1 or width < 1 or (fps is not None and fps <= 0):
    raise ValueError(f"read_clip: bad clip spec num_frames={num_frames} height={height} width={width} fps={fps}")
  targets = None if fps is None else np.arange(num_frames) / fps  # seconds
  picked: list[np.ndarray] = []
  seen, last_t, step = 0, 0.0, 0.0
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise ClipError("unreadable_video", "no video stream")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      rate = float(stream.average_rate or stream.guessed_rate or 0) or None
      prev = None  # [time, frame, converted frame or None]
      for frame in container.decode(stream):
        t = float(frame.time) if frame.time is not None else seen / (rate or 1.0)
        if seen:
          step = t - last_t
        seen, last_t = seen + 1, t
        if targets is None:
          picked.append(_cover_crop(frame, height, width))
          if len(picked) == num_frames:
            break
          continue
        cur = [t, frame, None]
        while len(picked) < num_frames and t >= targets[len(picked)] - 1e-6:
          want = targets[len(picked)]
          use = cur if prev is None or (t - want) < (want - prev[0]) else prev  # ties: the earlier frame
          if use[2] is None:
            use[2] = _cover_crop(use[1], height, width)
          picked.append(use[2])
        if len(picked) == num_frames:
          break
        prev = cur
      # The last frame stays on screen for one frame duration: it also covers targets up to then.
      if targets is not None and prev is not None:
        dur = 1.0 / rate if rate else step
        while len(picked) < num_frames and targets[len(picked)] < prev[0] + dur - 1e-6:
          if prev[2] is None:
            prev[2] = _cover_crop(prev[1], height, width)
          picked.append(prev[2])
  except ClipError:
    raise
  except (av.FFmpegError, OSError, ValueError, EOFError) as e:
    raise ClipError("unreadable_video", f"cannot decode video: {type(e).__name__}: {e}") from e
  if len(picked) < num_frames:
    if seen == 0:
      raise ClipError("unreadable_video", "no decodable frames")
    need = f"{num_frames} frames" + ("" if fps is None else f" at {fps:g} fps ({num_frames / fps:.2f} s)")
    raise ClipError("too_short", f"too short: {seen} frames ({last_t + step:.2f} s) but the clip needs {need}")
  return np.stack(picked)  # [F, H, W, 3]


# --- synthetic videos ------------------------------------------------------------------------------------

_COLORS = {
  "red": (220, 40, 40),
  "green": (40, 190, 60),
  "blue": (40, 80, 220),
  "yellow": (235, 210, 40),
  "white": (240, 240, 240),
  "black": (16, 16, 16),
  "purple": (150, 60, 190),
}
_DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}


def synthetic_clip(*, frames: int, height: int, width: int, seed: int | tuple[int, ...]) -> tuple[np.ndarray, str]:
  """A colored square moving (bouncing off the borders) on a plain background, and its caption.

  Returns ``([F, H, W, 3] uint8, caption)``; deterministic in ``seed``.
  """
  rng = np.random.default_rng(seed)
  names = list(_COLORS)
  bg, fg = rng.choice(len(names), size=2, replace=False)
  direction = list(_DIRECTIONS)[rng.integers(len(_DIRECTIONS))]
  side = max(2, min(height, width) // 4)
  speed = max(1, min(height, width) // 16)
  pos = np.array([rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)])
  vel = np.array(_DIRECTIONS[direction]) * speed
  hi = np.array([height - side, width - side])
  video = np.empty((frames, height, width, 3), np.uint8)  # [F, H, W, 3]
  for f in range(frames):
    video[f] = _COLORS[names[bg]]
    video[f, pos[0] : pos[0] + side, pos[1] : pos[1] + side] = _COLORS[names[fg]]
    nxt = pos + vel
    vel = np.where((nxt < 0) | (nxt > hi), -vel, vel)  # bounce
    pos = np.clip(pos + vel, 0, hi)
  return video, f"a {names[fg]} square moving {direction} on a {names[bg]} background"


def write_video(path: str | Path, video: np.ndarray, *, fps: float = 16.0, crf: int = 10) -> Path:
  """Writes ``[F, H, W, 3]`` uint8 frames as an mp4 (:class:`longlive_jax.video_io.VideoWriter`: H.264,
  or MPEG-4 part 2 without libx264; yuv420p, so H and W must be even) to ``path``.

  ``fps`` is rounded to an integer frame rate; ``crf`` 10 is visually lossless (4:2:0 chroma still
  blurs sharp colour edges by a few levels).
  """
  if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
    raise ValueError(f"write_video: expected [F, H, W, 3] uint8 frames, got {video.shape} {video.dtype}")
  _, h, w, _ = video.shape
  if h % 2 or w % 2:
    raise ValueError(f"write_video: height and width must be even for yuv420p, got {h}x{w}")
  with VideoWriter(path, fps=fps, crf=crf) as out:
    out.write(video)
  return out.path


@dataclasses.dataclass(frozen=True)
class SyntheticVideo:
  path: Path
  caption: str
  seed: tuple[int, int]


def write_synthetic_videos(
  folder: str | Path,
  n: int,
  *,
  frames: int,
  height: int,
  width: int,
  seed: int,
  fps: float = 16.0,
  captions: str = "sidecar",
) -> list[SyntheticVideo]:
  """Writes ``video_0000.mp4`` ... with captions, for tests and CPU smoke training.

  ``captions``: ``"sidecar"`` (``video_0000.txt`` beside each video), ``"jsonl"``
  (``captions.jsonl`` with ``{"file", "caption"}``) or ``"csv"`` (``metadata.csv`` with columns
  ``file_name,caption``). Video i is ``synthetic_clip(..., seed=(seed, i))``, so tests can rebuild
  the exact frames that were encoded.
  """
  if captions not in ("sidecar", "jsonl", "csv"):
    raise ValueError(f"write_synthetic_videos: captions={captions!r}: expected 'sidecar', 'jsonl' or 'csv'")
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  out = []
  for i in range(n):
    video, caption = synthetic_clip(frames=frames, height=height, width=width, seed=(seed, i))
    path = write_video(folder / f"video_{i:04d}.mp4", video, fps=fps)
    if captions == "sidecar":
      path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    out.append(SyntheticVideo(path, caption, (seed, i)))
  if captions == "jsonl":
    lines = [json.dumps({"file": v.path.name, "caption": v.caption}) for v in out]
    (folder / "captions.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  elif captions == "csv":
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(["file_name", "caption"])
      writer.writerows([v.path.name, v.caption] for v in out)
  return out
