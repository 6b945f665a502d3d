"""Teacher-forced block denoising: the causal generator continues true clips from a clean cache.

At inference every block is generated from noise with the clean, committed past in the KV cache. ODE init never
shows the generator a clean past (every block's context is the teacher trajectory's own noisy earlier blocks),
and the DMD stages judge whole windows by distribution, which tolerates a generator whose blocks do not quite
continue the one before: the toy world's students place each new block about one latent frame ahead of where
the cached past says the object is (measured by ``experiments/toyworld/forced_student.py``), so objects jump at
every block boundary. This stage supervises exactly that step on encoded true clips:

  * one forward over ``[clean z (F frames) ; noisy block inputs (F frames)]``, both at RoPE positions
    ``0 .. F - 1``: the clean half at ``t = 0`` attends block-causally to the clean half (what the commit pass
    writes into the cache), the noisy half's block ``b`` attends to the clean frames of the blocks before it (the
    cache: the sink frames and the frames of the attention window) and to its own noisy frames;
  * block ``b``'s noisy input is ``(1 - sigma) z + sigma eps`` at one of the generator's few-step timesteps
    (LongLive's ``[1000, 750, 500, 250]`` warped with shift 5), drawn per block;
  * loss: mean squared error of the x0 estimate to ``z`` over the noisy blocks; ``skip_first_blocks`` leave out
    blocks without enough past to fix the object's position (block 0 has none: its target would be the blur of
    every start position, and DMD already made block 0 sharp).

In this deterministic world the past fixes the next block, so the regression target is sharp. The export is the
generator (EMA when enabled), like the other generator stages. Data ``video_latents`` records: ``latents``
``[F, H, W, C]`` (normalised, e.g. ``longlive-jax toyworld latents``) and ``text_embedding`` ``[L, D]`` (or a
``prompt``, embedded by the data's text encoder, as the ode-init stage).

Prompt switches. A record may carry ``switch_latent`` ``S`` (a multiple of the block; 0: none): the clip's
prompt changes at latent ``S`` while the world goes on, and its text is the prompt it ends under. At inference
LongLive's KV-recache then re-encodes the cached past under the new prompt (:func:`~longlive_jax.stream.engine
.recache`: one unmasked pass at ``t = 0`` over the last ``min(window, S)`` frames, plus the kept sink past the
window) and every later block is generated and committed under it. So the whole clip is conditioned on the new
prompt, the clean frames that the recache rewrites attend to each other (and the sink) without the block-causal
mask, and only the blocks from ``S`` on are in the loss: a generator that only ever continued its past (clips
without switches) learns to copy the past where the new prompt disagrees with it (measured: edited attributes
right in 53% of the first blocks after a switch against the DMD student's 76%). Exact when ``S <= window``; past
the window the kept sink frames are encoded under the new prompt here, the old one at inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longlive_jax import schedule
from longlive_jax.train.stages.dmd import has_field, stacked, stage_options
from longlive_jax.train.stages.ode_init import ODEInitStage

Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
  """``options:`` of the forced stage.

  Attributes:
    num_frame_per_block: frames per causal block (3).
    sink_size: frames at the start that every block keeps seeing (LongLive's frame sink; 0 for none).
    local_attn_size: the attention window in frames, the sink and the block itself included (-1: every earlier
      frame): :class:`~longlive_jax.stream.cache.StreamSpec`'s ``window_frames``, so a block sees the sink, the
      ``local_attn_size - sink_size - num_frame_per_block`` frames before it and itself, as in the KV cache.
    denoising_step_list, timestep_shift: the generator's few-step schedule; each block's input is drawn at one
      of its warped timesteps.
    skip_first_blocks: blocks at the start of each clip left out of the loss (they still serve as the past).
    self_context: the fraction of blocks whose clean past is the generator's own estimate instead of the true
      clip (scheduled sampling; 0: always the truth). At inference the cache holds what the generator drew, never
      the truth; trained only on true pasts, a generator can continue a motion it reads from a true past (the
      toy world's bouncing objects) and lose it from its own. The estimate is the generator's x0 of each block
      from the true clip noised to the last few-step timestep (the sampler's last step, given a perfect
      earlier one), detached, with the true past before it.
  """

  num_frame_per_block: int = 3
  sink_size: int = 0
  local_attn_size: int = -1
  denoising_step_list: tuple[int, ...] = (1000, 750, 500, 250)
  timestep_shift: float = 5.0
  skip_first_blocks: int = 1
  self_context: float = 0.0

  def __post_init__(self):
    if self.num_frame_per_block < 1:
      raise ValueError(f"options.num_frame_per_block: must be >= 1, got {self.num_frame_per_block}")
    if not 0.0 <= self.self_context <= 1.0:
      raise ValueError(f"options.self_context: must be in [0, 1], got {self.self_context}")
    if self.skip_first_blocks < 0 or self.sink_size < 0:
      raise ValueError("options.skip_first_blocks and options.sink_size: must be >= 0")
    if self.local_attn_size != -1 and self.local_attn_size <= self.sink_size + self.num_frame_per_block:
      raise ValueError(
        f"options.local_attn_size: -1 or more than sink_size + num_frame_per_block "
        f"({self.sink_size + self.num_frame_per_block}), got {self.local_attn_size}"
      )

  def timesteps(self) -> np.ndarray:
    return schedule.warped_steps(self.denoising_step_list, shift=self.timestep_shift)[0]

  def sigmas(self) -> np.ndarray:
    return schedule.warped_steps(self.denoising_step_list, shift=self.timestep_shift)[1]


def forced_mask(
  *,
  num_frames: int,
  block_frames: int,
  tokens_per_frame: int,
  sink: int = 0,
  window: int = -1,
  switch: Array | None = None,
) -> Array:
  """bool ``[2S, 2S]`` (``S = num_frames * tokens_per_frame``) over ``[clean ; noisy]`` tokens; ``[B, 2S, 2S]``
  with ``switch``.

  Clean frame ``i`` sees clean frame ``j`` iff ``j``'s block is not after ``i``'s and ``j`` is in what a block
  reads from the cache (a sink frame, or one of the ``window - sink - block`` frames before ``i``'s block, as
  :class:`~longlive_jax.stream.cache.StreamSpec`'s ring) or in ``i``'s block: the commit pass.
  Noisy frame ``i`` sees clean frame ``j`` iff ``j``'s block is before ``i``'s (and in the sink or window), and
  noisy frame ``j`` iff it is in ``i``'s block: a denoising step against the cache. Clean never sees noisy.

  ``switch`` int ``[B]``: a KV-recache at frame ``s = switch[b]`` (0: none). The clean frames it rewrites,
  ``[lo, s)`` with ``lo = 0`` if ``s <= window`` else ``s - window + sink``, see each other (and, past the window,
  the kept sink) instead of their block-causal row: the recache's one unmasked pass.
  """
  frame = jnp.arange(num_frames * tokens_per_frame) // tokens_per_frame  # [S] frame of each token
  blk = frame // block_frames  # [S]
  end = (blk + 1) * block_frames  # [S] end (exclusive) of each token's block
  in_cache = jnp.ones((frame.size, frame.size), bool)
  if window > 0:
    in_cache = (frame[None, :] >= end[:, None] - window + sink) | (frame[None, :] < sink)  # [S, S]
  clean_clean = (blk[None, :] <= blk[:, None]) & in_cache
  noisy_clean = (blk[None, :] < blk[:, None]) & in_cache
  noisy_noisy = blk[None, :] == blk[:, None]
  bottom = jnp.concatenate([noisy_clean, noisy_noisy], axis=1)  # noisy queries [S, 2S]
  if switch is None:
    top = jnp.concatenate([clean_clean, jnp.zeros_like(clean_clean)], axis=1)  # clean queries [S, 2S]
    return jnp.concatenate([top, bottom], axis=0)
  sw = jnp.asarray(switch, jnp.int32)[:, None, None]  # [B, 1, 1]
  past = (sw > window) if window > 0 else jnp.zeros_like(sw, bool)  # [B, 1, 1] the recache keeps the sink
  lo = jnp.where(past, sw - window + sink, 0)  # [B, 1, 1] first frame it rewrites
  fi, fj = frame[None, :, None], frame[None, None, :]  # [1, S, 1], [1, 1, S]
  rewritten = (sw > 0) & (fi >= lo) & (fi < sw)  # [B, S, 1] clean queries of the recache pass
  sees = ((fj >= lo) & (fj < sw)) | (past & (fj < sink))  # [B, 1, S]
  clean = jnp.where(rewritten, sees, clean_clean[None])  # [B, S, S]
  top = jnp.concatenate([clean, jnp.zeros_like(clean)], axis=2)  # [B, S, 2S]
  return jnp.concatenate([top, jnp.broadcast_to(bottom[None], top.shape)], axis=1)  # [B, 2S, 2S]


class ForcedStage(ODEInitStage):
  """See the module docstring. ``data = "video_latents"``; batches ``{"latents", "cond", "switch"}``."""

  name = "forced"
  data = "video_latents"

  def __init__(self, opts: Options, cfg):
    super().__init__(opts, cfg)
    self.sigma_t = opts.sigmas()

  def batch_loss(self, params, batch, key: Array) -> tuple[Array, dict]:
    latents = jnp.asarray(batch["latents"], jnp.float32)
    switch = batch.get("switch")
    return self.loss(params, latents, jnp.asarray(batch["cond"], jnp.float32), key, switch=switch)

  def loss(self, params, latents: Array, cond: Array, key: Array, *, switch: Array | None = None) -> tuple[Array, dict]:
    """Forced-denoising loss of one batch; each block's timestep and noise drawn from ``key``."""
    o = self.opts
    b, f = latents.shape[:2]
    k_idx, k_eps = jax.random.split(key)
    idx = jax.random.randint(k_idx, (b, f // o.num_frame_per_block), 0, self.step_t.shape[0])  # [B, blocks]
    idx = jnp.repeat(idx, o.num_frame_per_block, axis=1)  # [B, F]
    eps = jax.random.normal(k_eps, latents.shape, latents.dtype)
    context = None
    if o.self_context > 0:
      k_ctx, k_pick = jax.random.split(jax.random.fold_in(key, 1))
      last = jnp.full_like(idx, self.step_t.shape[0] - 1)  # [B, F] the sampler's last step
      est = self.denoised(params, latents, cond, last, jax.random.normal(k_ctx, latents.shape), switch=switch)
      pick = jax.random.bernoulli(k_pick, o.self_context, (b, f // o.num_frame_per_block))  # [B, blocks]
      pick = jnp.repeat(pick, o.num_frame_per_block, axis=1)[..., None, None, None]  # [B, F, 1, 1, 1]
      context = jnp.where(pick, jax.lax.stop_gradient(est), latents)  # [B, F, H, W, C]
    return self.loss_at(params, latents, cond, idx, eps, switch=switch, context=context)

  def loss_at(
    self,
    params,
    latents: Array,
    cond: Array,
    idx: Array,
    eps: Array,
    *,
    switch: Array | None = None,
    context: Array | None = None,
  ) -> tuple[Array, dict]:
    """The loss with frame ``f`` of sample ``b`` noised to step ``idx [B, F]`` with ``eps`` (like ``latents``);
    ``switch [B]``: each clip's switch latent (0: none; see the module docstring); ``context``: the clean past
    (like ``latents``; default: ``latents``, see ``Options.self_context``). The target is always ``latents``."""
    o = self.opts
    b, f = latents.shape[:2]
    x0 = self.denoised(params, latents, cond, idx, eps, switch=switch, context=context)  # [B, F, H, W, C]
    err = jnp.mean(jnp.square(x0 - latents), axis=(2, 3, 4))  # [B, F]
    first = jnp.full((b, 1), o.skip_first_blocks * o.num_frame_per_block, jnp.int32)  # [B, 1]
    if switch is not None:
      first = jnp.maximum(first, jnp.asarray(switch, jnp.int32)[:, None])  # blocks under the new prompt only
    keep = (jnp.arange(f)[None, :] >= first).astype(err.dtype)  # [B, F]
    loss = jnp.sum(err * keep) / jnp.maximum(jnp.sum(keep), 1.0)
    return loss, {"timestep_mean": jnp.mean(jnp.asarray(self.step_t)[idx])}

  def denoised(
    self,
    params,
    latents: Array,
    cond: Array,
    idx: Array,
    eps: Array,
    *,
    switch: Array | None = None,
    context: Array | None = None,
  ) -> Array:
    """x0 ``[B, F, H, W, C]`` of every block denoised against its clean past (``context``, default ``latents``),
    inputs as :meth:`loss_at`."""
    o, cfg = self.opts, self.net.cfg
    _, f, h, w, _ = latents.shape
    t = jnp.asarray(self.step_t)[idx]  # [B, F]
    sig = jnp.asarray(self.sigma_t)[idx][..., None, None, None]  # [B, F, 1, 1, 1]
    x_t = (1.0 - sig) * latents + sig * eps  # [B, F, H, W, C]
    _, ph, pw = cfg.patch_size
    mask = forced_mask(
      num_frames=f,
      block_frames=o.num_frame_per_block,
      tokens_per_frame=(h // ph) * (w // pw),
      sink=o.sink_size,
      window=o.local_attn_size,
      switch=switch,
    )
    mask = mask if switch is not None else mask[None]  # [B or 1, 2S, 2S]
    model = nnx.merge(self.graphdef, params)
    ck, cv = model.cross_kv(cond)
    pos = jnp.arange(f, dtype=jnp.int32)
    flow, _, _ = model.forward_tokens(
      jnp.concatenate([latents if context is None else context, x_t], axis=1),  # [B, 2F, H, W, C]: clean, noisy
      jnp.concatenate([jnp.zeros_like(t), t], axis=1),  # [B, 2F]
      cross_k=ck,
      cross_v=cv,
      frame_pos=jnp.concatenate([pos, pos]),
      key_mask=mask,
    )
    return schedule.flow_to_x0(flow[:, f:], x_t, t, shift=o.timestep_shift)  # [B, F, H, W, C] noisy half

  def make_batch(self, records, *, encode_text: Callable | None = None) -> dict[str, Any]:
    """``{"latents" [B, F, H, W, C], "cond" [B, text_len, text_dim]}`` float32 from ``video_latents`` records, and
    ``"switch" [B]`` int32 when they carry ``switch_latent``."""
    cfg, o = self.net.cfg, self.opts
    if not records:
      raise ValueError("forced stage: empty batch")
    lat = np.stack([np.asarray(x, np.float32) for x in stacked(records, "latents")])  # [B, F, H, W, C]
    src = records[0].get("file", "?") if isinstance(records, list) else "?"
    _, ph, pw = cfg.patch_size
    f = lat.shape[1] if lat.ndim == 5 else 0
    if (
      lat.ndim != 5
      or f % o.num_frame_per_block
      or f <= o.skip_first_blocks * o.num_frame_per_block
      or lat.shape[-1] != cfg.in_dim
      or lat.shape[2] % ph
      or lat.shape[3] % pw
    ):
      raise ValueError(
        f"forced stage: latents of {src} have shape {lat.shape[1:]}; need [F, H, W, {cfg.in_dim}] with F a multiple "
        f"of {o.num_frame_per_block} and more than {o.skip_first_blocks} block(s), H/W divisible by {ph}x{pw}"
      )
    batch = {"latents": lat, "cond": self.make_cond(records, encode_text=encode_text)}
    if has_field(records, "switch_latent"):
      sw = np.asarray([int(x) for x in stacked(records, "switch_latent")], np.int32)  # [B]
      bad = (sw < 0) | (sw >= f) | (sw % o.num_frame_per_block != 0)
      if bad.any():
        raise ValueError(
          f"forced stage: switch_latent {int(sw[bad][0])} in {src}; need 0 (no switch) or a multiple of "
          f"{o.num_frame_per_block} below the clip's {f} latents"
        )
      batch["switch"] = sw
    return batch


def make_stage(cfg) -> ForcedStage:
  """The forced stage of a :class:`~longlive_jax.train.config.TrainConfig` (registry entry)."""
  return ForcedStage(stage_options(Options, cfg), cfg)
