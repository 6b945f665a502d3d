"""ODE-regression initialisation of the causal generator (CausVid / Self-Forcing ``ode_regression``).

The teacher's deterministic sampling trajectories are regressed onto: for each block of
``num_frame_per_block`` frames one trajectory point is drawn (diffusion-forcing style: different noise
levels per block, one per block), the causal generator predicts x0 from those noisy frames in ONE forward
over the whole clip with the block-causal mask (no rollout and no KV cache: every block's context is the
trajectory's own, noisy, earlier blocks, never the generator's output;
:meth:`longlive_jax.model.wan.WanDiT.forward_tokens` with a query-dependent ``key_mask``), and the loss is
the MSE to the trajectory's clean end over frames with ``t != 0``
(:func:`~longlive_jax.train.losses.ode_regression_loss`). The flow prediction is turned into x0 on the
generator's shift-5 grid.

Data ``ode_pairs``, one record per clip:
  * ``trajectory``: float ``[K + 1, F, H, W, C]`` latents (channels-last) at the ``K`` timesteps of
    ``trajectory_timesteps`` (most noisy first), then the clean latent; ``F`` a multiple of the block;
  * ``text_embedding``: float ``[text_len, text_dim]`` (or ``prompt``: a string, embedded by ``encode_text``).
Upstream's LMDB pairs (``ode_latent [1, 5, 21, 16, 60, 104]``) map onto this with
:func:`longlive_jax.layout` (``[T, C, H, W]`` -> ``[T, H, W, C]`` per state); Self-Forcing's stored states are
at the shift-8 warp ``[1000, 960, 888.9, 727.3]``: set ``trajectory_timesteps`` to those for such data.

The generator, its AdamW and EMA are the train config's ``model:`` / ``optim:`` / ``ema:``; ``options:``
are the fields of :class:`Options`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from longlive_jax import schedule
from longlive_jax.model.wan import abstract_model
from longlive_jax.train import losses
from longlive_jax.train.lora_train import load_params, net_spec, place_state
from longlive_jax.train.optim import apply, make_optimizer
from longlive_jax.train.stages.dmd import has_field, stacked, stage_options

Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
  """``options:`` of the ode-init stage.

  Attributes:
    num_frame_per_block: frames per causal block (3).
    local_attn_size: frames a block attends to (incl. itself), -1 = all earlier blocks (Self-Forcing's ODE init).
    denoising_step_list, timestep_shift: the few-step schedule whose warped timesteps label the trajectory
      points (LongLive: [1000, 937.5, 833.3, 625]) unless ``trajectory_timesteps`` gives them explicitly.
  """

  num_frame_per_block: int = 3
  local_attn_size: int = -1
  denoising_step_list: tuple[int, ...] = (1000, 750, 500, 250)
  timestep_shift: float = 5.0
  trajectory_timesteps: tuple[float, ...] | None = None

  def timesteps(self) -> np.ndarray:
    """float32 ``[K]`` timestep of each noisy trajectory point."""
    if self.trajectory_timesteps is not None:
      return np.asarray(self.trajectory_timesteps, np.float32)
    return schedule.warped_steps(self.denoising_step_list, shift=self.timestep_shift)[0]


@struct.dataclass
class ODEState:
  step: Array  # int32 []
  key: Array  # uint32 key data
  params: Any
  opt_state: Any
  ema: Any  # None without EMA


def causal_mask(*, num_frames: int, block_frames: int, tokens_per_frame: int, window: int = -1) -> Array:
  """bool ``[S, S]``: token q sees k iff k's block <= q's block and (with ``window`` frames) k lies in the
  ``window`` frames ending with q's block (upstream ``_prepare_blockwise_causal_attn_mask``)."""
  frame = jnp.arange(num_frames * tokens_per_frame) // tokens_per_frame  # [S]
  end = (frame // block_frames + 1) * block_frames  # [S] end frame (exclusive) of each token's block
  ok = frame[None, :] < end[:, None]  # [S, S]
  if window > 0:
    ok = ok & (frame[None, :] >= end[:, None] - window)
  return ok


class ODEInitStage:
  """See the module docstring. ``data = "ode_pairs"``; batches ``{"trajectory", "cond"}``."""

  name = "ode-init"
  data = "ode_pairs"

  def __init__(self, opts: Options, cfg):
    self.opts = opts
    self.net = net_spec(cfg.model, seed=cfg.seed)
    self.model_config = self.net.cfg
    self.graphdef = nnx.split(abstract_model(self.net.cfg))[0]
    self.tx = make_optimizer(cfg.optim)
    self.optim_schedule = cfg.optim
    self.ema_decay = cfg.ema.decay if cfg.ema.enabled else None
    self.ema_start = cfg.ema.start_step
    self.min_shard_size = cfg.mesh.min_shard_size
    self.step_t = opts.timesteps()

  def init(self, key: Array, *, mesh=None) -> ODEState:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.key_data(key)
    params = load_params(self.net)
    state = ODEState(
      step=jnp.zeros((), jnp.int32),
      key=jnp.asarray(key, jnp.uint32),
      params=params,
      opt_state=self.tx.init(params),
      ema=None if self.ema_decay is None else jax.tree.map(lambda x: jnp.array(x, copy=True), params),
    )
    return place_state(state, mesh, min_size=self.min_shard_size)

  def batch_loss(self, params, batch: Mapping[str, Array], key: Array) -> tuple[Array, dict]:
    """The loss of one ``make_batch`` batch (what :meth:`step` differentiates; subclasses read other fields)."""
    traj = jnp.asarray(batch["trajectory"], jnp.float32)
    return self.loss(params, traj, jnp.asarray(batch["cond"], jnp.float32), key)

  def loss(self, params, trajectory: Array, cond: Array, key: Array) -> tuple[Array, dict]:
    """ODE-regression loss of one batch, trajectory points drawn per block from ``key``."""
    o = self.opts
    b, _, f = trajectory.shape[:3]
    idx = jax.random.randint(key, (b, f // o.num_frame_per_block), 0, self.step_t.shape[0])  # [B, blocks]
    return self.loss_at(params, trajectory, cond, jnp.repeat(idx, o.num_frame_per_block, axis=1))

  def loss_at(self, params, trajectory: Array, cond: Array, idx: Array) -> tuple[Array, dict]:
    """ODE-regression loss with frame ``f`` of sample ``b`` at trajectory point ``idx [B, F]`` (0: pure noise)."""
    o, cfg = self.opts, self.net.cfg
    _, _, f, h, w, _ = trajectory.shape
    step_t = jnp.concatenate([jnp.asarray(self.step_t), jnp.zeros((1,), jnp.float32)])  # [K + 1]
    x_t, t, target = losses.ode_regression_inputs(trajectory, idx, step_t)
    model = nnx.merge(self.graphdef, params)
    _, ph, pw = cfg.patch_size
    mask = causal_mask(
      num_frames=f, block_frames=o.num_frame_per_block, tokens_per_frame=(h // ph) * (w // pw), window=o.local_attn_size
    )
    ck, cv = model.cross_kv(cond)
    flow, _, _ = model.forward_tokens(
      x_t, t, cross_k=ck, cross_v=cv, frame_pos=jnp.arange(f, dtype=jnp.int32), key_mask=mask[None]
    )
    x0 = schedule.flow_to_x0(flow, x_t, t, shift=o.timestep_shift)
    loss = losses.ode_regression_loss(x0_pred=x0, target=target, timestep=t)
    return loss, {"timestep_mean": jnp.mean(t)}

  def step(self, state: ODEState, batch: Mapping[str, Array]) -> tuple[ODEState, dict]:
    key = jax.random.wrap_key_data(state.key)
    k_next, k_step = jax.random.split(key)
    (loss, aux), grads = jax.value_and_grad(self.batch_loss, has_aux=True)(state.params, batch, k_step)
    params, opt_state, ema = apply(
      self.tx,
      grads,
      state.opt_state,
      state.params,
      ema=state.ema,
      step=state.step,
      decay=self.ema_decay,
      start_step=self.ema_start,
      schedule=self.optim_schedule,
    )
    new = state.replace(
      step=state.step + 1, key=jax.random.key_data(k_next), params=params, opt_state=opt_state, ema=ema
    )
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return new, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  def make_batch(self, records, *, encode_text: Callable | None = None) -> dict[str, Any]:
    """``{"trajectory" [B, K + 1, F, H, W, C], "cond" [B, text_len, text_dim]}`` float32 from ``ode_pairs`` records."""
    cfg, o = self.net.cfg, self.opts
    traj = np.stack([np.asarray(x, np.float32) for x in stacked(records, "trajectory")])
    k = self.step_t.shape[0]
    _, ph, pw = cfg.patch_size
    if (
      traj.ndim != 6
      or traj.shape[1] != k + 1
      or traj.shape[2] % o.num_frame_per_block
      or traj.shape[-1] != cfg.in_dim
      or traj.shape[3] % ph
      or traj.shape[4] % pw
    ):
      raise ValueError(
        f"ode-init: trajectory of shape {traj.shape[1:]}; expected [{k + 1}, F, H, W, {cfg.in_dim}] "
        f"({k} trajectory timesteps + the clean latent, F a multiple of {o.num_frame_per_block}, H/W of the patch)"
      )
    return {"trajectory": traj, "cond": self.make_cond(records, encode_text=encode_text)}

  def make_cond(self, records, *, encode_text: Callable | None = None) -> np.ndarray:
    """float32 ``[B, text_len, text_dim]``: the records' ``text_embedding``, or their ``prompt`` via ``encode_text``."""
    cfg = self.net.cfg
    if has_field(records, "text_embedding"):
      cond = np.stack([np.asarray(x, np.float32) for x in stacked(records, "text_embedding")])
    elif encode_text is not None:
      cond = np.asarray(encode_text(list(stacked(records, "prompt"))), np.float32)
    else:
      raise ValueError(f"{self.name}: records have no 'text_embedding'; pass encode_text to embed 'prompt'")
    if cond.shape[1:] != (cfg.text_len, cfg.text_dim):
      raise ValueError(
        f"{self.name}: text embedding of shape {cond.shape[1:]}, expected [{cfg.text_len}, {cfg.text_dim}]"
      )
    return cond

  def export(self, state: ODEState) -> dict:
    """Inference weights: the EMA when enabled, else the trained weights."""
    return jax.device_get(state.ema if state.ema is not None else state.params)


def make_stage(cfg) -> ODEInitStage:
  """The ode-init stage of a :class:`~longlive_jax.train.config.TrainConfig` (registry entry)."""
  return ODEInitStage(stage_options(Options, cfg), cfg)
