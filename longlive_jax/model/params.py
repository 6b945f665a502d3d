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


def _flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple, object]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def model_from_params(cfg: WanConfig, params: Mapping, *, sharding: jax.sharding.Sharding | None = None) -> WanDiT:
  """A :class:`WanDiT` whose parameters are the arrays of ``params`` (nested dict, numpy or jax).

  Every leaf's shape is checked against the model built from ``cfg``; a mismatch
  names the parameter path and both shapes.
  """
  abstract = abstract_model(cfg)
  graphdef, state = nnx.split(abstract)
  want = _flatten(nnx.to_pure_dict(state))
  have = _flatten(params)
  missing = sorted(".".join(map(str, k)) for k in set(want) - set(have))
  extra = sorted(".".join(map(str, k)) for k in set(have) - set(want))
  if missing or extra:
    raise CheckpointError(f"parameter tree does not match the model: missing {missing[:8]}, unexpected {extra[:8]}")
  for k, spec in want.items():
    if tuple(np.shape(have[k])) != tuple(spec.shape):
      raise CheckpointError(
        f"parameter {'.'.join(map(str, k))} has shape {tuple(np.shape(have[k]))}, the model expects {tuple(spec.shape)}"
      )

  def put(x, spec):
    x = jnp.asarray(x, dtype=spec.dtype)
    return jax.device_put(x, sharding) if sharding is not None else x

  values = jax.tree.map(put, params, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, values)
  return nnx.merge(graphdef, state)


def params_of(model: nnx.Module) -> dict:
  """The model's parameters as a nested dict of arrays (the inverse of :func:`model_from_params`)."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))
