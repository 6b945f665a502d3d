"""Frozen configuration of the Wan2.1 video VAE.

Field names follow the upstream ``_video_vae`` / ``WanVAE_`` keyword arguments
(``dim``, ``z_dim``, ``dim_mult``, ``num_res_blocks``, ``attn_scales``,
``temperal_downsample``, spelt as upstream), so a golden case's config maps onto
this class one-to-one (:meth:`VAEConfig.from_upstream`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from longlive_jax.config import ConfigError

# Published per-channel statistics of the Wan2.1 latent (wan/modules/vae.py, LongLive utils/wan_wrapper.py).
LATENT_MEAN = (
  -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
  0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
LATENT_STD = (
  2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
  3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class VAEConfig:
  """Hyper-parameters of one Wan VAE.

  Attributes:
    dim: base width (96 for Wan2.1); level widths are ``dim * dim_mult``.
    z_dim: latent channels (16). The encoder emits ``2 * z_dim`` (mean, log-variance).
    dim_mult: width multipliers of the levels (Wan2.1: 4 levels, 8x in space; 3 levels give 4x).
      Space shrinks 2x at every level transition (``space_stride = 2 ** (len(dim_mult) - 1)``).
    num_res_blocks: residual blocks per encoder level (the decoder has one more).
    attn_scales: spatial scales (1.0, 0.5, ...) that get an attention block after each
      residual block; Wan2.1 uses none (attention only in the two ``middle`` stacks).
    temperal_downsample: per level transition, whether the encoder also halves time.
      The decoder upsamples time at the mirrored transitions.
    dtype: compute dtype ("float32" is the exact path).
    param_dtype: storage dtype of parameters.
    latent_mean, latent_std: per-channel statistics of the encoder mean, used to normalise latents
      (``(mu - mean) / std``, what the DiT sees). Wan2.1's published values by default; a VAE trained
      here (the ``vae`` training stage) stores its own.
  """

  dim: int = 96
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: tuple[float, ...] = ()
  temperal_downsample: tuple[bool, ...] = (False, True, True)
  dtype: str = "float32"
  param_dtype: str = "float32"
  latent_mean: tuple[float, ...] = LATENT_MEAN
  latent_std: tuple[float, ...] = LATENT_STD

  def __post_init__(self):
    object.__setattr__(self, "latent_mean", tuple(float(m) for m in self.latent_mean))
    object.__setattr__(self, "latent_std", tuple(float(m) for m in self.latent_std))
    if len(self.latent_mean) != self.z_dim or len(self.latent_std) != self.z_dim or min(self.latent_std) <= 0:
      raise ConfigError(
        f"VAEConfig.latent_mean / latent_std need {self.z_dim} entries (stds > 0), "
        f"got {len(self.latent_mean)} / {len(self.latent_std)}"
      )
    object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
    object.__setattr__(self, "attn_scales", tuple(float(s) for s in self.attn_scales))
    object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
    for name in ("dim", "z_dim", "num_res_blocks"):
      if int(getattr(self, name)) <= 0:
        raise ConfigError(f"VAEConfig.{name} must be positive, got {getattr(self, name)!r}")
    if len(self.dim_mult) < 2 or min(self.dim_mult) <= 0:
      # Upstream's decoder halves the input width of levels 1..3 by hand (4 levels, 8x in space); the
      # decoder here halves it after every resample, which is the same for 4 levels and also builds
      # 3 levels (4x in space: the toy world's VAE) or 2.
      raise ConfigError(f"VAEConfig.dim_mult must be 2 or more positive multipliers, got {self.dim_mult}")
    if len(self.temperal_downsample) != len(self.dim_mult) - 1:
      raise ConfigError(
        f"VAEConfig.temperal_downsample needs {len(self.dim_mult) - 1} entries, got {self.temperal_downsample}"
      )
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"VAEConfig.{name} must be float32, bfloat16 or float16, got {getattr(self, name)!r}")

  @property
  def temperal_upsample(self) -> tuple[bool, ...]:
    return self.temperal_downsample[::-1]

  @property
  def time_stride(self) -> int:
    return 2 ** sum(self.temperal_downsample)

  @property
  def space_stride(self) -> int:
    return 2 ** (len(self.dim_mult) - 1)

  def replace(self, **changes: Any) -> VAEConfig:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    for k in ("dim_mult", "attn_scales", "temperal_downsample", "latent_mean", "latent_std"):
      d[k] = list(d[k])
    return d

  @classmethod
  def from_upstream(cls, d: dict[str, Any], **overrides: Any) -> VAEConfig:
    """From upstream ``_video_vae`` kwargs (or a golden case's config): keys that are not fields are ignored.

    ``dropout`` is among the ignored keys: it is inactive at inference.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in d.items() if k in names}
    kw.update(overrides)
    return cls(**kw)


WAN21_VAE = VAEConfig()


def tiny_vae_config(**overrides: Any) -> VAEConfig:
  """The golden case's shape (dim 8): 0.9 M parameters, for tests and CPU experiments."""
  return VAEConfig(dim=8, **overrides)


PRESETS: dict[str, VAEConfig] = {"wan2.1-vae": WAN21_VAE, "tiny": tiny_vae_config()}


def get_preset(name: str) -> VAEConfig:
  try:
    return PRESETS[name.lower()]
  except KeyError:
    raise ConfigError(f"unknown VAE config preset {name!r}; choose one of {', '.join(PRESETS)}") from None
