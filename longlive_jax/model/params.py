"""Moving parameters between nested dicts (numpy / jax) and NNX models.

NNX modules are used as pytrees at jit boundaries: ``graphdef, params = nnx.split(model)``
once, then ``params`` is passed to jitted functions which call ``nnx.merge``.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longlive_jax.config import WanConfig
from longlive_jax.convert.errors import CheckpointError
from longlive_jax.model.wan import WanDiT, abstract_model


def check_tree(want: Mapping, params: Mapping, *, origin: str = "parameter tree") -> None:
  """Raises a :class:`CheckpointError` naming the first leaf of ``params`` whose path or shape is not in ``want``.

  Both are nested dicts; ``want``'s leaves only need a ``.shape`` (e.g. ``jax.ShapeDtypeStruct``).
  """
  want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  extra = sorted(jax.tree_util.keystr(k) for k in set(got) - set(want))
  if extra:
    raise CheckpointError(f"{origin}: unexpected parameter(s) {extra[:8]} for this config")
  for key, spec in want.items():
    shape = tuple(np.shape(got[key])) if key in got else None
    if shape != tuple(spec.shape):
      raise CheckpointError(
        f"{origin}: parameter {jax.tree_util.keystr(key)} has shape {shape}, but the config implies {tuple(spec.shape)}"
      )


def check_params(cfg: WanConfig, params: Mapping, *, origin: str = "parameter tree") -> None:
  """Raises a :class:`CheckpointError` naming the first parameter whose path or shape does not fit ``cfg``."""
  check_tree(params_of(abstract_model(cfg)), params, origin=origin)


def module_from_params(
  abstract: nnx.Module,
  params: Mapping,
  *,
  origin: str = "parameter tree",
  sharding: jax.sharding.Sharding | None = None,
) -> nnx.Module:
  """A copy of ``abstract`` (``jax.ShapeDtypeStruct`` leaves) holding the arrays of ``params`` (nested dict).

  Every leaf is checked (:func:`check_tree`) and cast to the dtype of its abstract leaf; ``abstract``
  itself is left untouched (the filled state is a new mapping), so a cached template can be reused.
  """
  graphdef, state = nnx.split(abstract)
  want = nnx.to_pure_dict(state)
  check_tree(want, params, origin=origin)

  def put(x, spec):
    x = jnp.asarray(x, dtype=spec.dtype)
    return jax.device_put(x, sharding) if sharding is not None else x

  nnx.replace_by_pure_dict(state, jax.tree.map(put, params, want))
  return nnx.merge(graphdef, state)


def model_from_params(cfg: WanConfig, params: Mapping, *, sharding: jax.sharding.Sharding | None = None) -> WanDiT:
  """A :class:`WanDiT` whose parameters are the arrays of ``params`` (nested dict, numpy or jax).

  Every leaf's shape is checked against the model built from ``cfg`` (:func:`check_tree`).
  """
  return module_from_params(abstract_model(cfg), params, sharding=sharding)


def params_of(model: nnx.Module) -> dict:
  """The model's parameters as a nested dict of arrays (the inverse of :func:`model_from_params`)."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))
