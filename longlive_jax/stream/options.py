"""What a stream generates (:class:`StreamOptions`), its checks and errors, and loading a :class:`Streamer`.

Every user mistake raises :class:`StreamInputError` naming the option at fault; :class:`StreamFailure` is
the stream itself going wrong. Split from :mod:`longlive_jax.stream.run`, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp

from longlive_jax.config import ATTENTION_IMPLS
from longlive_jax.quant import QUANT_MODES
from longlive_jax.stream.cache import StreamSpec
from longlive_jax.stream.driver import SWITCH_MODES, Streamer

MAX_SEED = 2**32 - 1  # jax.random.key keeps 32 bits: larger seeds would silently repeat smaller ones
MAX_TIMESTEP = 1000.0  # timesteps are raw floats in [0, 1000] (schedule.NUM_TRAIN_TIMESTEPS)


class StreamInputError(ValueError):
  """A user input (file, option, prompt script) that cannot drive a stream."""


class StreamFailure(RuntimeError):
  """The stream itself went wrong (e.g. non-finite latents); what came before was written."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamOptions:
  """What to generate. Sizes are latent: 60 x 104 latents = 480 x 832 pixels (LongLive)."""

  frames: int = 120
  height: int = 60
  width: int = 104
  seed: int = 0
  block_frames: int = 3
  sink_frames: int = 3
  window_frames: int = 12
  relative_rope: bool = False
  rope_horizon: int = 0  # > 0: absolute RoPE until this frame, then the geometry frozen (StreamSpec.rope_horizon)
  global_sink: bool = True
  switch_mode: str = "recache"
  context_noise: float = 0.0
  dtype: str | None = None
  attention: str | None = None  # overrides the checkpoint's attention_impl (auto, xla, chunked, cudnn, splash)
  quantize: str | None = None  # int8, w8a8 or fp8: quantise the DiT's large linear layers (longlive_jax.quant)

  def __post_init__(self):
    if self.block_frames < 1:
      raise StreamInputError(f"--block-frames {self.block_frames}: must be at least 1 latent frame")
    if self.frames <= 0 or self.frames % self.block_frames:
      raise StreamInputError(
        f"--frames {self.frames}: must be a positive multiple of the block size ({self.block_frames} latent frames)"
      )
    if self.height % 2 or self.width % 2 or self.height <= 0 or self.width <= 0:
      raise StreamInputError(
        f"--height {self.height} / --width {self.width}: the latent height and width must be positive and even"
      )
    if not 0 <= self.seed <= MAX_SEED:
      raise StreamInputError(f"--seed {self.seed}: must be in [0, 2**32 - 1 = {MAX_SEED}]")
    if self.sink_frames < 0:
      raise StreamInputError(f"--sink {self.sink_frames}: must be >= 0 frames")
    if self.window_frames <= self.sink_frames + self.block_frames:
      raise StreamInputError(
        f"--window {self.window_frames}: must exceed --sink + --block-frames ({self.sink_frames} + "
        f"{self.block_frames} = {self.sink_frames + self.block_frames}) so that at least one past frame is attended"
      )
    if self.rope_horizon < 0 or 0 < self.rope_horizon < self.window_frames:
      raise StreamInputError(
        f"--rope-horizon {self.rope_horizon}: must be 0 (absolute positions) or at least --window "
        f"({self.window_frames})"
      )
    if self.rope_horizon and self.relative_rope:
      raise StreamInputError(
        f"--relative-rope and --rope-horizon {self.rope_horizon} both bound the positions: choose one "
        "(--rope-horizon 0 turns the horizon off)"
      )
    if not (math.isfinite(self.context_noise) and 0.0 <= self.context_noise <= MAX_TIMESTEP):
      raise StreamInputError(
        f"--context-noise {self.context_noise:g}: must be a timestep in [0, {MAX_TIMESTEP:g}] (0: a clean cache, "
        "as LongLive at inference)"
      )
    if self.attention is not None and self.attention not in ATTENTION_IMPLS:
      raise StreamInputError(f"--attention {self.attention!r}: choose one of {', '.join(ATTENTION_IMPLS)}")
    if self.quantize is not None and self.quantize not in QUANT_MODES:
      raise StreamInputError(f"--quantize {self.quantize!r}: choose one of {', '.join(QUANT_MODES)}")
    if self.switch_mode not in SWITCH_MODES:
      raise StreamInputError(f"switch mode {self.switch_mode!r}: choose one of {', '.join(SWITCH_MODES)}")
    self.spec()

  @property
  def unbounded(self) -> bool:
    """Whether a video may run for ever: positions stay bounded however long it is (infinity mode or a RoPE
    horizon), so the RoPE table's length does not limit it."""
    return self.relative_rope or self.rope_horizon > 0

  def spec(self, *, patch: tuple[int, int] = (2, 2)) -> StreamSpec:
    """The cache layout for a model with spatial ``patch`` (Wan2.1: 2x2; the toy world's DiT: 4x4)."""
    ph, pw = patch
    if self.height % ph or self.width % pw:
      raise StreamInputError(
        f"--height {self.height} / --width {self.width}: the latent size must be a multiple of the model's "
        f"patch ({ph}x{pw})"
      )
    try:
      return StreamSpec(
        block_frames=self.block_frames,
        sink_frames=self.sink_frames,
        window_frames=self.window_frames,
        tokens_per_frame=(self.height // ph) * (self.width // pw),
        relative_rope=self.relative_rope or self.rope_horizon > 0,  # the horizon re-applies positions too
        rope_horizon=self.rope_horizon,
      )
    except ValueError as e:
      raise StreamInputError(str(e)) from e


def check_length(opts: StreamOptions, rope_max_len: int) -> None:
  """Absolute RoPE tables hold ``rope_max_len`` positions: longer videos need ``--relative-rope`` or a
  ``--rope-horizon`` (positions never pass it by more than a block)."""
  if not opts.unbounded and opts.frames > rope_max_len:
    raise StreamInputError(
      f"--frames {opts.frames}: exceeds the {rope_max_len}-frame RoPE table of absolute positions (the model's "
      "rope_max_len); add --relative-rope (infinity mode: positions relative to the attention window) or "
      "--rope-horizon N (absolute positions up to frame N, then the window's kept; no length "
      "limit) for longer videos"
    )


def load_streamer(checkpoint_dir: str | Path, opts: StreamOptions) -> Streamer:
  """A :class:`Streamer` for a converted checkpoint (a separate LoRA adapter is merged in).

  Order: LoRA merge, the cast to the compute dtype, then ``opts.quantize`` (the quantised layers keep the
  compute dtype for what they do not quantise: activations of weight-only modes, biases, scales applied).
  """
  from longlive_jax import checkpoint
  from longlive_jax.model import lora as model_lora
  from longlive_jax.model.params import model_from_params

  cfg, params, adapter, info = checkpoint.load(checkpoint_dir, dtype=opts.dtype)
  if opts.attention is not None:
    cfg = cfg.replace(attention_impl=opts.attention)  # a ConfigError if the dtype cannot run it (cudnn: 16-bit)
  if adapter is not None:
    params = model_lora.merge(params, adapter, scale=float(info["lora"]["scale"]))
  if cfg.param_dtype != cfg.dtype:  # cast once here, not in every compiled pass (e.g. bfloat16-stored weights)
    params = jax.tree.map(lambda p: jnp.asarray(p, cfg.dtype), params)
    cfg = cfg.replace(param_dtype=cfg.dtype)
  model = model_from_params(cfg, params)
  del params  # the float kernels go with `model` when it is replaced by its quantised copy below
  if opts.quantize is not None:
    from longlive_jax.quant.dit import quantize_dit

    model = quantize_dit(model, opts.quantize)
  return Streamer(
    model,
    opts.spec(patch=cfg.patch_size[1:]),
    context_t=opts.context_noise,
    global_sink=opts.global_sink,
    switch_mode=opts.switch_mode,
  )
