"""Lazy, read-only views of upstream state dicts, whatever file they come in.

Supported inputs:
  * ``*.safetensors`` (read with our own header parser + ``np.memmap``: no torch,
    bfloat16 included, nothing loaded until asked for);
  * a sharded safetensors checkpoint: its ``*.safetensors.index.json``;
  * a Wan model folder (``diffusion_pytorch_model.safetensors`` or its index);
  * ``torch.save`` files (``.pt`` / ``.pth``): a bare state dict, or a LongLive /
    Self-Forcing container ``{"generator" | "generator_ema" | "model": {...}}``.

Key prefixes added by wrappers (``model.``, ``module.``, FSDP / activation
checkpointing / ``torch.compile`` fragments) are stripped so every source exposes
the original Wan key names (``blocks.0.self_attn.q.weight``).

Headers are checked before any tensor is read (a safetensors entry's dtype, shape and
``data_offsets`` against each other, the other entries and the file size; a torch
tensor's view against its storage), and every floating tensor read is checked for
NaN / inf: errors name the file and the key (:class:`CheckpointError`).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from longlive_jax.convert import torch_pickle
from longlive_jax.convert.errors import CheckpointError

_ST_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}

_MAX_HEADER = 100_000_000  # bytes of JSON; the safetensors library's own limit
_FINITE_CHUNK = 1 << 24  # elements checked at once by check_finite (bounds its temporary)

# Fragments inserted into parameter names by wrappers; removed wherever they appear.
_WRAPPER_FRAGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
CONTAINER_KEYS = ("generator", "generator_ema", "model")


class TensorSource(Mapping):
  """``key -> np.ndarray`` loaded on access, with shapes known up front."""

  def __init__(self, entries: dict[str, tuple[tuple[int, ...], Callable[[], np.ndarray]]], *, origin: str):
    self._entries = entries
    self.origin = origin

  def __getitem__(self, key: str) -> np.ndarray:
    try:
      shape, load = self._entries[key]
    except KeyError:
      raise CheckpointError(f"{self.origin}: missing key {key!r}") from None
    arr = np.asarray(load())
    if tuple(arr.shape) != tuple(shape):
      raise CheckpointError(f"{self.origin}: tensor {key!r} holds data of shape {arr.shape}, its header says {shape}")
    check_finite(arr, origin=self.origin, key=key)
    return arr

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._entries[key][0])

  def with_keys(self, rename: Callable[[str], str]) -> TensorSource:
    out: dict = {}
    for k, v in self._entries.items():
      nk = rename(k)
      if nk in out:
        raise CheckpointError(f"{self.origin}: two tensors map to the same key {nk!r} after prefix stripping")
      out[nk] = v
    return TensorSource(out, origin=self.origin)


def is_floating(dtype) -> bool:
  """numpy floating dtypes and bfloat16 (an ml_dtypes extension type numpy does not count as floating)."""
  dtype = np.dtype(dtype)
  return np.issubdtype(dtype, np.floating) or dtype == np.dtype(ml_dtypes.bfloat16)


def check_finite(arr: np.ndarray, *, origin: str, key: str) -> None:
  """Raises a :class:`CheckpointError` naming ``origin``, ``key`` and the count if ``arr`` holds NaN / inf."""
  if not is_floating(arr.dtype) or arr.size == 0:
    return
  flat = arr.reshape(-1)
  bad = sum(
    int(flat[i : i + _FINITE_CHUNK].size - np.count_nonzero(np.isfinite(flat[i : i + _FINITE_CHUNK])))
    for i in range(0, flat.size, _FINITE_CHUNK)
  )
  if bad:
    raise CheckpointError(
      f"{origin}: tensor {key!r} holds {bad} non-finite value(s) (NaN / inf) out of {arr.size}; "
      "the checkpoint is corrupt or diverged, refusing to convert it"
    )


def _no_duplicate_keys(pairs):
  out = {}
  for k, v in pairs:
    if k in out:
      raise ValueError(f"duplicate key {k!r}")
    out[k] = v
  return out


def _is_count(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _read_safetensors(path: Path) -> TensorSource:
  """Parses and checks the header; tensors are read (``np.memmap``) only when asked for."""
  try:
    size = path.stat().st_size
    with open(path, "rb") as fh:
      head = fh.read(8)
      if len(head) != 8:
        raise CheckpointError(f"{path}: file too short to be a .safetensors file ({len(head)} bytes)")
      (n,) = struct.unpack("<Q", head)
      if n < 2 or n > _MAX_HEADER:
        raise CheckpointError(f"{path}: not a .safetensors file (bad header length {n})")
      if 8 + n > size:
        raise CheckpointError(
          f"{path}: the header ({n} bytes) runs past the end of the file ({size} bytes): "
          "truncated download, or not a .safetensors file"
        )
      raw = fh.read(n)
    header = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
  except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
    raise CheckpointError(f"{path}: not a readable .safetensors file (bad JSON header: {e})") from e
  if not isinstance(header, dict):
    raise CheckpointError(f"{path}: not a .safetensors file (header is not a JSON object)")
  base = 8 + n
  entries, spans = {}, []
  for key, info in header.items():
    if key == "__metadata__":
      if not isinstance(info, dict):
        raise CheckpointError(f"{path}: malformed safetensors header: __metadata__ is not an object")
      continue
    where = f"{path}: tensor {key!r}"
    if not isinstance(info, dict):
      raise CheckpointError(f"{where}: malformed safetensors header entry (not an object)")
    name, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(name, str) or name not in _ST_DTYPES:
      raise CheckpointError(f"{where}: unknown dtype {name!r:.40} (supported: {', '.join(_ST_DTYPES)})")
    if not isinstance(shape, list) or len(shape) > 64 or not all(map(_is_count, shape)):
      raise CheckpointError(f"{where}: malformed shape {shape!r:.100} (expected a list of non-negative integers)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets)):
      raise CheckpointError(f"{where}: malformed data_offsets {offsets!r:.100} (expected [begin, end])")
    dtype, shape = np.dtype(_ST_DTYPES[name]), tuple(shape)
    start, end = offsets
    nbytes = math.prod(shape) * dtype.itemsize
    if end < start:
      raise CheckpointError(f"{where}: data_offsets [{start}, {end}] are reversed")
    if end - start != nbytes:
      raise CheckpointError(
        f"{where}: data_offsets [{start}, {end}] span {end - start} bytes, but shape {shape} of {name} needs {nbytes}"
      )
    if base + end > size:
      raise CheckpointError(
        f"{where}: extends past the end of the file (bytes {base + start}..{base + end} of {size}; truncated download?)"
      )
    spans.append((start, end, key))

    def load(dtype=dtype, shape=shape, start=start, key=key):
      count = math.prod(shape)
      if count == 0:
        return np.zeros(shape, dtype)
      try:
        mm = np.memmap(path, dtype=dtype, mode="r", offset=base + start, shape=(count,))
        return np.array(mm).reshape(shape)
      except (OSError, ValueError) as e:  # the file changed since its header was read
        raise CheckpointError(f"{path}: tensor {key!r} is unreadable: {e}") from e

    entries[key] = (shape, load)
  reach, reach_key = 0, None  # the furthest end so far, and whose
  for start, end, key in sorted(s for s in spans if s[0] < s[1]):
    if start < reach:
      raise CheckpointError(f"{path}: tensors {reach_key!r} and {key!r} overlap in the file (corrupt header)")
    reach, reach_key = end, key
  return TensorSource(entries, origin=str(path))


def _read_index(path: Path) -> TensorSource:
  try:
    index = json.loads(path.read_text())
    weight_map = index["weight_map"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise CheckpointError(f"{path}: not a safetensors index (expected a JSON object with 'weight_map'): {e}") from e
  entries = {}
  shards: dict[str, TensorSource] = {}
  for key, fname in weight_map.items():
    shard_path = path.parent / fname
    if fname not in shards:
      if not shard_path.is_file():
        raise CheckpointError(f"{path}: shard {fname} (holding {key!r}) is missing from {path.parent}")
      shards[fname] = _read_safetensors(shard_path)
    shard = shards[fname]
    if key not in shard:
      raise CheckpointError(f"{path}: index says {key!r} is in {fname}, but that shard has no such tensor")
    entries[key] = shard._entries[key]
  return TensorSource(entries, origin=str(path))


def _is_tensor_dict(obj) -> bool:
  return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch_pickle.LazyTensor) for v in obj.values())


def _from_torch_dict(obj: Mapping, origin: str) -> TensorSource:
  entries = {}
  for k, t in obj.items():
    if not isinstance(t, torch_pickle.LazyTensor):
      raise CheckpointError(f"{origin}: entry {k!r} is a {type(t).__name__}, not a tensor")
    entries[str(k)] = (t.shape, t.numpy)
  return TensorSource(entries, origin=origin)


def read_torch(
  path: Path, *, container: str | None, default_keys: tuple[str, ...] = CONTAINER_KEYS, what: str = "model checkpoint"
) -> TensorSource:
  """A torch file as a :class:`TensorSource` (keys as stored, no prefix stripping).

  ``container`` names the entry to read; without it, a bare state dict is read as is, else
  the first of ``default_keys`` that holds a non-empty state dict.
  """
  obj = torch_pickle.load(path)
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{path}: expected a dict in the torch file, found {type(obj).__name__}")
  if container is not None:
    if container not in obj:
      raise CheckpointError(f"{path}: no {container!r} entry; the file has {sorted(map(str, obj))}")
    sub = obj[container]
    if not _is_tensor_dict(sub):
      raise CheckpointError(f"{path}: entry {container!r} is empty or not a state dict of tensors")
    return _from_torch_dict(sub, f"{path}[{container}]")
  if _is_tensor_dict(obj):
    return _from_torch_dict(obj, str(path))
  for key in default_keys:
    if key in obj and _is_tensor_dict(obj[key]):
      return _from_torch_dict(obj[key], f"{path}[{key}]")
  raise CheckpointError(
    f"{path}: not a {what}: expected a state dict or a container with one of "
    f"{', '.join(default_keys)}; top-level keys are {sorted(map(str, obj))[:10]}"
  )


def shape_of(src: Mapping) -> Callable[[str], tuple[int, ...]]:
  """Shape lookup that does not load tensors when ``src`` is lazy (any mapping works)."""
  if hasattr(src, "shape"):
    return src.shape
  return lambda k: tuple(np.shape(src[k]))


def strip_prefixes(key: str) -> str:
  """Removes wrapper fragments and a leading ``model.`` / ``module.`` prefix."""
  for frag in _WRAPPER_FRAGMENTS:
    key = key.replace(frag, "")
  return re.sub(r"^(?:module\.)?(?:model\.)?", "", key)


def find_weights_in_dir(path: Path) -> Path:
  """The weights file inside a Wan model folder."""
  for name in (
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors",
    "model.safetensors.index.json",
    "model.safetensors",
  ):
    if (path / name).is_file():
      return path / name
  found = sorted(path.glob("*.safetensors.index.json")) or sorted(path.glob("*.safetensors"))
  if len(found) == 1:
    return found[0]
  raise CheckpointError(
    f"{path}: no DiT weights found (expected diffusion_pytorch_model.safetensors or its .index.json"
    + (f"; several candidates: {[p.name for p in found]}" if found else "")
    + ")"
  )


def open_state_dict(path: str | Path, *, container: str | None = None) -> TensorSource:
  """Opens any supported checkpoint as a :class:`TensorSource` with upstream Wan key names."""
  path = Path(path)
  if path.is_dir():
    path = find_weights_in_dir(path)
  if not path.exists():
    raise CheckpointError(f"{path}: no such file")
  name = path.name
  if name.endswith(".index.json"):
    src = _read_index(path)
  elif name.endswith(".safetensors"):
    src = _read_safetensors(path)
  elif name.endswith((".pt", ".pth", ".bin", ".ckpt")):
    src = read_torch(path, container=container)
  else:
    # Sniff: safetensors start with a little-endian header length, torch files are zips.
    with open(path, "rb") as fh:
      magic = fh.read(4)
    if magic.startswith(b"PK"):
      src = read_torch(path, container=container)
    else:
      try:
        src = _read_safetensors(path)
      except CheckpointError:
        raise CheckpointError(
          f"{path}: not a checkpoint (expected .safetensors, a safetensors index .json, or a torch .pt/.pth)"
        ) from None
  if len(src) == 0:
    raise CheckpointError(f"{path}: the checkpoint holds no tensors")
  return src.with_keys(strip_prefixes)


def check_shapes(
  want: Mapping[str, tuple[int, ...]], src: Mapping, *, origin: str, what: str, strict: bool = True
) -> None:
  """Raises one :class:`CheckpointError` naming every missing key (with its expected shape), the unexpected
  keys (unless ``strict=False``) and the shape mismatches (both shapes) of ``src`` against ``want``.

  ``what`` names the model and its config in the message, e.g. ``"the Wan VAE config (dim=96, z_dim=16)"``.
  """
  shape = shape_of(src)
  have = set(src)
  missing = [k for k in want if k not in have]
  unexpected = sorted(have - set(want)) if strict else []
  bad = [(k, tuple(shape(k)), tuple(s)) for k, s in want.items() if k in have and tuple(shape(k)) != tuple(s)]

  def listing(items: list[str]) -> str:
    return ", ".join(items[:8]) + (" ..." if len(items) > 8 else "")

  problems = []
  if missing:
    problems.append(f"{len(missing)} missing key(s): " + listing([f"{k!r} (shape {tuple(want[k])})" for k in missing]))
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected key(s): " + listing(unexpected))
  for k, got, exp in bad[:8]:
    problems.append(f"shape mismatch for {k!r}: checkpoint has {got}, config expects {exp}")
  if len(bad) > 8:
    problems.append(f"... {len(bad) - 8} more shape mismatch(es)")
  if problems:
    raise CheckpointError(f"{origin} does not match {what}: " + "; ".join(problems))


def set_path(tree: dict, path: tuple, value) -> None:
  """``tree[path[0]][path[1]]... = value``, creating the intermediate dicts."""
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value
