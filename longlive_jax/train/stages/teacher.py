"""Teacher stage: flow-matching (rectified-flow) pretraining of the bidirectional Wan DiT on video latents.

One step, for clean latents ``x0 [B, F, H, W, C]`` and caption embeddings ``c [B, L, D]``:

  * ``t = sample_timestep(shift=5)``: a uniform integer draw mapped through the shift-5 warp
    ``1000 * 5u / (1 + 4u)`` (the scheduler's training grid), clamped to ``[min_step, max_step]``;
  * ``x_t = add_noise(x0, eps, t)`` = ``(1 - sigma) x0 + sigma eps`` with the grid sigma;
  * ``loss = mean(w(t) * (v_theta(x_t, t, c) - (eps - x0))^2)`` (:func:`flow_matching_loss`), with
    ``w`` the scheduler's bell-shaped training weight (mean 1 over the grid; ``training_weight: false``
    for the plain MSE);
  * clip-then-AdamW (:mod:`longlive_jax.train.optim`), then the EMA.

Master weights, gradients, optimizer state and EMA are float32; ``model.dtype: bfloat16`` runs the
matmuls in bfloat16 (WanDiT keeps norms, modulation, timestep MLP, softmax and the head in float32).
``model.remat: true`` rematerialises each block in the backward pass. Per-step randomness is
``fold_in(key, step)``, so a resumed run draws exactly what the uninterrupted run would have.
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
from longlive_jax.config import WanConfig
from longlive_jax.model.params import params_of
from longlive_jax.model.wan import WanDiT, abstract_model
from longlive_jax.sharding import MeshConfig, init_sharded, make_mesh, state_shardings
from longlive_jax.train import optim
from longlive_jax.train.losses import flow_matching_loss


class TeacherDataError(ValueError):
  """A batch that does not fit the teacher model (names the field and shapes)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
  """``options:`` of the teacher stage.

  Attributes:
    timestep_shift: shift of the training timestep grid (Wan / LongLive: 5).
    min_step, max_step: clamp of the sampled timesteps (full range by default).
    training_weight: weight the loss with the scheduler's training weights.
    first_frame_weight: loss factor of latent frame 0 against 1 for the others, renormalised to a mean of 1
      over the frames (1: upstream, every frame alike). Latent 0 encodes one video frame, the others four
      each (Wan's causal VAE), so its statistics differ; RoPE is relative, so a small bidirectional model
      has only the clip's edge to tell frame 0 apart, and with 1/F of the loss it learns that late (the
      toy-world teacher's samples had a wrong frame 0 long after the others were right).
    frame_timestep_fraction: fraction of the samples whose timesteps are drawn per latent frame (each frame
      its own draw from the same shifted grid, as in diffusion forcing) instead of one per clip (0: upstream).
      A frame then has to be denoised from less noisy neighbours, which exercises the cross-frame attention
      more than a clip-level draw does (tried on the toy-world teacher, whose samples from noise flickered).
  """

  timestep_shift: float = 5.0
  min_step: float = 0.0
  max_step: float = 1000.0
  training_weight: bool = True
  first_frame_weight: float = 1.0
  frame_timestep_fraction: float = 0.0

  def __post_init__(self):
    if not self.first_frame_weight > 0:
      raise ValueError(f"options.first_frame_weight must be > 0, got {self.first_frame_weight}")
    if not 0.0 <= self.frame_timestep_fraction <= 1.0:
      raise ValueError(f"options.frame_timestep_fraction must be in [0, 1], got {self.frame_timestep_fraction}")


def frame_weights(num_frames: int, first_frame_weight: float) -> jax.Array:
  """float32 ``[F]``: ``first_frame_weight`` for frame 0 and 1 for the others, divided by their mean."""
  w = jnp.ones((num_frames,), jnp.float32).at[0].set(first_frame_weight)  # [F]
  return w / jnp.mean(w)


@struct.dataclass
class TeacherState:
  params: dict
  opt_state: Any
  ema: dict | None
  step: jax.Array  # int32 []
  key: jax.Array  # uint32 [2]


