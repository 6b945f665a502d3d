"""Upstream umT5 encoder state dict (``models_t5_umt5-xxl-enc-bf16.pth``) -> our parameter tree.

Upstream keys (``wan/modules/t5.py``, ``T5Encoder``) and where they go in
:class:`longlive_jax.text.model.UMT5Encoder`:

  ``token_embedding.weight [vocab, dim]``                  -> ``token_embedding``
  ``blocks.{i}.norm1.weight [dim]`` / ``norm2.weight``      -> ``blocks.norm1.weight [L, dim]`` ...
  ``blocks.{i}.attn.{q,k,v}.weight [dim_attn, dim]``        -> ``blocks.attn.{q,k,v}.kernel [L, dim, dim_attn]``
  ``blocks.{i}.attn.o.weight [dim, dim_attn]``              -> ``blocks.attn.o.kernel [L, dim_attn, dim]``
  ``blocks.{i}.ffn.gate.0.weight [dim_ffn, dim]``           -> ``blocks.ffn.gate.kernel [L, dim, dim_ffn]``
  ``blocks.{i}.ffn.fc1.weight [dim_ffn, dim]``              -> ``blocks.ffn.fc1.kernel``
  ``blocks.{i}.ffn.fc2.weight [dim, dim_ffn]``              -> ``blocks.ffn.fc2.kernel [L, dim_ffn, dim]``
  ``blocks.{i}.pos_embedding.embedding.weight [nb, heads]`` -> ``blocks.pos_embedding [L, nb, heads]``
  ``pos_embedding.embedding.weight [nb, heads]`` (only with ``shared_pos``) -> ``pos_embedding``
  ``norm.weight [dim]``                                     -> ``norm.weight``

``nn.Linear`` weights ``[out, in]`` become kernels ``[in, out]``. :func:`convert_lazy` gives leaves
computed while they are written (a few tensors in memory); :func:`convert` reads one
tensor at a time into a preallocated layer-stacked array and hands each finished leaf to ``put``
(e.g. a device transfer), so the real 11 GB bf16 file never sits in memory twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from longlive_jax.convert import lazy, sources
from longlive_jax.text.config import UMT5Config


@dataclasses.dataclass(frozen=True)
class _Rule:
  path: tuple[str, ...]
  upstream: str  # key, with "{i}" for per-block tensors
  upstream_shape: tuple[int, ...]
  transpose: bool  # nn.Linear [out, in] -> kernel [in, out]
  stacked: bool


def _rules(cfg: UMT5Config) -> list[_Rule]:
  d, da, f, nb, h = cfg.dim, cfg.dim_attn, cfg.dim_ffn, cfg.num_buckets, cfg.num_heads
  rules = [_Rule(("token_embedding",), "token_embedding.weight", (cfg.vocab, d), False, False)]
  if cfg.shared_pos:
    rules.append(_Rule(("pos_embedding",), "pos_embedding.embedding.weight", (nb, h), False, False))
  blk = "blocks.{i}."
  per_block = [
    (("norm1", "weight"), "norm1.weight", (d,), False),
    (("attn", "q", "kernel"), "attn.q.weight", (da, d), True),
    (("attn", "k", "kernel"), "attn.k.weight", (da, d), True),
    (("attn", "v", "kernel"), "attn.v.weight", (da, d), True),
    (("attn", "o", "kernel"), "attn.o.weight", (d, da), True),
    (("norm2", "weight"), "norm2.weight", (d,), False),
    (("ffn", "gate", "kernel"), "ffn.gate.0.weight", (f, d), True),
    (("ffn", "fc1", "kernel"), "ffn.fc1.weight", (f, d), True),
    (("ffn", "fc2", "kernel"), "ffn.fc2.weight", (d, f), True),
  ]
  if not cfg.shared_pos:
    per_block.append((("pos_embedding",), "pos_embedding.embedding.weight", (nb, h), False))
  for path, name, shape, transpose in per_block:
    rules.append(_Rule(("blocks",) + path, blk + name, shape, transpose, True))
  rules.append(_Rule(("norm", "weight"), "norm.weight", (d,), False, False))
  return rules


def expected_shapes(cfg: UMT5Config) -> dict[str, tuple[int, ...]]:
  """Every upstream key of an encoder with this config and its shape (242 keys for umT5-XXL)."""
  out = {}
  for r in _rules(cfg):
    for i in range(cfg.num_layers) if r.stacked else [None]:
      out[r.upstream.format(i=i)] = r.upstream_shape
  return out


def check_keys(src: Mapping, cfg: UMT5Config, *, origin: str) -> None:
  """Raises a :class:`CheckpointError` naming the missing / unexpected keys and every shape mismatch (both shapes)."""
  what = (
    f"the umT5 encoder config (vocab={cfg.vocab}, dim={cfg.dim}, layers={cfg.num_layers}, shared_pos={cfg.shared_pos})"
  )
  sources.check_shapes(expected_shapes(cfg), src, origin=origin, what=what)


def convert_lazy(
  src: Mapping,
  cfg: UMT5Config,
  *,
  dtype: str | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> dict:
  """Like :func:`convert`, but every leaf is a :class:`~longlive_jax.convert.lazy.LazyLeaf` (read when computed)."""
  check_keys(src, cfg, origin=getattr(src, "origin", "state dict"))
  out_dtype = jnp.dtype(dtype or cfg.param_dtype)  # numpy-compatible, bfloat16 included
  rules = _rules(cfg)
  total = sum(cfg.num_layers if r.stacked else 1 for r in rules)
  done = [0]

  def parts(r: _Rule):
    for i in range(cfg.num_layers) if r.stacked else [None]:
      arr = np.asarray(src[r.upstream.format(i=i)])
      arr = arr.T if r.transpose else arr
      done[0] += 1
      if progress:
        progress(done[0], total)
      yield i, arr
      del arr

  tree: dict = {}
  for r in rules:
    shape = tuple(reversed(r.upstream_shape)) if r.transpose else tuple(r.upstream_shape)
    shape = (cfg.num_layers,) + shape if r.stacked else shape
    sources.set_path(tree, r.path, lazy.lazy_leaf(shape, out_dtype, lambda r=r: parts(r), stacked=r.stacked))
  return tree


def convert(
  src: Mapping,
  cfg: UMT5Config,
  *,
  dtype: str | None = None,
  put: Callable[[np.ndarray], object] | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> dict:
  """Builds our nested parameter dict from an upstream-keyed source (lazy :class:`TensorSource` or dict).

  Args:
    src: mapping ``upstream key -> array``; every key and shape is checked against ``cfg`` first.
    cfg: the encoder config.
    dtype: storage dtype of the result (default ``cfg.param_dtype``).
    put: applied to each finished leaf (e.g. ``jnp.asarray``), after which the host copy is dropped.
    progress: optional callback ``(done, total)`` per tensor read.

  Returns:
    a nested dict matching ``nnx.to_pure_dict(nnx.state(UMT5Encoder(cfg)))``.
  """
  return lazy.materialize_tree(convert_lazy(src, cfg, dtype=dtype, progress=progress), put)


def to_upstream(params: Mapping, cfg: UMT5Config) -> dict[str, np.ndarray]:
  """Inverse of :func:`convert` (export and round-trip tests)."""
  out = {}
  for r in _rules(cfg):
    node = params
    for p in r.path:
      node = node[p]
    value = np.asarray(node)
    for i in range(cfg.num_layers) if r.stacked else [None]:
      arr = value[i] if r.stacked else value
      out[r.upstream.format(i=i)] = np.ascontiguousarray(arr.T if r.transpose else arr)
  return out


def load_encoder(path: str | Path, cfg: UMT5Config, *, dtype: str | None = None):
  """Reads an upstream checkpoint (``.pth`` or ``.safetensors``) into an :class:`UMT5Encoder`.

  Each converted leaf goes to the device as soon as it is complete (peak host memory: one
  stacked leaf plus one tensor).
  """
  from longlive_jax.text.model import model_from_params

  out_dtype = jnp.dtype(dtype or cfg.param_dtype)
  src = sources.open_state_dict(path)
  params = convert(src, cfg, dtype=str(out_dtype), put=lambda x: jnp.asarray(x, out_dtype))
  return model_from_params(cfg.replace(param_dtype=str(out_dtype)), params)
