"""Registry of training stages: ``STAGES[name](cfg: TrainConfig) -> Stage``.

A stage module ``longlive_jax.train.stages.<module>`` exposes ``make_stage(cfg) -> Stage`` (the
contract of :mod:`longlive_jax.train.stage`) and, optionally, a frozen dataclass ``Options``: the
``options:`` section of the train config is then type-checked and converted to it (unknown keys and
wrong types fail with the key named); without one ``cfg.options`` is a read-only mapping.

Stages other than the teacher are registered lazily: their module is imported only when the stage
is asked for, so a missing module gives a clear error instead of breaking every import. Add a stage
with ``STAGES["name"] = make_stage`` (or :func:`lazy`).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from longlive_jax.train.stages import teacher


class StageError(ValueError):
  """An unknown or unavailable training stage."""


def _import(module: str):
  name = f"{__name__}.{module}"
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name != name:
      raise
    raise StageError(f"training stage module {name} is not available (not implemented in this installation)") from e


def lazy(module: str) -> Callable[[Any], Any]:
  """A ``make_stage`` that imports ``longlive_jax.train.stages.<module>`` on first use."""

  def make_stage(cfg):
    mod = _import(module)
    if not hasattr(mod, "make_stage"):
      raise StageError(f"{mod.__name__} defines no make_stage(cfg)")
    return mod.make_stage(cfg)

  make_stage.module = module
  return make_stage


STAGES: dict[str, Callable[[Any], Any]] = {
  "teacher": teacher.make_stage,
  "ode-init": lazy("ode_init"),
  "self-forcing": lazy("self_forcing"),
  "streaming-long": lazy("streaming_long"),
  "forced": lazy("forced"),
  "vae": lazy("vae"),
}


def get_stage(name: str) -> Callable[[Any], Any]:
  try:
    return STAGES[name]
  except KeyError:
    raise StageError(f"unknown training stage {name!r}; valid stages: {', '.join(STAGES)}") from None


def options_class(name: str) -> type | None:
  """The stage module's ``Options`` dataclass, or None (also None while the module is missing)."""
  factory = get_stage(name)
  module = getattr(factory, "module", None)
  if module is not None:
    try:
      mod = _import(module)
    except StageError:
      return None
  else:
    mod = importlib.import_module(factory.__module__)
  cls = getattr(mod, "Options", None)
  return cls if cls is not None and dataclasses.is_dataclass(cls) else None
