"""Trainable parameters of one network for the training stages: full fine-tuning, or LoRA on a frozen base.

LongLive's Stage 2 trains PEFT LoRA adapters (rank 256, alpha 256, dropout 0) on every linear of
every transformer block (``self_attn.{q,k,v,o}``, ``cross_attn.{q,k,v,o}``, ``ffn.0``, ``ffn.2``;
embeddings and head untouched) of the generator and, with ``apply_to_critic``, of the critic. The
base stays frozen.

Layout (:mod:`longlive_jax.model.lora`): ``{"self_attn": {"q": {"a": [L, in, r], "b": [L, r, out]}}, ...}``,
merged as ``kernel + (alpha / r) a @ b``. Initialisation as PEFT: ``A`` (here ``a``) from
``kaiming_uniform(a=sqrt(5))`` = ``U(-1/sqrt(in), 1/sqrt(in))``, ``B`` (here ``b``) zero, so a fresh
adapter changes nothing and only ``b`` receives gradient on the first step.

A network's parameters in a train state are ``(trainable, frozen)``: ``(params, None)`` for full
fine-tuning, ``(adapter, base)`` under LoRA; :func:`effective_params` gives the weights to run
(differentiable in ``trainable``), :func:`merged_params` the weights to export.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import checkpoint
from longlive_jax.config import WanConfig, get_preset
from longlive_jax.convert.wan_dit import BLOCK_LINEARS
from longlive_jax.model import lora as model_lora
from longlive_jax.model.params import params_of
from longlive_jax.model.wan import abstract_model

Array = jax.Array
LORA_TARGETS = tuple(name for _, name in BLOCK_LINEARS)  # upstream names: "self_attn.q", ..., "ffn.0", "ffn.2"
_PATH_OF = {name: path for path, name in BLOCK_LINEARS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraOptions:
  """LoRA hyper-parameters (YAML ``adapter: {rank, alpha, targets}``); scale ``alpha / rank``."""

  rank: int = 256
  alpha: float = 256.0
  targets: tuple[str, ...] = LORA_TARGETS

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    if self.rank < 1:
      raise ValueError(f"adapter.rank must be >= 1, got {self.rank}")
    unknown = [t for t in self.targets if t not in _PATH_OF]
    if unknown:
      raise ValueError(f"adapter.targets: unknown module(s) {unknown}; choose from {list(LORA_TARGETS)}")

  @property
  def scale(self) -> float:
    return float(self.alpha) / float(self.rank)

  @classmethod
  def from_mapping(cls, d: Mapping | None) -> LoraOptions | None:
    if d is None:
      return None
    if isinstance(d, LoraOptions):
      return d
    unknown = sorted(set(d) - {"rank", "alpha", "targets", "type", "dropout"})
    if unknown:
      raise ValueError(f"adapter: unknown key(s) {unknown} (known: rank, alpha, targets, type, dropout)")
    if d.get("type", "lora") != "lora":
      raise ValueError(f"adapter.type must be 'lora', got {d.get('type')!r}")
    if float(d.get("dropout", 0.0)) != 0.0:
      raise ValueError("adapter.dropout: only 0 is supported (LongLive trains with dropout 0)")
    kw = {k: d[k] for k in ("rank", "alpha", "targets") if k in d}
    return cls(**kw)


def init_adapter(key: Array, params: Mapping, *, options: LoraOptions) -> dict:
  """A fresh adapter for the block kernels of ``params`` (PEFT init: ``a`` uniform, ``b`` zero), float32."""
  tree: dict = {}
  keys = jax.random.split(key, len(options.targets))
  for k, name in zip(keys, options.targets, strict=True):
    path = _PATH_OF[name]
    kernel = params["blocks"]
    for p in path:
      kernel = kernel[p]
    kernel = kernel["kernel"]  # [L, in, out]
    n_layers, fan_in, fan_out = kernel.shape
    bound = 1.0 / math.sqrt(fan_in)
    node = tree
    for p in path:
      node = node.setdefault(p, {})
    node["a"] = jax.random.uniform(k, (n_layers, fan_in, options.rank), jnp.float32, -bound, bound)  # [L, in, r]
    node["b"] = jnp.zeros((n_layers, options.rank, fan_out), jnp.float32)  # [L, r, out]
  return tree


def effective_params(trainable, frozen, *, lora: LoraOptions | None):
  """The weights to run: ``trainable`` itself (full fine-tune) or ``frozen`` with the adapter merged in."""
  if lora is None:
    return trainable
  return model_lora.merge(jax.lax.stop_gradient(frozen), trainable, scale=lora.scale)


def merged_params(trainable, frozen, *, lora: LoraOptions | None) -> dict:
  """Export weights (adapter merged, float32 master copy)."""
  return effective_params(trainable, frozen, lora=lora)


def resolve_config(spec, *, what: str) -> WanConfig | None:
  """A :class:`WanConfig` from a preset name, a field mapping, a config, or None."""
  if spec is None or isinstance(spec, WanConfig):
    return spec
  if isinstance(spec, str):
    return get_preset(spec)
  if isinstance(spec, Mapping):
    return WanConfig.from_dict(dict(spec))
  raise TypeError(f"{what}: expected a preset name, a mapping of WanConfig fields or a WanConfig, got {type(spec)}")


def load_network(
  cfg: WanConfig | None, ckpt: str | Path | None, *, seed: int, compute_dtype: str, what: str
) -> tuple[WanConfig, dict]:
  """``(config, float32-or-stored params)`` from a longlive-jax checkpoint folder, else a random init of ``cfg``.

  A checkpoint's separate LoRA adapter (``--lora-mode separate``) is merged in. The compute dtype of the
  returned config is ``compute_dtype``; parameters keep their stored dtype (master weights).
  """
  if ckpt is not None:
    ck_cfg, params, adapter, info = checkpoint.load(ckpt)
    if cfg is not None and cfg.replace(dtype=ck_cfg.dtype) != ck_cfg:
      raise ValueError(f"{what}: checkpoint {ckpt} holds a model with config {ck_cfg}, but {cfg} was configured")
    if adapter is not None:
      params = model_lora.merge(params, adapter, scale=float(info["lora"]["scale"]))
    return ck_cfg.replace(dtype=compute_dtype), jax.tree.map(jnp.asarray, params)
  if cfg is None:
    raise ValueError(f"{what}: give a checkpoint ({what}_ckpt) or a model config ({what}_config)")
  cfg = cfg.replace(dtype=compute_dtype)
  return cfg, random_params(cfg, seed=seed)


def random_params(cfg: WanConfig, *, seed: int) -> dict:
  """Random weights of the scale :func:`longlive_jax.model.wan.init_model` uses (not the same numbers), from numpy.

  For tiny configs, tests and experiments without a checkpoint: drawing host-side leaf by leaf avoids the
  seconds an eager NNX construction costs. Kernels ``[..., in, out]`` ~ N(0, 1/in), biases N(0, 0.02^2),
  norm weights 1 + N(0, 0.1^2), modulation tables N(0, 0.1^2).
  """
  rng = np.random.default_rng(seed)
  dt = np.dtype(cfg.param_dtype) if cfg.param_dtype != "bfloat16" else np.float32

  def draw(path, spec):
    name = getattr(path[-1], "key", str(path[-1]))
    shape = tuple(spec.shape)
    z = rng.standard_normal(shape).astype(np.float32)
    if name == "kernel":
      x = z / np.sqrt(shape[-2])
    elif name == "bias":
      x = 0.02 * z
    elif name == "weight":
      x = 1.0 + 0.1 * z
    else:  # modulation, head_modulation
      x = 0.1 * z
    return jnp.asarray(x.astype(dt), spec.dtype)

  return jax.tree_util.tree_map_with_path(draw, params_of(abstract_model(cfg)))
