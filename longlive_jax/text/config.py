"""Frozen configuration of the umT5 text encoder used by Wan2.1 (``wan/modules/t5.py``, ``T5Encoder``).

Field names follow the upstream ``T5Encoder`` constructor (``vocab``, ``dim``, ``dim_attn``,
``dim_ffn``, ``num_heads``, ``num_layers``, ``num_buckets``, ``shared_pos``); the upstream
``umt5_xxl`` factory calls two of them ``vocab_size`` / ``encoder_layers``, which
:meth:`UMT5Config.from_upstream` accepts too. Shape-changing fields and run-time fields
(``dtype``) live side by side, as in :class:`longlive_jax.config.WanConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from longlive_jax.config import ConfigError

# Keys of an upstream / golden config that do not change what we compute.
_IGNORED_UPSTREAM_KEYS = frozenset(
  {"dropout", "seed", "seq_lens", "L", "checkpoint_format", "decoder_layers", "encoder_only", "name"}
)
_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True, kw_only=True)
class UMT5Config:
  """Hyper-parameters of one umT5 encoder.

  Attributes:
    vocab: token embedding rows.
    dim: model width (the residual stream and the output width).
    dim_attn: width of the q/k/v projections (``num_heads * head_dim``); may differ from ``dim``.
    dim_ffn: hidden width of the gated feed-forward network.
    num_heads: attention heads.
    num_layers: encoder blocks.
    num_buckets: relative-position buckets (half per direction, bidirectional).
    max_dist: distance at which the logarithmic buckets saturate (upstream: 128).
    shared_pos: one relative-bias table for all layers (``pos_embedding``) instead of one
      per layer (``blocks.{i}.pos_embedding``). umT5-XXL uses per-layer tables (False).
    eps: epsilon of every T5 RMSNorm.
    dtype: compute dtype of the matmuls ("float32" is the exact path; with "bfloat16" the
      residual stream, norms, attention logits and softmax stay in float32).
    param_dtype: storage dtype of the parameters.
  """

  vocab: int = 256384
  dim: int = 4096
  dim_attn: int = 4096
  dim_ffn: int = 10240
  num_heads: int = 64
  num_layers: int = 24
  num_buckets: int = 32
  max_dist: int = 128
  shared_pos: bool = False
  eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab", "dim", "dim_attn", "dim_ffn", "num_heads", "num_layers", "num_buckets"):
      if int(getattr(self, name)) <= 0:
        raise ConfigError(f"UMT5Config.{name} must be positive, got {getattr(self, name)!r}")
    if self.dim_attn % self.num_heads:
      raise ConfigError(f"UMT5Config.dim_attn ({self.dim_attn}) must be divisible by num_heads ({self.num_heads})")
    if self.num_buckets < 4 or self.num_buckets % 2:
      raise ConfigError(f"UMT5Config.num_buckets must be even and >= 4 (bidirectional), got {self.num_buckets}")
    if self.max_dist <= self.num_buckets // 4:
      raise ConfigError(f"UMT5Config.max_dist ({self.max_dist}) must exceed num_buckets / 4 ({self.num_buckets // 4})")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ConfigError(f"UMT5Config.{name} must be one of {', '.join(_DTYPES)}, got {getattr(self, name)!r}")

  @property
  def head_dim(self) -> int:
    return self.dim_attn // self.num_heads

  def replace(self, **changes: Any) -> UMT5Config:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_upstream(cls, d: dict[str, Any], **overrides: Any) -> UMT5Config:
    """From ``T5Encoder`` / ``umt5_xxl`` kwargs (or a golden case's config); unknown keys are an error."""
    d = dict(d)
    if "vocab_size" in d:
      d["vocab"] = d.pop("vocab_size")
    if "encoder_layers" in d:
      d["num_layers"] = d.pop("encoder_layers")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names - _IGNORED_UPSTREAM_KEYS)
    if unknown:
      raise ConfigError(f"unknown upstream umT5 config key(s): {', '.join(unknown)}")
    kw = {k: v for k, v in d.items() if k in names}
    kw.update(overrides)
    return cls(**kw)


UMT5_XXL = UMT5Config()


def tiny_config(**overrides: Any) -> UMT5Config:
  """A small config for tests and CPU experiments (the shape of the ``umt5_encoder`` golden case)."""
  base = dict(vocab=128, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2, num_buckets=32)
  base.update(overrides)
  return UMT5Config(**base)


PRESETS: dict[str, UMT5Config] = {"umt5-xxl": UMT5_XXL, "tiny": tiny_config()}


def get_preset(name: str) -> UMT5Config:
  try:
    return PRESETS[name.lower()]
  except KeyError:
    raise ConfigError(f"unknown umT5 config preset {name!r}; choose one of {', '.join(PRESETS)}") from None
