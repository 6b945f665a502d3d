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


def check_params(cfg: WanConfig, params: Mapping, *, origin: str = "parameter tree") -> None:
  """Raises a :class:`CheckpointError` naming the first parameter whose path or shape does not fit ``cfg``."""
  want = dict(jax.tree_util.tree_flatten_with_path(params_of(abstract_model(cfg)))[0])
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


def model_from_params(cfg: WanConfig, params: Mapping, *, sharding: jax.sharding.Sharding | None = None) -> WanDiT:
  """A :class:`WanDiT` whose parameters are the arrays of ``params`` (nested dict, numpy or jax).

  Every leaf's shape is checked against the model built from ``cfg`` (:func:`check_params`).
  """
  check_params(cfg, params)
  graphdef, state = nnx.split(abstract_model(cfg))

  def put(x, spec):
    x = jnp.asarray(x, dtype=spec.dtype)
    return jax.device_put(x, sharding) if sharding is not None else x

  values = jax.tree.map(put, params, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, values)
  return nnx.merge(graphdef, state)


def params_of(model: nnx.Module) -> dict:
  """The model's parameters as a nested dict of arrays (the inverse of :func:`model_from_params`)."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))
