"""Upstream Wan2.1 DiT state dict <-> this project's parameter tree.

Upstream keys (``blocks.{i}.self_attn.q.weight`` ...) map onto the NNX parameter
tree of :class:`longlive_jax.model.wan.WanDiT`, whose per-block parameters are
stacked over a leading layer axis. Layout changes:
  * ``nn.Linear`` weights ``[out, in]`` -> Dense kernels ``[in, out]``;
  * ``patch_embedding.weight [dim, C, 1, ph, pw]`` -> kernel ``[ph*pw*C, dim]`` in
    (kh, kw, c) order, matching :meth:`WanDiT.patchify` (channels-last);
  * ``blocks.{i}.modulation [1, 6, dim]`` -> ``[L, 6, dim]``; ``head.modulation
    [1, 2, dim]`` -> ``[2, dim]``.

Conversion runs tensor by tensor: :func:`convert_lazy` gives leaves that are computed
while they are written (peak memory: a few tensors);
:func:`convert` fills preallocated stacked arrays (one copy of the model plus one tensor).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np

from longlive_jax.config import WanConfig
from longlive_jax.convert import lazy, sources
from longlive_jax.convert.errors import CheckpointError

# Per-block linear layers: (our path inside a block, upstream name inside a block).
BLOCK_LINEARS = (
  (("self_attn", "q"), "self_attn.q"),
  (("self_attn", "k"), "self_attn.k"),
  (("self_attn", "v"), "self_attn.v"),
  (("self_attn", "o"), "self_attn.o"),
  (("cross_attn", "q"), "cross_attn.q"),
  (("cross_attn", "k"), "cross_attn.k"),
  (("cross_attn", "v"), "cross_attn.v"),
  (("cross_attn", "o"), "cross_attn.o"),
  (("ffn", "fc1"), "ffn.0"),
  (("ffn", "fc2"), "ffn.2"),
)
TOP_LINEARS = (
  (("text_embedding_0",), "text_embedding.0"),
  (("text_embedding_2",), "text_embedding.2"),
  (("time_embedding_0",), "time_embedding.0"),
  (("time_embedding_2",), "time_embedding.2"),
  (("time_projection",), "time_projection.1"),
  (("head",), "head.head"),
)


@dataclasses.dataclass(frozen=True)
class _Rule:
  """How one of our parameters is made from upstream tensors."""

  path: tuple[str, ...]
  upstream: str  # key, with "{i}" for per-block tensors
  upstream_shape: tuple[int, ...]
  transform: Callable[[np.ndarray], np.ndarray]
  stacked: bool


def _linear_t(w: np.ndarray) -> np.ndarray:
  return w.T


def _identity(w: np.ndarray) -> np.ndarray:
  return w


def _squeeze0(w: np.ndarray) -> np.ndarray:
  return w[0]


def _rules(cfg: WanConfig) -> list[_Rule]:
  d, f = cfg.dim, cfg.ffn_dim
  pt, ph, pw = cfg.patch_size
  linear_shapes = {
    "self_attn.q": (d, d),
    "self_attn.k": (d, d),
    "self_attn.v": (d, d),
    "self_attn.o": (d, d),
    "cross_attn.q": (d, d),
    "cross_attn.k": (d, d),
    "cross_attn.v": (d, d),
    "cross_attn.o": (d, d),
    "ffn.0": (f, d),
    "ffn.2": (d, f),
    "text_embedding.0": (d, cfg.text_dim),
    "text_embedding.2": (d, d),
    "time_embedding.0": (d, cfg.freq_dim),
    "time_embedding.2": (d, d),
    "time_projection.1": (6 * d, d),
    "head.head": (cfg.out_patch_dim, d),
  }

  def patch_kernel(w):
    # [dim, C, pt=1, ph, pw] -> [pt, ph, pw, C, dim] -> [ph*pw*C, dim]
    return w.transpose(2, 3, 4, 1, 0).reshape(-1, w.shape[0])

  rules = [
    _Rule(("patch_embedding", "kernel"), "patch_embedding.weight", (d, cfg.in_dim, pt, ph, pw), patch_kernel, False),
    _Rule(("patch_embedding", "bias"), "patch_embedding.bias", (d,), _identity, False),
    _Rule(("head_modulation",), "head.modulation", (1, 2, d), _squeeze0, False),
  ]
  for path, name in TOP_LINEARS:
    out_f, in_f = linear_shapes[name]
    rules.append(_Rule(path + ("kernel",), f"{name}.weight", (out_f, in_f), _linear_t, False))
    rules.append(_Rule(path + ("bias",), f"{name}.bias", (out_f,), _identity, False))
  b = ("blocks",)
  rules.append(_Rule(b + ("modulation",), "blocks.{i}.modulation", (1, 6, d), _squeeze0, True))
  for path, name in BLOCK_LINEARS:
    out_f, in_f = linear_shapes[name]
    rules.append(_Rule(b + path + ("kernel",), f"blocks.{{i}}.{name}.weight", (out_f, in_f), _linear_t, True))
    rules.append(_Rule(b + path + ("bias",), f"blocks.{{i}}.{name}.bias", (out_f,), _identity, True))
  if cfg.qk_norm:
    for attn in ("self_attn", "cross_attn"):
      for n in ("norm_q", "norm_k"):
        rules.append(_Rule(b + (attn, n, "weight"), f"blocks.{{i}}.{attn}.{n}.weight", (d,), _identity, True))
  if cfg.cross_attn_norm:
    rules.append(_Rule(b + ("norm3", "weight"), "blocks.{i}.norm3.weight", (d,), _identity, True))
    rules.append(_Rule(b + ("norm3", "bias"), "blocks.{i}.norm3.bias", (d,), _identity, True))
  return rules


def expected_shapes(cfg: WanConfig) -> dict[str, tuple[int, ...]]:
  """Every upstream key of a Wan DiT with this config and its shape (825 keys for the 1.3B model)."""
  out = {}
  for r in _rules(cfg):
    if r.stacked:
      for i in range(cfg.num_layers):
        out[r.upstream.format(i=i)] = r.upstream_shape
    else:
      out[r.upstream] = r.upstream_shape
  return out


def check_keys(src: Mapping, cfg: WanConfig, *, origin: str) -> None:
  """Raises a :class:`CheckpointError` naming every missing / unexpected key and the shape mismatches."""
  what = f"the Wan DiT config (dim={cfg.dim}, layers={cfg.num_layers})"
  sources.check_shapes(expected_shapes(cfg), src, origin=origin, what=what)


def infer_config(src, *, base: WanConfig | None = None, head_dim: int = 128) -> WanConfig:
  """Reads the sizes of a Wan DiT from its tensor shapes (num_heads = dim / head_dim unless ``base`` says)."""

  def shape(k):
    if k not in src:
      raise CheckpointError(
        f"{src.origin}: cannot infer the model config: missing {k!r} (is this a Wan DiT checkpoint?)"
      )
    return src.shape(k)

  d, c_in, pt, ph, pw = shape("patch_embedding.weight")
  ffn = shape("blocks.0.ffn.0.weight")[0]
  text_dim = shape("text_embedding.0.weight")[1]
  freq_dim = shape("time_embedding.0.weight")[1]
  out_patch = shape("head.head.weight")[0]
  layers = 1 + max(int(m.group(1)) for k in src if (m := re.match(r"blocks\.(\d+)\.", k)))
  base = base or WanConfig()
  heads = base.num_heads if base.dim == d else max(1, d // head_dim)
  return base.replace(
    dim=d,
    in_dim=c_in,
    patch_size=(pt, ph, pw),
    ffn_dim=ffn,
    text_dim=text_dim,
    freq_dim=freq_dim,
    out_dim=out_patch // (pt * ph * pw),
    num_layers=layers,
    num_heads=heads,
    qk_norm="blocks.0.self_attn.norm_q.weight" in src,
    cross_attn_norm="blocks.0.norm3.weight" in src,
  )


def _converted_shape(r: _Rule) -> tuple[int, ...]:
  """Shape of ``r.transform`` applied to one upstream tensor, found on a zero-stride stand-in (no allocation)."""
  dummy = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), r.upstream_shape, (0,) * len(r.upstream_shape))
  return tuple(r.transform(dummy).shape)


def convert_lazy(
  src,
  cfg: WanConfig,
  *,
  dtype: str | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> dict:
  r"""Like :func:`convert`, but every leaf is a :class:`~longlive_jax.convert.lazy.LazyLeaf`.

  Keys and shapes are checked at once; tensors are read when a leaf is computed (written by
  :func:`longlive_jax.convert.writer.save` one layer at a time, or ``materialize()``\ d).
  """
  origin = getattr(src, "origin", "state dict")
  check_keys(src, cfg, origin=origin)
  out_dtype = jnp.dtype(dtype or cfg.param_dtype)  # numpy-compatible, bfloat16 included
  rules = _rules(cfg)
  total = sum(cfg.num_layers if r.stacked else 1 for r in rules)
  done = [0]

  def tick():
    done[0] += 1
    if progress:
      progress(done[0], total)

  def parts(r: _Rule):
    for i in range(cfg.num_layers) if r.stacked else [None]:
      arr = r.transform(np.asarray(src[r.upstream.format(i=i)]))
      tick()
      yield i, arr
      del arr

  tree: dict = {}
  for r in rules:
    shape = _converted_shape(r)
    shape = (cfg.num_layers,) + shape if r.stacked else shape
    sources.set_path(tree, r.path, lazy.lazy_leaf(shape, out_dtype, lambda r=r: parts(r), stacked=r.stacked))
  return tree


def convert(
  src,
  cfg: WanConfig,
  *,
  dtype: str | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> dict:
  """Builds our nested parameter dict (numpy) from an upstream-keyed source.

  Args:
    src: mapping ``upstream key -> array`` (lazy :class:`TensorSource` or plain dict).
    cfg: the model config; every key and shape is checked against it first.
    dtype: storage dtype of the result (default ``cfg.param_dtype``).
    progress: optional callback ``(done, total)`` per tensor read.

  Returns:
    a nested dict matching ``nnx.to_pure_dict(nnx.state(WanDiT(cfg)))``.
  """
  return lazy.materialize_tree(convert_lazy(src, cfg, dtype=dtype, progress=progress))


def to_upstream(params: Mapping, cfg: WanConfig) -> dict[str, np.ndarray]:
  """Inverse of :func:`convert` (for export and round-trip tests)."""
  out = {}
  pt, ph, pw = cfg.patch_size

  def get(path):
    node = params
    for p in path:
      node = node[p]
    return np.asarray(node)

  for r in _rules(cfg):
    value = get(r.path)
    if r.upstream == "patch_embedding.weight":
      inv = lambda w: w.reshape(pt, ph, pw, cfg.in_dim, cfg.dim).transpose(4, 3, 0, 1, 2)  # noqa: E731
    elif r.transform is _linear_t:
      inv = _linear_t
    elif r.transform is _squeeze0:
      inv = lambda w: w[None]  # noqa: E731
    else:
      inv = _identity
    if r.stacked:
      for i in range(cfg.num_layers):
        out[r.upstream.format(i=i)] = np.ascontiguousarray(inv(value[i]))
    else:
      out[r.upstream] = np.ascontiguousarray(inv(value))
  return out
