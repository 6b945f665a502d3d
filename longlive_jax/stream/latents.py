"""Stream outputs: latents written to an ``.npz`` block by block (:class:`LatentFile`).

Split from :mod:`longlive_jax.stream.run`, which re-exports these names.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from longlive_jax import layout


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
