"""Writes ``torch.save``-compatible files without torch (the inverse of :mod:`torch_pickle`).

Used to export weights to upstream formats (a LongLive ``{"generator": ...}`` container, a
PEFT LoRA dict, ``Wan2.1_VAE.pth``) and by the tests to build tiny upstream checkpoints.
The layout is torch's zip format: ``archive/data.pkl`` (a protocol-2 pickle whose tensors are
``torch._utils._rebuild_tensor_v2`` calls on persistent storages), ``archive/data/<n>`` raw
little-endian storages, ``archive/version``. Values may be nested dicts of numpy arrays
(float32, float16, bfloat16, int64) plus ints / floats / strings.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

_STORAGE = {
  np.dtype(np.float32): "FloatStorage",
  np.dtype(np.float16): "HalfStorage",
  np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
  np.dtype(np.int64): "LongStorage",
  np.dtype(np.int32): "IntStorage",
}


class _Global:
  """Pickled as a GLOBAL opcode naming a torch object (callable: pickle's ``save_reduce`` checks)."""

  def __init__(self, module: str, name: str):
    self.ref = f"{module}\n{name}\n".encode()

  def __call__(self, *args):
    raise NotImplementedError


class _Tensor:
  def __init__(self, key: str, arr: np.ndarray):
    self.key, self.arr = key, arr

  def __reduce__(self):
    stride = tuple(s // self.arr.itemsize for s in self.arr.strides)
    storage = ("storage", _Global("torch", _STORAGE[self.arr.dtype]), self.key, "cpu", self.arr.size)
    return _Global("torch._utils", "_rebuild_tensor_v2"), (
      storage,
      0,
      self.arr.shape,
      stride,
      False,
      collections.OrderedDict(),
    )


class _Pickler(pickle._Pickler):
  dispatch = dict(pickle._Pickler.dispatch)
  dispatch[_Global] = lambda self, obj: self.write(pickle.GLOBAL + obj.ref)

  def persistent_id(self, obj):
    return obj if isinstance(obj, tuple) and obj and obj[0] == "storage" else None


def save(path: str | Path, obj, *, dtype=None) -> Path:
  """Writes ``obj`` (nested dicts of arrays) like ``torch.save``; ``dtype`` casts every float array."""
  tensors: list[_Tensor] = []

  def wrap(x):
    if isinstance(x, Mapping):
      return collections.OrderedDict((k, wrap(v)) for k, v in x.items())
    if isinstance(x, np.ndarray | np.generic) or hasattr(x, "__array__"):
      arr = np.asarray(x)
      if dtype is not None and (np.issubdtype(arr.dtype, np.floating) or arr.dtype == ml_dtypes.bfloat16):
        arr = arr.astype(dtype)
      arr = np.ascontiguousarray(arr)
      if arr.dtype not in _STORAGE:
        raise TypeError(f"cannot write a {arr.dtype} tensor in torch format")
      t = _Tensor(str(len(tensors)), arr)
      tensors.append(t)
      return t
    return x

  buf = io.BytesIO()
  _Pickler(buf, protocol=2).dump(wrap(obj))
  path = Path(path)
  tmp = path.with_name(f".{path.name}.partial")
  with zipfile.ZipFile(tmp, "w") as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr("archive/version", "3\n")
    for t in tensors:
      zf.writestr(f"archive/data/{t.key}", t.arr.tobytes())
  os.replace(tmp, path)
  return path
