"""The generic machinery behind the training configuration: typed frozen dataclasses built from (nested)
mappings, every value checked against its field's annotation, ``key=value`` overrides, YAML reading, and the
conversion back to plain data.

Nothing here knows the training sections or the stages: :mod:`longlive_jax.train.config` defines the
dataclasses and the stage-specific loading on top of it and re-exports every name of this module.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from longlive_jax.config import ConfigError


class TrainConfigError(ConfigError):
  """A bad training configuration (file, key, type or value); the message names the key at fault."""


class _RelativeKeyError(TrainConfigError):
  """Raised by a section's ``__post_init__`` with a key relative to the section; :func:`build` prefixes the
  section's own key (``overrides.dim`` -> ``model.overrides.dim``)."""


def _fields(cls) -> dict[str, Any]:
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp) -> str:
  return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
  """``value`` converted to the annotation ``tp`` or a :class:`TrainConfigError` naming ``key``."""
  origin = typing.get_origin(tp)
  if tp is Any:
    return value
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    for a in args:
      if a is type(None):
        continue
      try:
        return _coerce(value, a, key)
      except TrainConfigError:
        pass
    raise TrainConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, Mapping):
      raise TrainConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
    return build(tp, value, prefix=key + ".")
  if origin in (dict, Mapping) or tp in (dict, Mapping):
    if not isinstance(value, Mapping):
      raise TrainConfigError(f"{key}: expected a mapping, got {value!r}")
    return dict(value)
  if origin in (tuple, list) or tp in (tuple, list):
    if not isinstance(value, (list, tuple)):
      raise TrainConfigError(f"{key}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    if args and (origin or tp) is tuple and not (len(args) == 2 and args[1] is Ellipsis) and len(args) != len(value):
      raise TrainConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
    variadic = len(args) == 2 and args[1] is Ellipsis

    def item(i: int):
      return Any if not args else args[0] if variadic or (origin or tp) is list else args[i]

    out = [_coerce(v, item(i), f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if (origin or tp) is tuple else out
  if tp is bool:
    if isinstance(value, bool):
      return value
  elif tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if isinstance(value, str):
      try:
        return float(value)
      except ValueError:
        pass
  elif tp is str:
    if isinstance(value, str):
      return value
  else:
    raise TrainConfigError(f"{key}: unsupported field type {tp!r}")
  raise TrainConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def build(cls, values: Mapping[str, Any], *, prefix: str = "") -> Any:
  """An instance of the config dataclass ``cls`` from a (nested) mapping, every field type-checked."""
  fields = _fields(cls)
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise TrainConfigError(
      f"unknown key {prefix}{unknown[0]}; valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(fields)}"
    )
  missing = [
    n
    for n, f in ((f.name, f) for f in dataclasses.fields(cls))
    if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
  ]
  if missing:
    raise TrainConfigError(f"missing required key {prefix}{missing[0]}")
  kw = {name: _coerce(v, fields[name], prefix + name) for name, v in values.items()}
  try:
    return cls(**kw)
  except _RelativeKeyError as e:
    msg = str(e)
    raise TrainConfigError(
      msg.replace("key ", f"key {prefix}", 1) if msg.startswith("unknown") else prefix + msg
    ) from e
  except TrainConfigError:
    raise
  except (ValueError, TypeError) as e:
    raise TrainConfigError(f"{prefix[:-1] or cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> Any:
  """A config dataclass as plain YAML/JSON-able data (tuples -> lists)."""
  if dataclasses.is_dataclass(cfg):
    return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
  if isinstance(cfg, Mapping):
    return {k: to_dict(v) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return [to_dict(v) for v in cfg]
  return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
  """``"a.b=value"`` -> ``(["a", "b"], parsed value)`` (YAML scalar syntax; strings stay as typed)."""
  if "=" not in text:
    raise TrainConfigError(f"override {text!r}: expected key=value (e.g. steps=100 or optim.lr=1e-5)")
  key, raw = text.split("=", 1)
  key = key.strip()
  if not key or any(not p for p in key.split(".")):
    raise TrainConfigError(f"override {text!r}: empty key")
  try:
    value = yaml.safe_load(raw) if raw.strip() else ""
  except yaml.YAMLError:
    value = raw
  if isinstance(value, (int, float, bool)) or value is None or isinstance(value, (list, dict)):
    return key.split("."), value
  return key.split("."), raw  # strings verbatim (no YAML date / octal surprises)


def _check_override_path(path: list[str], cls) -> None:
  """Unknown dotted keys fail here, naming the valid ones (free-form mappings accept any sub-key)."""
  tp: Any = cls
  for i, part in enumerate(path):
    if not dataclasses.is_dataclass(tp):
      return  # a dict-typed field (model.overrides, options): anything goes below it
    fields = _fields(tp)
    if part not in fields:
      where = ".".join(path[:i])
      raise TrainConfigError(
        f"unknown key {'.'.join(path[: i + 1])}; valid keys{' under ' + where if where else ''}: {', '.join(fields)}"
      )
    tp = fields[part]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
      tp = args[0]


def apply_overrides(values: dict[str, Any], overrides: Sequence[str], *, cls=None) -> dict[str, Any]:
  """Applies ``key=value`` strings to a nested dict (copied). With ``cls`` unknown keys fail at once."""
  out = _deepcopy(values)
  for text in overrides:
    path, value = parse_override(text)
    if cls is not None and path[0] != "options":
      _check_override_path(path, cls)
    node = out
    for part in path[:-1]:
      nxt = node.get(part)
      if nxt is None:
        nxt = node[part] = {}
      elif not isinstance(nxt, dict):
        raise TrainConfigError(f"override {text!r}: {part} is a value, not a section")
      node = nxt
    node[path[-1]] = value
  return out


def _deepcopy(d: Any) -> Any:
  if isinstance(d, Mapping):
    return {k: _deepcopy(v) for k, v in d.items()}
  if isinstance(d, list):
    return [_deepcopy(v) for v in d]
  return d


def read_yaml(path: str | Path) -> dict[str, Any]:
  p = Path(path)
  try:
    values = yaml.safe_load(p.read_text(encoding="utf-8"))
  except OSError as e:
    raise TrainConfigError(f"cannot read train config {p}: {e}") from e
  except yaml.YAMLError as e:
    raise TrainConfigError(f"{p}: not valid YAML: {e}") from e
  if values is None:
    values = {}
  if not isinstance(values, dict):
    raise TrainConfigError(f"{p}: a train config must be a YAML mapping, got {type(values).__name__}")
  return values
