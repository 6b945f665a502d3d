"""Reads ``torch.save`` zip archives (``.pt`` / ``.pth``) without torch, lazily, tensor by tensor.

A torch archive is a zip with ``<root>/data.pkl`` (the pickled object tree) and one
file per storage under ``<root>/data/<key>``. Tensors are pickled as calls to
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` where the
storage is a persistent id ``('storage', <StorageType>, key, location, numel)``.

We unpickle with a whitelist (no arbitrary code runs: only plain containers and
tensor rebuilds are accepted) and return :class:`LazyTensor` handles that read
their bytes from the zip only when ``.numpy()`` is called, so converting a 5 GB
checkpoint holds one tensor at a time, not the whole file.

Nothing in the file is trusted: before any byte of a tensor is read, its view
(offset, shape, strides) is checked against the size of its storage, and the
storage's declared size against the size of its zip entry (Python integers: no
overflow). A tensor that would reach outside its storage is refused with an error
naming the file and the tensor's key; reads are CRC-checked by ``zipfile``, so a
corrupted or truncated file raises :class:`CheckpointError` instead of giving
other values.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import pickle
import pickletools
import struct
import zipfile
import zlib
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


# What a damaged zip or pickle can raise from zipfile / pickle / our rebuild calls.
_READ_ERRORS = (
  zipfile.BadZipFile,
  zipfile.LargeZipFile,
  pickle.UnpicklingError,
  EOFError,
  OSError,
  ValueError,
  KeyError,
  IndexError,
  TypeError,
  AttributeError,
  RuntimeError,
  NotImplementedError,
  OverflowError,
  RecursionError,
  struct.error,
  zlib.error,
)
_MAX_DIMS = 64


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
  problem: str | None  # why its bytes cannot be read, found without reading them


class _Archive:
  """An open zip archive shared by the lazy tensors of one file."""

  def __init__(self, path: Path):
    self.path = path
    try:
      self.zip = zipfile.ZipFile(path)
    except _READ_ERRORS as e:
      raise CheckpointError(f"{path}: truncated or corrupt zip archive ({type(e).__name__}: {e})") from e
    names = self.zip.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pkl:
      raise CheckpointError(f"{path}: zip archive without data.pkl; not a torch checkpoint (or a truncated one)")
    self.pkl_name = pkl[0]
    self.root = pkl[0][: -len("data.pkl")]

  def _read(self, name: str, what: str) -> bytes:
    """The whole entry, CRC-checked by zipfile."""
    try:
      return self.zip.read(name)
    except _READ_ERRORS as e:
      raise CheckpointError(
        f"{self.path}: {what} is unreadable: truncated or corrupt zip archive ({type(e).__name__}: {e})"
      ) from e

  def read_pickle(self) -> bytes:
    return self._read(self.pkl_name, "data.pkl")

  def byteorder(self) -> str:
    name = f"{self.root}byteorder"
    if name not in self.zip.NameToInfo:
      return "little"  # torch < 2.1 wrote no byteorder record and only little-endian files
    return self._read(name, "the byteorder record").decode("ascii", "replace").strip()

  def storage_size(self, key: str) -> int | None:
    """Bytes of a storage's zip entry (from the central directory), None if the archive has no such entry."""
    info = self.zip.NameToInfo.get(f"{self.root}data/{key}")
    return None if info is None else info.file_size

  def read(self, key: str) -> bytes:
    if self.storage_size(key) is None:
      raise CheckpointError(f"{self.path}: storage {key!r} missing from the archive (truncated file?)")
    return self._read(f"{self.root}data/{key}", f"storage {key!r}")


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _view_problem(storage: _Storage, offset, size, stride) -> str | None:
  """Why ``as_strided(storage[offset:], size, stride)`` would not stay inside the storage (None: it does)."""
  if storage.problem is not None:
    return storage.problem
  if not (isinstance(size, tuple) and isinstance(stride, tuple)):
    return f"size {size!r} / stride {stride!r} are not tuples"
  if not (_is_int(offset) and all(map(_is_int, size)) and all(map(_is_int, stride))):
    return f"offset {offset!r}, shape {size!r} or strides {stride!r} are not integers"
  if len(size) != len(stride):
    return f"shape {size} and strides {stride} have different lengths"
  if len(size) > _MAX_DIMS:
    return f"{len(size)} dimensions (more than {_MAX_DIMS})"
  if offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
    return f"negative offset, size or stride (offset {offset}, shape {size}, strides {stride})"
  where = (
    f"shape {size} with strides {stride} at offset {offset} in storage {storage.key!r} of {storage.numel} elements"
  )
  if math.prod(size) == 0:
    return None if offset <= storage.numel else f"{where}: the offset lies past the storage"
  last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))  # python ints: no overflow
  if last >= storage.numel:
    return f"{where}: reaches element {last}, outside the storage (corrupt file)"
  return None