def forward(model: WanDiT, x: jax.Array, t: jax.Array, context: jax.Array, *, remat: bool = False) -> jax.Array:
  """``model(x, t, context)`` (bidirectional velocity ``[B, F, H, W, C]``), with optional per-block remat."""
  return model(x, t, context, remat=remat)


class TeacherStage:
  """Flow-matching teacher pretraining (see the module docstring); implements the Stage contract."""

  name = "teacher"
  data = "video_latents"

  def __init__(
    self,
    *,
    model_config: WanConfig,
    optim_config: optim.OptimConfig,
    options: Options = Options(),
    ema_enabled: bool = False,
    ema_decay: float = 0.99,
    ema_start_step: int = 200,
    remat: bool = False,
    min_shard_size: int = 1024,
    init_params: Mapping | None = None,
  ):
    self.model_config = model_config
    self.optim_config = optim_config
    self.options = options
    self.ema_enabled, self.ema_decay, self.ema_start_step = ema_enabled, ema_decay, ema_start_step
    self.remat = remat
    self.min_shard_size = min_shard_size
    self.init_params = init_params
    self.tx = optim.make_optimizer(optim_config)
    self._graphdef = nnx.split(abstract_model(model_config))[0]

  # ------------------------------------------------------------------------------------------ model

  def model(self, params: Mapping) -> WanDiT:
    """The WanDiT whose parameters are ``params`` (a nested dict, traced or concrete)."""
    _, state = nnx.split(abstract_model(self.model_config))
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self._graphdef, state)

  # ------------------------------------------------------------------------------------------- init

  def init(self, key: jax.Array, *, mesh: jax.sharding.Mesh | None) -> TeacherState:
    mesh = mesh if mesh is not None else make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    cfg, mss = self.model_config, self.min_shard_size
    k_model, k_train = jax.random.split(key)
    if self.init_params is None:
      params = init_sharded(lambda k: params_of(WanDiT(cfg, rngs=nnx.Rngs(params=k))), mesh, k_model, min_size=mss)
    else:
      host = jax.tree.map(lambda x: np.asarray(x, np.float32), dict(self.init_params))
      params = jax.device_put(host, state_shardings(host, mesh, min_size=mss))

    def rest(params, k):
      ema = jax.tree.map(lambda p: p * 1.0, params) if self.ema_enabled else None  # own buffers
      return TeacherState(params=params, opt_state=self.tx.init(params), ema=ema, step=jnp.zeros((), jnp.int32), key=k)

    return init_sharded(rest, mesh, params, k_train, min_size=mss)

  # ------------------------------------------------------------------------------------------- step

  def loss(self, params: Mapping, batch: Mapping[str, jax.Array], key: jax.Array) -> tuple[jax.Array, dict]:
    """Weighted flow-matching loss of one batch with the noise / timesteps drawn from ``key``."""
    o = self.options
    x0 = jnp.asarray(batch["latents"], jnp.float32)  # [B, F, H, W, C]
    ctx = jnp.asarray(batch["text_embedding"], jnp.float32)  # [B, L, D]
    k_t, k_n = jax.random.split(key)
    t = schedule.sample_timestep(k_t, x0.shape[0], shift=o.timestep_shift, min_step=o.min_step, max_step=o.max_step)
    if o.frame_timestep_fraction > 0:
      t = self._mix_frame_timesteps(t, k_t, num_frames=x0.shape[1])  # [B, F]
    noise = jax.random.normal(k_n, x0.shape, jnp.float32)
    x_t = schedule.add_noise(x0, noise, t, shift=o.timestep_shift)
    weights = schedule.training_weight(t, shift=o.timestep_shift) if o.training_weight else None
    if o.first_frame_weight != 1.0:
      fw = frame_weights(x0.shape[1], o.first_frame_weight)[None, :]  # [1, F]
      if weights is None:
        weights = jnp.broadcast_to(fw, x0.shape[:2])  # [B, F]
      else:
        weights = (weights if weights.ndim == 2 else weights[:, None]) * fw  # [B, F]
    v = forward(self.model(params), x_t, t, ctx, remat=self.remat)
    loss = flow_matching_loss(flow_pred=v, x0=x0, noise=noise, weights=weights)
    return loss, {"timestep_mean": jnp.mean(t)}

  def _mix_frame_timesteps(self, t: jax.Array, key: jax.Array, *, num_frames: int) -> jax.Array:
    """``[B, F]``: the clip draws ``t [B]`` repeated over frames, or for a fraction
    ``options.frame_timestep_fraction`` of the samples one draw per frame."""
    o = self.options
    b = t.shape[0]
    k_f, k_pick = jax.random.split(jax.random.fold_in(key, 1))
    per_frame = schedule.sample_timestep(
      k_f, b * num_frames, shift=o.timestep_shift, min_step=o.min_step, max_step=o.max_step
    ).reshape(b, num_frames)  # [B, F]
    pick = jax.random.uniform(k_pick, (b, 1)) < o.frame_timestep_fraction  # [B, 1]
    return jnp.where(pick, per_frame, t[:, None])  # [B, F]

  def step(self, state: TeacherState, batch: Mapping[str, jax.Array]) -> tuple[TeacherState, dict[str, jax.Array]]:
    key = jax.random.fold_in(state.key, state.step)
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch, key)
    params, opt_state, ema = optim.apply(
      self.tx,
      grads,
      state.opt_state,
      state.params,
      ema=state.ema,
      step=state.step,
      decay=self.ema_decay,
      start_step=self.ema_start_step,
      schedule=self.optim_config,
    )
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    new = state.replace(params=params, opt_state=opt_state, ema=ema, step=state.step + 1)
    return new, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  # ------------------------------------------------------------------------------------------- data

  def make_batch(self, records: list[Mapping[str, Any]], *, encode_text: Callable | None = None) -> dict[str, Any]:
    """``video_latents`` records -> ``{"latents" [B, F, H, W, C], "text_embedding" [B, L, D]}`` float32."""
    del encode_text  # the dataset stores the caption embeddings
    if not records:
      raise TeacherDataError("teacher stage: empty batch")
    cfg = self.model_config
    lat = np.stack([np.asarray(r["latents"], np.float32) for r in records])  # [B, F, H, W, C]
    emb = np.stack([np.asarray(r["text_embedding"], np.float32) for r in records])  # [B, L, D]
    src = records[0].get("file", "?")
    _, ph, pw = cfg.patch_size
    if lat.ndim != 5 or lat.shape[-1] != cfg.in_dim or lat.shape[2] % ph or lat.shape[3] % pw:
      raise TeacherDataError(
        f"teacher stage: latents of {src} have shape {lat.shape[1:]}; the model needs [F, H, W, {cfg.in_dim}] "
        f"with H, W divisible by {ph}x{pw}"
      )
    if emb.ndim != 3 or emb.shape[-1] != cfg.text_dim:
      raise TeacherDataError(
        f"teacher stage: text_embedding of {src} has shape {emb.shape[1:]}; the model needs [L, {cfg.text_dim}]"
      )
    return {"latents": lat, "text_embedding": emb}

  # ----------------------------------------------------------------------------------------- export

  def export(self, state: TeacherState) -> dict:
    """Inference weights: the EMA when enabled, else the trained weights."""
    return state.ema if state.ema is not None else state.params


def make_stage(cfg) -> TeacherStage:
  """The teacher stage of a :class:`~longlive_jax.train.config.TrainConfig`."""
  from longlive_jax import checkpoint
  from longlive_jax.train.config import TrainConfigError, resolve_model_config

  model_cfg = resolve_model_config(cfg.model)
  init_params = None
  if cfg.model.checkpoint is not None:
    _, init_params, adapter, _ = checkpoint.load(cfg.model.checkpoint)
    if adapter is not None:
      raise TrainConfigError(
        f"model.checkpoint {cfg.model.checkpoint} keeps a separate LoRA adapter; the teacher trains full weights: "
        "convert it with the LoRA merged"
      )
  options = cfg.options if isinstance(cfg.options, Options) else Options(**dict(cfg.options or {}))
  return TeacherStage(
    model_config=model_cfg,
    optim_config=cfg.optim,
    options=options,
    ema_enabled=cfg.ema.enabled,
    ema_decay=cfg.ema.decay,
    ema_start_step=cfg.ema.start_step,
    remat=cfg.model.remat,
    min_shard_size=cfg.mesh.min_shard_size,
    init_params=init_params,
  )
