"""Upstream Wan VAE state dict (``Wan2.1_VAE.pth``) <-> the parameter tree of :class:`~longlive_jax.vae.model.WanVAE`.

Upstream keys (``encoder.downsamples.3.residual.2.weight`` ...) map onto our module tree by
renaming; layouts change as follows:
  * Conv3d weights ``[O, I, kT, kH, kW]`` -> kernels ``[kT, kH, kW, I, O]``;
  * Conv2d weights ``[O, I, kH, kW]`` (spatial resample, attention ``to_qkv`` / ``proj``)
    -> kernels ``[kH, kW, I, O]``;
  * ``RMS_norm.gamma [C, 1, 1, 1]`` (``[C, 1, 1]`` in attention blocks) -> ``[C]``.

Renames: inside a residual block ``residual.0/.2/.3/.6`` are ``norm1/conv1/norm2/conv2``;
inside a resample block ``resample.1`` is ``conv``; ``head.0``/``head.2`` are
``head_norm``/``head_conv``; ``weight`` of a conv is ``kernel``.

Every key and shape is checked before anything is converted: errors name the file,
the key and both shapes (:class:`~longlive_jax.convert.errors.CheckpointError`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longlive_jax.convert import lazy, sources
from longlive_jax.convert.errors import CheckpointError
from longlive_jax.model.params import module_from_params
from longlive_jax.vae.config import VAEConfig
from longlive_jax.vae.model import WanVAE, abstract_vae

# Our name of a module inside a numbered block -> upstream's.
_IN_BLOCK = {
  "norm1": "residual.0",
  "conv1": "residual.2",
  "norm2": "residual.3",
  "conv2": "residual.6",
  "conv": "resample.1",
}
_TOP = {"head_norm": "head.0", "head_conv": "head.2"}


def _path_names(path) -> tuple:
  return tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)


def upstream_key(path: tuple) -> str:
  """Our parameter path (e.g. ``('encoder', 'downsamples', 3, 'conv1', 'kernel')``) -> upstream key."""
  parts, after_index = [], False
  for i, p in enumerate(path):
    if isinstance(p, int):
      parts.append(str(p))
      after_index = True
      continue
    if i == len(path) - 1:
      parts.append("weight" if p == "kernel" else p)
    elif after_index and p in _IN_BLOCK:
      parts.append(_IN_BLOCK[p])
    else:
      parts.append(_TOP.get(p, p))
    after_index = False
  return ".".join(parts)


def _to_upstream_shape(path: tuple, shape: tuple[int, ...]) -> tuple[int, ...]:
  leaf = path[-1]
  if leaf == "kernel":
    *k, i, o = shape
    return (o, i, *k)
  if leaf == "gamma":
    # Attention blocks normalise per frame (images=True): gamma [C, 1, 1]; elsewhere [C, 1, 1, 1].
    return (shape[0], 1, 1) if path[-2] == "norm" else (shape[0], 1, 1, 1)
  return tuple(shape)


def _from_upstream(path: tuple, w: np.ndarray) -> np.ndarray:
  leaf = path[-1]
  if leaf == "kernel":
    return w.transpose(*range(2, w.ndim), 1, 0)  # [O, I, *k] -> [*k, I, O]
  if leaf == "gamma":
    return w.reshape(-1)
  return w


def _to_upstream(path: tuple, w: np.ndarray) -> np.ndarray:
  leaf = path[-1]
  if leaf == "kernel":
    k = w.ndim - 2
    return w.transpose(k + 1, k, *range(k))  # [*k, I, O] -> [O, I, *k]
  if leaf == "gamma":
    return w.reshape(_to_upstream_shape(path, w.shape))
  return w


@functools.lru_cache(maxsize=8)
def _abstract_split(cfg: VAEConfig):
  """``nnx.split`` of the abstract model (tracing the initialisers takes ~1 s: done once per config)."""
  return nnx.split(abstract_vae(cfg))


def param_specs(cfg: VAEConfig) -> list[tuple[tuple, jax.ShapeDtypeStruct]]:
  """``(our path, abstract array)`` for every parameter, in a fixed order."""
  state = nnx.to_pure_dict(_abstract_split(cfg)[1])
  return [(_path_names(p), s) for p, s in jax.tree_util.tree_flatten_with_path(state)[0]]


def expected_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
  """Every upstream key of a Wan VAE with this config and its shape (194 keys for Wan2.1)."""
  return {upstream_key(p): _to_upstream_shape(p, tuple(s.shape)) for p, s in param_specs(cfg)}


def check_keys(src: Mapping, cfg: VAEConfig, *, origin: str, strict: bool = True) -> None:
  """Raises a :class:`CheckpointError` naming missing / unexpected keys and shape mismatches (with both shapes)."""
  what = f"the Wan VAE config (dim={cfg.dim}, z_dim={cfg.z_dim})"
  sources.check_shapes(expected_shapes(cfg), src, origin=origin, what=what, strict=strict)


def infer_config(src: Mapping, *, base: VAEConfig | None = None) -> VAEConfig:
  """Base width and latent channels read from the tensor shapes; the rest from ``base`` (Wan2.1 by default)."""
  shape_of = sources.shape_of(src)
  origin = getattr(src, "origin", "state dict")
  for k in ("encoder.conv1.weight", "conv2.weight"):
    if k not in src:
      raise CheckpointError(f"{origin}: cannot infer the VAE config: missing {k!r} (is this a Wan VAE checkpoint?)")
  base = base or VAEConfig()
  return base.replace(dim=int(shape_of("encoder.conv1.weight")[0]), z_dim=int(shape_of("conv2.weight")[0]))


def convert_lazy(src: Mapping, cfg: VAEConfig, *, dtype: str | None = None, strict: bool = True) -> dict:
  """Like :func:`convert`, but every leaf is a :class:`~longlive_jax.convert.lazy.LazyLeaf` (read when computed)."""
  origin = getattr(src, "origin", "state dict")
  check_keys(src, cfg, origin=origin, strict=strict)
  out_dtype = jnp.dtype(dtype or cfg.param_dtype)

  def parts(path):
    yield None, _from_upstream(path, np.asarray(src[upstream_key(path)]))

  tree: dict = {}
  for path, spec in param_specs(cfg):
    sources.set_path(tree, path, lazy.lazy_leaf(spec.shape, out_dtype, lambda p=path: parts(p), stacked=False))
  return tree


def convert(src: Mapping, cfg: VAEConfig, *, dtype: str | None = None, strict: bool = True) -> dict:
  """Our nested parameter dict (numpy) from an upstream-keyed mapping (lazy :class:`TensorSource` or dict).

  ``strict=False`` tolerates extra keys (never missing ones or wrong shapes).
  """
  return lazy.materialize_tree(convert_lazy(src, cfg, dtype=dtype, strict=strict))


def to_upstream(params: Mapping, cfg: VAEConfig) -> dict[str, np.ndarray]:
  """Inverse of :func:`convert` (export and round-trip tests)."""
  out = {}
  for path, _ in param_specs(cfg):
    node = params
    for p in path:
      node = node[p]
    out[upstream_key(path)] = np.ascontiguousarray(_to_upstream(path, np.asarray(node)))
  return out


def vae_from_params(cfg: VAEConfig, params: Mapping) -> WanVAE:
  """A :class:`WanVAE` holding the arrays of ``params`` (from :func:`convert`); paths and shapes are checked."""
  # merge shares the cached template's abstract variables; module_from_params fills a new state, not them
  return module_from_params(nnx.merge(*_abstract_split(cfg)), params, origin="VAE parameter tree")


def load_vae(path: str | Path, cfg: VAEConfig | None = None, *, strict: bool = True) -> WanVAE:
  """Reads ``Wan2.1_VAE.pth`` (or a safetensors copy) into a :class:`WanVAE`; config inferred when not given."""
  src = sources.open_state_dict(path)
  cfg = cfg or infer_config(src)
  return vae_from_params(cfg, convert(src, cfg, strict=strict))