@dataclasses.dataclass(frozen=True)
class LazyTensor:
  """A tensor in a torch archive; ``numpy()`` reads it.

  ``problem`` says why the tensor cannot be read (its view leaves its storage, the storage
  is missing or of the wrong size); :func:`load` refuses a file holding such a tensor.
  """

  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]
  problem: str | None = None

  @property
  def dtype(self):
    return np.dtype(self.storage.dtype)

  def numpy(self) -> np.ndarray:
    path, key = self.storage.archive.path, self.storage.key
    problem = self.problem or _view_problem(self.storage, self.offset, self.shape, self.stride)
    if problem is not None:
      raise CheckpointError(f"{path}: tensor in storage {key!r}: {problem}")
    dtype = np.dtype(self.storage.dtype)
    buf = self.storage.archive.read(key)
    if len(buf) != self.storage.numel * dtype.itemsize:
      raise CheckpointError(f"{path}: storage {key!r} holds {len(buf)} bytes, not {self.storage.numel} x {dtype}")
    if math.prod(self.shape) == 0:
      return np.zeros(self.shape, dtype)
    raw = np.frombuffer(buf, dtype=dtype)
    if not self.shape:
      return np.array(raw[self.offset])
    # Checked above: every index lies inside raw. A size-1 axis never moves, whatever its stride says.
    strides = tuple(
      s * dtype.itemsize if n > 1 else dtype.itemsize for n, s in zip(self.shape, self.stride, strict=True)
    )
    view = np.lib.stride_tricks.as_strided(raw[self.offset :], shape=self.shape, strides=strides, writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_tensor(storage, offset, size, stride, *_unused):
  if not isinstance(storage, _Storage):
    raise ValueError(f"a tensor is rebuilt from a {type(storage).__name__}, not a storage")  # load() names the file
  size, stride = tuple(size), tuple(stride)
  return LazyTensor(storage, offset, size, stride, _view_problem(storage, offset, size, stride))


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
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise CheckpointError(f"{self.archive.path}: unsupported persistent id {pid!r:.200}")
    _, stype, key, _location, numel = pid[:5]
    if isinstance(stype, _StorageType):
      dtype = stype.dtype
    elif isinstance(stype, _TorchDtype):
      dtype = _TORCH_DTYPES[stype.name]
    else:
      raise CheckpointError(f"{self.archive.path}: unsupported storage type {stype!r:.200}")
    if not (isinstance(key, str) or _is_int(key)) or not _is_int(numel) or numel < 0:
      raise CheckpointError(f"{self.archive.path}: malformed storage record {pid!r:.200}")
    key = str(key)
    nbytes, size = numel * np.dtype(dtype).itemsize, self.archive.storage_size(key)
    problem = None
    if size is None:
      problem = f"storage {key!r} is missing from the archive (truncated file?)"
    elif size != nbytes:
      problem = f"storage {key!r} holds {size} bytes, its record says {numel} x {np.dtype(dtype)} = {nbytes} bytes"
    return _Storage(self.archive, key, dtype, numel, problem)


def _check_tensors(obj, path: Path) -> None:
  """Raises for the first tensor of the tree that cannot be read, naming its key path."""
  stack, seen = [(obj, ())], set()
  while stack:
    node, where = stack.pop()
    if isinstance(node, LazyTensor):
      if node.problem is not None:
        name = "/".join(map(str, where)) or "<root>"
        raise CheckpointError(f"{path}: tensor {name!r}: {node.problem}")
      continue
    if id(node) in seen:
      continue
    if isinstance(node, dict):
      seen.add(id(node))
      stack.extend((v, where + (k,)) for k, v in reversed(list(node.items())))
    elif isinstance(node, list | tuple | set | frozenset):
      seen.add(id(node))
      stack.extend((v, where + (i,)) for i, v in enumerate(node))


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_opcodes(data: bytes, path: Path) -> None:
  """Parses the pickle without running it: every length must lie inside ``data`` and every memo index be
  below its size, so the unpickler allocates O(len(data)) whatever the bytes say (a length or memo index
  of 2**32 would otherwise make it allocate gigabytes, or raise MemoryError)."""
  try:
    for op, arg, _pos in pickletools.genops(data):
      if op.name in _MEMO_PUTS and not (_is_int(arg) and 0 <= arg <= len(data)):
        raise ValueError(f"memo index {arg} out of range")
  except (ValueError, TypeError, IndexError, OverflowError, struct.error, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: data.pkl is not a well-formed pickle (corrupt file): {e}") from e


def _not_a_zip(path: Path) -> CheckpointError:
  """The error for a file that is not a readable zip: truncated zip, legacy torch pickle, or neither."""
  with open(path, "rb") as fh:
    magic = fh.read(4)
  if not magic:
    return CheckpointError(f"{path}: empty file; not a torch checkpoint")
  if magic.startswith(b"PK"):
    return CheckpointError(
      f"{path}: truncated or corrupt zip archive (no zip central directory; an incomplete download?)"
    )
  if magic[:1] == b"\x80":  # pickle protocol opcode: torch.save(..., _use_new_zipfile_serialization=False)
    return CheckpointError(
      f"{path}: not a torch zip checkpoint (legacy non-zip torch.save files are not supported; "
      "re-save with torch >= 1.6, or convert to .safetensors)"
    )
  return CheckpointError(f"{path}: not a torch checkpoint (neither a zip archive nor a legacy torch pickle)")


def load(path: str | Path) -> Any:
  """Loads the object tree of a torch archive; tensors become :class:`LazyTensor`.

  Every tensor is checked against its storage first: a file holding one that cannot be
  read raises :class:`CheckpointError` naming the file and the tensor's key path.
  """
  path = Path(path)
  if not path.is_file():
    raise CheckpointError(f"{path}: no such file")
  if not zipfile.is_zipfile(path):
    raise _not_a_zip(path)
  archive = _Archive(path)
  order = archive.byteorder()
  if order != "little":
    raise CheckpointError(f"{path}: byteorder {order[:20]!r} is not supported (only little-endian files are read)")
  data = archive.read_pickle()
  _check_opcodes(data, path)
  try:
    obj = _Unpickler(io.BytesIO(data), archive).load()
  except CheckpointError:
    raise
  except _READ_ERRORS as e:
    raise CheckpointError(f"{path}: cannot read torch checkpoint: {type(e).__name__}: {e}") from e
  _check_tensors(obj, path)
  return obj
