"""Output paths of ``longlive-jax generate`` / ``interactive``: the accepted suffixes, the checks that every
output file and PNG folder can be written (before the model is loaded), and :class:`_Target`, the files of one video.

Split from :mod:`longlive_jax.cli_stream` (which re-exports every name here) so the command module holds the
commands; this module needs nothing from it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from longlive_jax.stream import run as srun

VIDEO_SUFFIX, LATENTS_SUFFIX = ".mp4", ".npz"
OUT_SUFFIXES = (VIDEO_SUFFIX, LATENTS_SUFFIX)


def _check_writable_file(path: Path, what: str, *, overwrite: bool) -> None:
  """``path`` can become a file: not a folder, not an existing file (unless ``overwrite``), in a folder that
  exists or can be created and is writable."""
  if path.is_dir():
    raise srun.StreamInputError(f"{what} {path}: is a folder; give a file name ending in {' or '.join(OUT_SUFFIXES)}")
  if path.exists() and not overwrite:
    raise srun.StreamInputError(f"{what} {path}: already exists; pass --overwrite to replace it")
  _check_folder_creatable(path.parent, f"{what} {path}")


def _check_folder_creatable(folder: Path, what: str) -> None:
  for d in [folder, *folder.parents]:
    if d.exists():
      if not d.is_dir():
        raise srun.StreamInputError(f"{what}: {d} is a file, not a folder")
      if not os.access(d, os.W_OK | os.X_OK):
        raise srun.StreamInputError(f"{what}: cannot write into {d} (permission denied)")
      return


_FRAME_FILE = re.compile(r"frame_\d+\.png")


def _frame_files(folder: Path) -> list[Path]:
  """The PNG frames of an earlier run in ``folder`` (and its per-sample subfolders 0, 1, ...)."""
  if not folder.is_dir():
    return []
  dirs = [folder, *(d for d in folder.iterdir() if d.is_dir() and d.name.isdigit())]
  return [f for d in dirs for f in d.iterdir() if _FRAME_FILE.fullmatch(f.name)]


def _check_png_dir(folder: Path, *, overwrite: bool) -> None:
  if folder.exists() and not folder.is_dir():
    raise srun.StreamInputError(f"--png-dir {folder}: is a file, not a folder")
  if _frame_files(folder) and not overwrite:
    raise srun.StreamInputError(f"--png-dir {folder}: already holds PNG frames; pass --overwrite to replace them")
  _check_folder_creatable(folder, f"--png-dir {folder}")


class _Target:
  """The files of one video: ``out`` (.mp4 or .npz), the latents (.npz) and a PNG folder, checked before any work."""

  def __init__(self, out: Path, *, latents: str | None, png_dir: str | None, batch: int, overwrite: bool):
    self.out = out
    self.video = out if out.suffix == VIDEO_SUFFIX else None
    self.latents = Path(latents) if latents else (None if self.video is not None else out)
    self.png_dir = Path(png_dir) if png_dir else None
    self.overwrite = overwrite
    files = [(self.latents, "--latents" if latents else "--out")] if self.latents is not None else []
    if self.video is not None:
      files += [(p, "--out") for p in self.videos(batch)]
    for path, what in files:
      _check_writable_file(path, what, overwrite=overwrite)
    if self.png_dir is not None:
      _check_png_dir(self.png_dir, overwrite=overwrite)

  def videos(self, batch: int) -> list[Path]:
    """The mp4 files the video sink writes (``stem_i.mp4`` per sample when the prompts hold a batch)."""
    v = self.video
    return [v] if batch == 1 else [v.with_name(f"{v.stem}_{i}{VIDEO_SUFFIX}") for i in range(batch)]

  def sink(self, model, fps: float):
    """The VAE video sink (None for latents only); frames of an earlier run are removed (--overwrite).
    ``model`` is the command's ``cli_stream._Model``; only its checkpoint folder (``ckpt``) is read."""
    if self.video is None and self.png_dir is None:
      return None
    from longlive_jax import pipeline

    if self.png_dir is not None:
      for f in _frame_files(self.png_dir):
        f.unlink()
    return pipeline.VideoSink(model.ckpt, video_path=self.video, png_dir=self.png_dir, fps=fps)


def _check_out_suffix(out: Path, *, folder_ok: bool = False) -> None:
  if out.suffix in OUT_SUFFIXES or (folder_ok and not out.suffix):
    return
  accepted = " or ".join(OUT_SUFFIXES) + (" or a folder" if folder_ok else "")
  got = f"extension {out.suffix!r}" if out.suffix else "no extension"
  raise srun.StreamInputError(f"--out {out}: {got}; accepted: {accepted} (video or latents)")


def _check_common(a) -> None:
  """The options every stream command shares that need nothing but their own values."""
  if a.fps is not None and not (math.isfinite(a.fps) and a.fps > 0):
    raise srun.StreamInputError(f"--fps {a.fps:g}: must be a positive frame rate (frames per second)")
  if a.latents is not None and Path(a.latents).suffix != LATENTS_SUFFIX:
    raise srun.StreamInputError(f"--latents {a.latents}: must end in {LATENTS_SUFFIX}")
  if a.latents is not None and Path(a.out).suffix == LATENTS_SUFFIX:
    raise srun.StreamInputError(
      f"--latents {a.latents}: goes with a video --out (.mp4); --out {a.out} already receives the latents"
    )


def _need_vae(model, target: _Target) -> None:
  """Writing video needs the checkpoint's VAE (``model``: a ``cli_stream._Model``; only ``ckpt`` is read)."""
  if target.video is not None or target.png_dir is not None:
    from longlive_jax import pipeline

    pipeline.require_components(model.ckpt, ["vae"], why="writing video")
