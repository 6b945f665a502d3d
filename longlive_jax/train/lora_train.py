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
(differentiable in ``trainable``; with the float32 master copies, also the weights to export).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import checkpoint
from longlive_jax.config import WanConfig
from longlive_jax.convert.wan_dit import BLOCK_LINEARS
from longlive_jax.model import lora as model_lora
from longlive_jax.model.params import check_params, params_of
from longlive_jax.model.wan import abstract_model

Array = jax.Array
LORA_TARGETS = tuple(name for _, name in BLOCK_LINEARS)  # upstream names: "self_attn.q", ..., "ffn.0", "ffn.2"
_PATH_OF = {name: path for path, name in BLOCK_LINEARS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraOptions:
  """LoRA hyper-parameters (YAML ``adapter: {type: lora, rank, alpha, dropout, targets}``); scale ``alpha / rank``.

  ``targets`` are upstream module names (default: all 10 linears of every block); ``dropout`` must be 0.
  """

  type: str = "lora"
  rank: int = 256
  alpha: float = 256.0
  dropout: float = 0.0
  targets: tuple[str, ...] = LORA_TARGETS

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    if self.type != "lora":
      raise ValueError(f"adapter.type must be 'lora', got {self.type!r}")
    if self.rank < 1:
      raise ValueError(f"adapter.rank must be >= 1, got {self.rank}")
    if self.dropout != 0.0:
      raise ValueError(f"adapter.dropout: only 0 is supported (LongLive trains with dropout 0), got {self.dropout}")
    unknown = [t for t in self.targets if t not in _PATH_OF]
    if unknown:
      raise ValueError(f"adapter.targets: unknown module(s) {unknown}; choose from {list(LORA_TARGETS)}")

  @property
  def scale(self) -> float:
    return float(self.alpha) / float(self.rank)


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetSpec:
  """One network of a training stage: its config (compute dtype included) and where its weights come from.

  ``checkpoint``: a :mod:`longlive_jax.checkpoint` folder (its separate LoRA, if any, is merged in);
  None: random weights from ``seed`` (tiny runs). ``remat``: rematerialise its blocks in backward passes.
  """

  cfg: WanConfig
  checkpoint: str | None = None
  remat: bool = False
  seed: int = 0


def net_spec(model, *, seed: int) -> NetSpec:
  """A :class:`NetSpec` from a train config's model section (:class:`longlive_jax.train.config.ModelConfig`)."""
  from longlive_jax.train.config import resolve_model_config  # noqa: PLC0415 (config imports the stages)

  return NetSpec(cfg=resolve_model_config(model), checkpoint=model.checkpoint, remat=model.remat, seed=seed)


def load_params(spec: NetSpec) -> dict:
  """float32 master weights of ``spec``: its checkpoint (shapes checked against ``spec.cfg``) or random ones."""
  if spec.checkpoint is None:
    return random_params(spec.cfg.replace(param_dtype="float32"), seed=spec.seed)
  _, params, adapter, info = checkpoint.load(spec.checkpoint)
  check_params(spec.cfg, params, origin=str(spec.checkpoint))
  if adapter is not None:
    params = model_lora.merge(params, adapter, scale=float(info["lora"]["scale"]))
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


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


def place_state(state, mesh: jax.sharding.Mesh | None, *, min_size: int = 1024):
  """``state`` on ``mesh`` (:mod:`longlive_jax.sharding`): the FSDP parameter rule for every leaf, the KV-cache
  rule for :class:`~longlive_jax.stream.cache.KVCache` subtrees. ``mesh=None``: unchanged (default device)."""
  if mesh is None:
    return state
  from longlive_jax import sharding  # noqa: PLC0415
  from longlive_jax.stream.cache import KVCache  # noqa: PLC0415

  def is_cache(x):
    return isinstance(x, KVCache)

  sh = sharding.state_shardings(state, mesh, min_size=min_size)
  sh = jax.tree.map(
    lambda x, s: sharding.kv_cache_shardings(x, mesh) if is_cache(x) else s, state, sh, is_leaf=is_cache
  )
  return jax.device_put(state, sh)
