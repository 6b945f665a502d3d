"""Reads ``torch.save`` zip archives (``.pt`` / ``.pth``) without torch, lazily, tensor by tensor.

A torch archive is a zip with ``<root>/data.pkl`` (the pickled object tree) and one
file per storage under ``<root>/data/<key>``. Tensors are pickled as calls to
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` where the
storage is a persistent id ``('storage', <StorageType>, key, location, numel)``.

We unpickle with a whitelist (no arbitrary code runs: only plain containers and
tensor rebuilds are accepted) and return :class:`LazyTensor` handles that read
their bytes from the zip only when ``.numpy()`` is called, so converting a 5 GB
checkpoint holds one tensor at a time, not the whole file.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from longlive_jax.convert.errors import CheckpointError

_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "BFloat16Storage": ml_dtypes.bfloat16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}

_TORCH_DTYPES = {
  "float32": np.float32,
  "float": np.float32,
  "float64": np.float64,
  "double": np.float64,
  "float16": np.float16,
  "half": np.float16,
  "bfloat16": ml_dtypes.bfloat16,
  "int64": np.int64,
  "long": np.int64,
  "int32": np.int32,
  "int": np.int32,
  "int16": np.int16,
  "int8": np.int8,
  "uint8": np.uint8,
  "bool": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str

  @property
  def dtype(self):
    return _STORAGE_DTYPES[self.name]


@dataclasses.dataclass(frozen=True)
class _TorchDtype:
  name: str


@dataclasses.dataclass(frozen=True)
class _Storage:
  archive: _Archive
  key: str
  dtype: Any
  numel: int


class _Archive:
  """An open zip archive shared by the lazy tensors of one file."""

  def __init__(self, path: Path):
    self.path = path
    self.zip = zipfile.ZipFile(path)
    names = self.zip.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pkl:
      raise CheckpointError(f"{path}: zip archive without data.pkl; not a torch checkpoint")
    self.pkl_name = pkl[0]
    self.root = pkl[0][: -len("data.pkl")]

  def read(self, key: str) -> bytes:
    try:
      return self.zip.read(f"{self.root}data/{key}")
    except KeyError:
      raise CheckpointError(f"{self.path}: storage {key!r} missing from the archive (truncated file?)") from None


@dataclasses.dataclass(frozen=True)
class LazyTensor:
  """A tensor in a torch archive; ``numpy()`` reads it."""

  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]

  @property
  def dtype(self):
    return np.dtype(self.storage.dtype)

  def numpy(self) -> np.ndarray:
    raw = np.frombuffer(self.storage.archive.read(self.storage.key), dtype=self.storage.dtype)
    if raw.size < self.storage.numel:
      raise CheckpointError(f"{self.storage.archive.path}: storage {self.storage.key!r} is truncated")
    if not self.shape:
      return raw[self.offset].copy()
    itemsize = raw.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
      raw[self.offset :], shape=self.shape, strides=tuple(s * itemsize for s in self.stride), writeable=False
    )
    return np.ascontiguousarray(view)


def _rebuild_tensor(storage, offset, size, stride, *_unused):
  return LazyTensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_unused):
  return data


class _Unpickler(pickle.Unpickler):
  _ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
  }

  def __init__(self, fh, archive: _Archive):
    super().__init__(fh)
    self.archive = archive

  def find_class(self, module: str, name: str):
    if (module, name) in self._ALLOWED:
      return self._ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module == "torch" and name in _TORCH_DTYPES:
      return _TorchDtype(name)
    if module == "torch" and name == "Size":
      return tuple
    if module.startswith("omegaconf") or module.startswith("argparse") or module == "pathlib":
      # Training saves sometimes pickle their config; keep a readable placeholder.
      return lambda *a, **k: {"__unreadable__": f"{module}.{name}"}
    raise CheckpointError(
      f"{self.archive.path}: refusing to unpickle {module}.{name} (only tensors and plain containers are read)"
    )

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise CheckpointError(f"{self.archive.path}: unsupported persistent id {pid!r}")
    _, stype, key, _location, numel = pid[:5]
    if isinstance(stype, _StorageType):
      dtype = stype.dtype
    elif isinstance(stype, _TorchDtype):
      dtype = _TORCH_DTYPES[stype.name]
    else:
      raise CheckpointError(f"{self.archive.path}: unsupported storage type {stype!r}")
    return _Storage(self.archive, str(key), dtype, int(numel))


def load(path: str | Path) -> Any:
  """Loads the object tree of a torch archive; tensors become :class:`LazyTensor`."""
  path = Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path}: no such file")
  if not zipfile.is_zipfile(path):
    raise CheckpointError(
      f"{path}: not a torch zip checkpoint (legacy non-zip torch.save files are not supported; "
      "re-save with torch >= 1.6, or convert to .safetensors)"
    )
  try:
    archive = _Archive(path)
    with archive.zip.open(archive.pkl_name) as fh:
      return _Unpickler(fh, archive).load()
  except CheckpointError:
    raise
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{path}: cannot read torch checkpoint: {e}") from e
