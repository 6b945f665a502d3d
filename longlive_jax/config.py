"""Frozen configuration of the Wan2.1 diffusion transformer.

Field names follow the upstream ``WanModel`` constructor (``dim``, ``ffn_dim``,
``freq_dim``, ...), so an upstream ``config.json`` maps onto this class
one-to-one (see :func:`WanConfig.from_upstream`). Everything that changes the
shape of a parameter lives here; everything that only changes how the model is
run (dtype, attention kernel) also lives here but never changes parameters.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

# Upstream config.json keys that do not change the computation we implement.
_IGNORED_UPSTREAM_KEYS = frozenset(
  {"_class_name", "_diffusers_version", "model_type", "window_size", "local_attn_size", "sink_size"}
)


# Attention implementations (longlive_jax.model.attention.dispatch): "auto" picks one per call.
ATTENTION_IMPLS = ("auto", "xla", "chunked", "cudnn", "splash")


class ConfigError(ValueError):
  """A configuration value is invalid; the message names the field."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class WanConfig:
  """Hyper-parameters of one Wan2.1 DiT (bidirectional or causal; same weights).

  Attributes:
    dim: model width.
    ffn_dim: hidden width of the feed-forward network.
    freq_dim: width of the sinusoidal timestep embedding.
    num_heads: attention heads; ``dim // num_heads`` is the head size.
    num_layers: transformer blocks.
    in_dim / out_dim: latent channels in and out (16 for Wan2.1).
    text_dim: width of the text-encoder output (4096 for umT5-XXL).
    text_len: text rows the model sees (prompts are zero-padded to this).
    patch_size: (t, h, w) patch; Wan2.1 uses (1, 2, 2). Only t == 1 is supported.
    eps: epsilon of every LayerNorm / RMSNorm.
    qk_norm: RMSNorm on q and k (over the full width, before the head split).
    cross_attn_norm: affine ``norm3`` before cross-attention (else identity).
    rope_max_len: rows of the RoPE tables (upstream: 1024 positions per axis).
    rope_theta: RoPE base.
    dtype: compute dtype of matmuls ("float32" is the exact path; "bfloat16"
      keeps norms, modulation, timestep MLP and softmax in float32).
    param_dtype: storage dtype of parameters.
    pos_grid: ``(H', W')`` token grid of a learned absolute position embedding, or ``(0, 0)`` (Wan: none,
      RoPE only). When set, the patch embeddings get a learned ``[H', W', dim]`` table and the video's first
      latent frame (RoPE frame position 0) one more learned ``[dim]`` vector, both zero at initialisation, so
      a model without them loads unchanged. Why: RoPE is relative, so from pure noise a Wan DiT cannot tell
      where in the frame a token sits (only edge effects); a world whose captions say where things start
      (the toy world's centred clips) needs the absolute position. The first-frame vector depends on the
      RoPE position only, so streaming stays equal to the full forward: position 0 is a stream's first
      block (an empty cache), and in relative-RoPE mode the oldest frame a recache rebuilds without a sink.
      Inputs must then have exactly that token grid.
    pos_frames: ``N > 0`` adds a learned ``[N, dim]`` table over RoPE frame positions (zero at init): a
      frame at position ``p < N`` gets row ``p``, later frames nothing (0: none, Wan). Why: from pure noise a
      RoPE-only DiT cannot tell how far a frame is from the clip's start, so it cannot draw a caption's mean
      clip when that mean moves (the toy world's centred clips: frame ``k``'s object is ``k`` steps along the
      motion from the centre). Rows follow the RoPE frame positions (absolute frames, or in relative-RoPE
      mode the window's), so streaming equals the full forward.
    attention_impl: attention kernel (never changes parameters or, beyond rounding, results):
      "auto" (cuDNN on a CUDA GPU with 16-bit dtype, splash on a TPU with head size a multiple of
      128, else "chunked" for large calls, else "xla"), "xla" (plain einsum softmax, the
      golden-parity path), "chunked" (online softmax in plain XLA, no whole score tensor), "cudnn"
      (``jax.nn.dot_product_attention`` flash kernel; GPU, bfloat16 / float16 only) or "splash"
      (Pallas splash attention: TPU; the Pallas interpreter elsewhere, slow). See
      :mod:`longlive_jax.model.attention`.
  """

  dim: int = 1536
  ffn_dim: int = 8960
  freq_dim: int = 256
  num_heads: int = 12
  num_layers: int = 30
  in_dim: int = 16
  out_dim: int = 16
  text_dim: int = 4096
  text_len: int = 512
  patch_size: tuple[int, int, int] = (1, 2, 2)
  eps: float = 1e-6
  qk_norm: bool = True
  cross_attn_norm: bool = True
  rope_max_len: int = 1024
  rope_theta: float = 10000.0
  pos_grid: tuple[int, int] = (0, 0)
  pos_frames: int = 0
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_impl: str = "auto"

  def __post_init__(self):
    object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
    object.__setattr__(self, "pos_grid", tuple(int(p) for p in self.pos_grid))
    if len(self.pos_grid) != 2 or min(self.pos_grid) < 0 or (0 in self.pos_grid and any(self.pos_grid)):
      raise ConfigError(f"WanConfig.pos_grid must be (0, 0) (none) or two positive sizes, got {self.pos_grid}")
    if int(self.pos_frames) < 0:
      raise ConfigError(f"WanConfig.pos_frames must be >= 0, got {self.pos_frames}")
    for name in ("dim", "ffn_dim", "freq_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "text_len"):
      if int(getattr(self, name)) <= 0:
        raise ConfigError(f"WanConfig.{name} must be positive, got {getattr(self, name)!r}")
    if self.dim % self.num_heads:
      raise ConfigError(f"WanConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
    if self.head_dim % 2:
      raise ConfigError(f"head_dim = dim / num_heads = {self.head_dim} must be even (RoPE pairs)")
    if self.head_dim // 2 // 3 < 1:
      raise ConfigError(f"head_dim = {self.head_dim} is too small for the 3-axis RoPE split (need >= 6)")
    if len(self.patch_size) != 3 or self.patch_size[0] != 1:
      raise ConfigError(f"WanConfig.patch_size must be (1, ph, pw), got {self.patch_size}")
    if self.freq_dim % 2:
      raise ConfigError(f"WanConfig.freq_dim must be even, got {self.freq_dim}")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ConfigError(f"WanConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
    if self.param_dtype not in ("float32", "bfloat16", "float16"):
      raise ConfigError(f"WanConfig.param_dtype must be float32, bfloat16 or float16, got {self.param_dtype!r}")
    if self.attention_impl not in ATTENTION_IMPLS:
      names = ", ".join(repr(n) for n in ATTENTION_IMPLS)
      raise ConfigError(f"WanConfig.attention_impl must be one of {names}, got {self.attention_impl!r}")
    if self.attention_impl == "cudnn" and self.dtype == "float32":
      raise ConfigError(
        "WanConfig.attention_impl 'cudnn' needs dtype bfloat16 or float16 (cuDNN flash attention has no "
        "float32 kernel); use 'auto', 'chunked' or 'xla' with float32"
      )

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one flattened input patch (in_dim * pt * ph * pw)."""
    return self.in_dim * self.patch_size[0] * self.patch_size[1] * self.patch_size[2]

  @property
  def out_patch_dim(self) -> int:
    return self.out_dim * self.patch_size[0] * self.patch_size[1] * self.patch_size[2]

  def replace(self, **changes: Any) -> WanConfig:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["patch_size"] = list(self.patch_size)
    d["pos_grid"] = list(self.pos_grid)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> WanConfig:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ConfigError(f"unknown WanConfig field(s): {', '.join(unknown)}")
    return cls(**d)

  @classmethod
  def from_upstream(cls, d: dict[str, Any], **overrides: Any) -> WanConfig:
    """Builds a config from an upstream ``config.json`` / ``WanModel`` kwargs dict."""
    if d.get("model_type", "t2v") != "t2v":
      raise ConfigError(f"only model_type 't2v' is supported, got {d.get('model_type')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in d.items() if k in names}
    unknown = sorted(set(d) - names - _IGNORED_UPSTREAM_KEYS)
    if unknown:
      raise ConfigError(f"unknown upstream Wan config key(s): {', '.join(unknown)}")
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def load(cls, path: str | Path) -> WanConfig:
    p = Path(path)
    try:
      d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise ConfigError(f"cannot read config {p}: {e}") from e
    if "_class_name" in d or "model_type" in d:
      return cls.from_upstream(d)
    return cls.from_dict(d)


WAN_T2V_1_3B = WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
WAN_T2V_14B = WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)


def tiny_config(**overrides: Any) -> WanConfig:
  """A small config for tests and CPU experiments (same shape as the golden cases)."""
  base = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32, text_len=16)
  base.update(overrides)
  return WanConfig(**base)


PRESETS: dict[str, WanConfig] = {
  "wan2.1-t2v-1.3b": WAN_T2V_1_3B,
  "wan2.1-t2v-14b": WAN_T2V_14B,
  "tiny": tiny_config(),
}


def get_preset(name: str) -> WanConfig:
  try:
    return PRESETS[name.lower()]
  except KeyError:
    raise ConfigError(f"unknown config preset {name!r}; choose one of {', '.join(PRESETS)}") from None
