"""The DMD machinery shared by Stage 1 (Self-Forcing) and Stage 2 (streaming long tuning).

Three networks:
  * generator: the causal model, trained; its videos come from :func:`longlive_jax.train.rollout.rollout`
    (the streaming engine's steps, one random exit step with gradient);
  * critic ("fake score"): a bidirectional WanDiT, trained with the flow loss on generated videos
    (:func:`~longlive_jax.train.losses.critic_loss`);
  * teacher ("real score"): a bidirectional WanDiT (Wan2.1-T2V-14B upstream), frozen, with classifier-free
    guidance ``real = cond + g (cond - uncond)``, ``g = guidance_scale = 3`` and the Wan negative prompt
    as the unconditional input (:func:`~longlive_jax.train.losses.dmd_generator_loss`).

Both score wrappers keep upstream's shift-8 grid for their flow -> x0 (``score_timestep_shift``), the
generator scheduler shift 5 (see :mod:`longlive_jax.train.losses`). Optimizers: AdamW with betas
(0, 0.999), weight decay 0.01, clipping 10 (:mod:`longlive_jax.train.optim`); EMA of the generator's
trainable tree. LoRA (``adapter``) trains adapters with the bases frozen (:mod:`longlive_jax.train.lora_train`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from longlive_jax import schedule
from longlive_jax.model.wan import abstract_model
from longlive_jax.stream.cache import KVCache, StreamSpec, init_cache
from longlive_jax.stream.noise import BlockShape
from longlive_jax.train import losses
from longlive_jax.train import rollout as ro
from longlive_jax.train.config import ModelConfig, TrainConfig, build
from longlive_jax.train.lora_train import (
  LoraOptions,
  NetSpec,
  effective_params,
  init_adapter,
  load_params,
  net_spec,
  place_state,
)
from longlive_jax.train.optim import OptimConfig, apply, make_optimizer
from longlive_jax.train.stages.teacher import forward as bidirectional_forward

Array = jax.Array
sg = jax.lax.stop_gradient
WAN_NEGATIVE_PROMPT = (
  "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
  "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
  "三条腿，背景人很多，倒着走"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DMDOptions:
  """The ``options:`` section of the DMD stages (keys = field names, upstream's where one exists).

  The generator is the train config's ``model:`` (weights from ``model.checkpoint``, compute dtype
  ``model.dtype``, ``model.remat``), its AdamW is ``optim:`` (LongLive: lr 2e-6 stage 1, 1e-5 stage 2;
  betas (0, 0.999), weight decay 0.01, clip 10) and its EMA ``ema:`` (stage 1: enabled, 0.99 from step
  200). ``critic`` / ``teacher`` are model sections of the same form (``preset`` / ``config`` /
  ``checkpoint`` / ``overrides`` / ``dtype`` / ``remat``); omitted, the critic is a copy of ``model:``
  and the teacher of the critic (upstream: critic Wan2.1-T2V-1.3B, teacher Wan2.1-T2V-14B).
  """

  critic: ModelConfig | None = None
  teacher: ModelConfig | None = None
  lr_critic: float = 4.0e-7
  beta1_critic: float = 0.0
  beta2_critic: float = 0.999
  max_grad_norm_critic: float = 10.0
  dfake_gen_update_ratio: int = 5
  guidance_scale: float = 3.0
  timestep_shift: float = 5.0
  # the shift of the DMD / critic timestep draw alone; None: timestep_shift (upstream)
  dmd_timestep_shift: float | None = None
  score_timestep_shift: float = 8.0  # upstream's real/fake score wrappers keep the default shift 8
  min_step: float = 20.0
  max_step: float = 980.0
  denoising_step_list: tuple[int, ...] = (1000, 750, 500, 250)
  num_frame_per_block: int = 3
  sink_size: int = 3
  local_attn_size: int = 12
  context_noise: float = 0.0
  kv_grad: str = "stop"  # or "straight_through" (PyTorch LongLive's gradient into cached K/V)
  exit_step: int | None = None  # None: random per rollout (upstream); an int pins it
  latent_height: int = 60
  latent_width: int = 104
  adapter: LoraOptions | None = None
  apply_to_critic: bool = True
  negative_prompt: str = WAN_NEGATIVE_PROMPT
  negative_embedding: str | None = None  # .npy [text_len, text_dim], else encode_text(negative_prompt)

  def __post_init__(self):
    object.__setattr__(self, "denoising_step_list", tuple(int(s) for s in self.denoising_step_list))
    if self.dfake_gen_update_ratio < 1:
      raise ValueError(f"options.dfake_gen_update_ratio must be >= 1, got {self.dfake_gen_update_ratio}")
    if self.exit_step is not None and not 0 <= self.exit_step < len(self.denoising_step_list):
      raise ValueError(f"options.exit_step {self.exit_step} is outside [0, {len(self.denoising_step_list)})")
    if self.kv_grad not in ro.KV_GRAD_MODES:
      raise ValueError(f"options.kv_grad must be one of {ro.KV_GRAD_MODES}, got {self.kv_grad!r}")


def stage_options(cls, cfg):
  """The stage's options from a train config: ``cfg.options`` (already ``cls``, or a mapping type-checked here)."""
  opts = cfg.options
  if isinstance(opts, cls):
    return opts
  if opts is None or isinstance(opts, Mapping):
    return build(cls, dict(opts or {}), prefix="options.")
  raise TypeError(f"options: expected {cls.__name__} or a mapping of its fields, got {type(opts).__name__}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSetup:
  """What a DMD stage takes from the train config beside its options."""

  generator: NetSpec
  critic: NetSpec
  teacher: NetSpec
  optim: OptimConfig  # the generator's; the critic shares eps and weight decay
  ema_decay: float | None  # None: no EMA
  ema_start_step: int
  batch_size: int
  min_shard_size: int


def run_setup(cfg: TrainConfig, opts: DMDOptions) -> RunSetup:
  critic = opts.critic or cfg.model
  teacher = opts.teacher or critic
  return RunSetup(
    generator=net_spec(cfg.model, seed=cfg.seed),
    critic=net_spec(critic, seed=cfg.seed + 1),
    teacher=net_spec(teacher, seed=cfg.seed + 2),
    optim=cfg.optim,
    ema_decay=cfg.ema.decay if cfg.ema.enabled else None,
    ema_start_step=cfg.ema.start_step,
    batch_size=cfg.batch_size,
    min_shard_size=cfg.mesh.min_shard_size,
  )


@struct.dataclass
class DMDState:
  """Train state of the DMD stages (one pytree). ``*_base`` are frozen LoRA bases (None for full fine-tuning)."""

  step: Array  # int32 []
  key: Array  # uint32 key data
  generator: Any
  generator_base: Any
  critic: Any
  critic_base: Any
  teacher: Any
  generator_opt: Any
  critic_opt: Any
  ema: Any  # EMA of the generator's trainable tree, or None
  stream: Any = None  # Stage 2: the carried stream (KV cache, last frames, prompts)


def stacked(records, key: str):
  """``records`` (a batched dict, or a list of per-sample dicts) -> the stacked field ``key``."""
  if isinstance(records, Mapping):
    return records[key]
  return [r[key] for r in records]


def has_field(records, key: str) -> bool:
  return key in records if isinstance(records, Mapping) else bool(records) and key in records[0]


class DMDCore:
  """Networks, optimizers and the pure update functions shared by Stage 1 and Stage 2."""

  def __init__(self, opts: DMDOptions, run: RunSetup):
    self.opts, self.run = opts, run
    self.nets = {"generator": run.generator, "critic": run.critic, "teacher": run.teacher}
    self.cfgs = {n: spec.cfg for n, spec in self.nets.items()}
    self.graphdefs = {n: nnx.split(abstract_model(c))[0] for n, c in self.cfgs.items()}
    g = self.cfgs["generator"]
    for n in ("critic", "teacher"):
      c = self.cfgs[n]
      if (c.text_len, c.text_dim, c.in_dim, c.out_dim) != (g.text_len, g.text_dim, g.in_dim, g.out_dim):
        raise ValueError(f"options.{n}: text_len/text_dim/in_dim/out_dim differ from the generator's ({c} vs {g})")
    ph, pw = g.patch_size[1:]
    if opts.latent_height % ph or opts.latent_width % pw:
      raise ValueError(
        f"options.latent_height/latent_width {opts.latent_height}x{opts.latent_width} must divide by the patch {ph}x{pw}"
      )
    self.stream_spec = StreamSpec(
      block_frames=opts.num_frame_per_block,
      sink_frames=opts.sink_size,
      window_frames=opts.local_attn_size,
      tokens_per_frame=(opts.latent_height // ph) * (opts.latent_width // pw),
    )
    self.rollout_spec = ro.RolloutSpec(
      stream=self.stream_spec,
      step_list=opts.denoising_step_list,
      shift=opts.timestep_shift,
      context_t=opts.context_noise,
      kv_grad=opts.kv_grad,
      remat=run.generator.remat,
    )
    self.gen_tx = make_optimizer(run.optim)
    self.critic_tx = make_optimizer(
      dataclasses.replace(
        run.optim,
        lr=opts.lr_critic,
        beta1=opts.beta1_critic,
        beta2=opts.beta2_critic,
        clip_norm=opts.max_grad_norm_critic,
      )
    )
    self.gen_lora = opts.adapter
    self.critic_lora = opts.adapter if opts.apply_to_critic else None
    self._uncond_cache: np.ndarray | None = None

  # -------------------------------------------------------------------------------- state

  def init_state(self, key: Array, *, mesh, stream=None) -> DMDState:
    """Weights loaded (or drawn), fresh adapters under LoRA, optimizer states, EMA; placed on ``mesh``."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.key_data(key)
    k_gen, k_critic, k_state = jax.random.split(jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32)), 3)
    gen, critic, teacher = (load_params(self.nets[n]) for n in ("generator", "critic", "teacher"))
    gen_t, gen_b = (init_adapter(k_gen, gen, options=self.gen_lora), gen) if self.gen_lora else (gen, None)
    cr_t, cr_b = (
      (init_adapter(k_critic, critic, options=self.critic_lora), critic) if self.critic_lora else (critic, None)
    )
    state = DMDState(
      step=jnp.zeros((), jnp.int32),
      key=jax.random.key_data(k_state),
      generator=gen_t,
      generator_base=gen_b,
      critic=cr_t,
      critic_base=cr_b,
      teacher=teacher,
      generator_opt=self.gen_tx.init(gen_t),
      critic_opt=self.critic_tx.init(cr_t),
      ema=None if self.run.ema_decay is None else jax.tree.map(lambda x: jnp.array(x, jnp.float32, copy=True), gen_t),
      stream=stream,
    )
    return place_state(state, mesh, min_size=self.run.min_shard_size)

  def generator_params(self, trainable, base):
    return effective_params(trainable, base, lora=self.gen_lora)

  def critic_params(self, trainable, base):
    return effective_params(trainable, base, lora=self.critic_lora)

  def export(self, state: DMDState) -> dict:
    trainable = state.ema if state.ema is not None else state.generator
    return jax.device_get(self.generator_params(trainable, state.generator_base))

  # -------------------------------------------------------------------------------- generation

  def new_cache(self, batch: int) -> KVCache:
    c = self.cfgs["generator"]
    return init_cache(
      self.stream_spec,
      num_layers=c.num_layers,
      batch=batch,
      num_heads=c.num_heads,
      head_dim=c.head_dim,
      dtype=jnp.dtype(c.dtype),
    )

  def generate(
    self, params, key: Array, cond: Array, *, num_blocks: int, cache: KVCache | None = None, active: Array | None = None
  ):
    """Rollout of ``num_blocks`` blocks from ``cache`` (fresh if None): ``(video, cache, exit_step)``.

    ``active``: optional bool ``[num_blocks]``, blocks to skip (see :func:`longlive_jax.train.rollout.rollout`).
    """
    b = cond.shape[0]
    shape = BlockShape(
      batch=b,
      frames=self.stream_spec.block_frames,
      height=self.opts.latent_height,
      width=self.opts.latent_width,
      channels=self.cfgs["generator"].in_dim,
    )
    k_draw, k_exit = jax.random.split(key)
    draws = ro.draw_blocks(k_draw, num_blocks=num_blocks, shape=shape, num_steps=self.rollout_spec.num_steps)
    e = self.opts.exit_step
    e = ro.sample_exit_step(k_exit, self.rollout_spec.num_steps) if e is None else jnp.int32(e)
    cache = self.new_cache(b) if cache is None else cache
    video, cache = ro.rollout(
      self.graphdefs["generator"],
      params,
      cache,
      draws,
      context=cond,
      exit_step=e,
      spec=self.rollout_spec,
      active=active,
    )
    return video, cache, e

  # -------------------------------------------------------------------------------- scores and losses

  def _flow(self, name: str, params):
    model = nnx.merge(self.graphdefs[name], params)
    remat = self.nets[name].remat
    return lambda x_t, t, cond: bidirectional_forward(model, x_t, t, cond, remat=remat).astype(jnp.float32)

  def sample_t(self, key: Array, batch: int) -> Array:
    o = self.opts
    shift = o.timestep_shift if o.dmd_timestep_shift is None else o.dmd_timestep_shift
    return schedule.sample_timestep(key, batch, shift=shift, min_step=o.min_step, max_step=o.max_step)

  def dmd_loss(self, video, mask, critic_p, teacher_p, cond, uncond, key):
    """DMD generator loss of ``video`` (differentiable) scored by the frozen teacher and the current critic."""
    k_t, k_n = jax.random.split(key)
    t = self.sample_t(k_t, video.shape[0])
    noise = jax.random.normal(k_n, video.shape, jnp.float32)
    shift8 = self.opts.score_timestep_shift
    loss, aux = losses.dmd_loss(
      x=video,
      noise=noise,
      timestep=t,
      real_score=losses.score_x0(self._flow("teacher", sg(teacher_p)), shift=shift8),
      fake_score=losses.score_x0(self._flow("critic", sg(critic_p)), shift=shift8),
      cond=cond,
      uncond=uncond,
      guidance_scale=self.opts.guidance_scale,
      shift=self.opts.timestep_shift,
      gradient_mask=None if mask is None else jnp.broadcast_to(mask, video.shape),
    )
    return loss, {"dmdtrain_gradient_norm": aux["dmdtrain_gradient_norm"], "generator_timestep": jnp.mean(t)}

  def critic_step(self, state: DMDState, video, mask, cond, key):
    """One critic AdamW step on the flow loss of the (stopped) generated ``video``."""
    k_t, k_n = jax.random.split(key)
    t = self.sample_t(k_t, video.shape[0])
    noise = jax.random.normal(k_n, video.shape, jnp.float32)

    def loss_fn(trainable):
      flow = self._flow("critic", self.critic_params(trainable, state.critic_base))
      loss, _ = losses.critic_loss(
        critic_flow=lambda x_t, tt: flow(x_t, tt, cond),
        x=sg(video),
        noise=noise,
        timestep=t,
        generator_shift=self.opts.timestep_shift,
        score_shift=self.opts.score_timestep_shift,
        gradient_mask=None if mask is None else jnp.broadcast_to(mask, video.shape),
      )
      return loss

    loss, grads = jax.value_and_grad(loss_fn)(state.critic)
    critic, opt, _ = apply(
      self.critic_tx, grads, state.critic_opt, state.critic, step=state.step, schedule=self.run.optim
    )  # the generator's schedule shape (warmup, decay) at the critic's own lr
    metrics = {"critic_loss": loss, "critic_grad_norm": optax.tree.norm(grads), "critic_timestep": jnp.mean(t)}
    return state.replace(critic=critic, critic_opt=opt), metrics

  def generator_step(self, state: DMDState, loss_fn: Callable):
    """One generator AdamW step (+ EMA) on ``loss_fn(generator_params) -> (loss, (aux_metrics, extra))``."""

    def fn(trainable):
      return loss_fn(self.generator_params(trainable, state.generator_base))

    (loss, (metrics, extra)), grads = jax.value_and_grad(fn, has_aux=True)(state.generator)
    gen, opt, ema = apply(
      self.gen_tx,
      grads,
      state.generator_opt,
      state.generator,
      ema=state.ema,
      step=state.step,
      decay=self.run.ema_decay,
      start_step=self.run.ema_start_step,
      schedule=self.run.optim,
    )
    metrics = {"generator_loss": loss, "generator_grad_norm": optax.tree.norm(grads), **metrics}
    return state.replace(generator=gen, generator_opt=opt, ema=ema), metrics, extra

  def train_step(self, state: DMDState, *, uncond: Array, sample: Callable) -> tuple[DMDState, dict]:
    """One DMD step in upstream's order (one compiled program for both kinds of step).

    Every ``dfake_gen_update_ratio``-th step (a ``lax.cond``) a generator step (+ EMA) on the DMD loss of
    a sample drawn with gradient, then on every step a critic step on a fresh sample of the (just updated)
    generator without gradient. ``sample(params, stream, key) -> (video, mask, cond, stream, metrics)`` is
    the stage's generation from the carried ``state.stream`` (None for Stage 1); ``metrics["exit_step"]``
    is reported as ``exit_step_generator`` / ``exit_step_critic``, its other metrics (the critic
    sample's) as they are. Generator metrics are 0 on steps without a generator update.
    """
    key = jax.random.wrap_key_data(state.key)
    k_next, k_gen, k_gen_loss, k_crit, k_crit_loss = jax.random.split(key, 5)

    def gen_branch(st):
      def loss_fn(params):
        video, mask, cond, stream, m = sample(params, st.stream, k_gen)
        critic_p = self.critic_params(st.critic, st.critic_base)
        loss, lm = self.dmd_loss(video, mask, critic_p, st.teacher, cond, uncond, k_gen_loss)
        return loss, ({**lm, "exit_step_generator": jnp.asarray(m["exit_step"], jnp.float32)}, stream)

      st, m, stream = self.generator_step(st, loss_fn)
      return st.replace(stream=stream), m

    def skip(st):
      return st, zero_generator_metrics()

    is_gen = state.step % self.opts.dfake_gen_update_ratio == 0
    state, gen_metrics = jax.lax.cond(is_gen, gen_branch, skip, state)
    gen_p = sg(self.generator_params(state.generator, state.generator_base))
    video, mask, cond, stream, m = sample(gen_p, state.stream, k_crit)
    state, critic_metrics = self.critic_step(state, video, mask, cond, k_crit_loss)
    sample_metrics = {("exit_step_critic" if k == "exit_step" else k): v for k, v in m.items()}
    metrics = {**gen_metrics, **critic_metrics, **sample_metrics, "generator_updated": is_gen}
    state = state.replace(stream=stream, step=state.step + 1, key=jax.random.key_data(k_next))
    return state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  # -------------------------------------------------------------------------------- data

  def uncond_embedding(self, encode_text: Callable | None) -> np.ndarray:
    """The negative prompt's embedding ``[text_len, text_dim]`` (encoded once, or read from ``negative_embedding``)."""
    if self._uncond_cache is None:
      if self.opts.negative_embedding is not None:
        emb = np.load(Path(self.opts.negative_embedding))
      elif encode_text is not None:
        emb = np.asarray(encode_text([self.opts.negative_prompt]))
      else:
        raise ValueError("the DMD stages need the negative prompt's embedding: pass encode_text or negative_embedding")
      emb = np.asarray(emb, np.float32).reshape(emb.shape[-2:])
      self._uncond_cache = self.check_embedding(emb[None], "negative_embedding")[0]
    return self._uncond_cache

  def check_embedding(self, emb, what: str) -> np.ndarray:
    emb = np.asarray(emb, np.float32)
    c = self.cfgs["generator"]
    if emb.ndim != 3 or emb.shape[1:] != (c.text_len, c.text_dim):
      raise ValueError(
        f"{what} has shape {emb.shape}; expected [batch, {c.text_len}, {c.text_dim}] (text_len, text_dim)"
      )
    return emb

  def embeddings(self, records, *, field: str, prompt_field: str, encode_text: Callable | None) -> np.ndarray:
    if has_field(records, field):
      return self.check_embedding(np.stack([np.asarray(x) for x in stacked(records, field)]), field)
    if encode_text is None:
      raise ValueError(f"records have no {field!r}; pass encode_text to embed {prompt_field!r}")
    return self.check_embedding(encode_text(list(stacked(records, prompt_field))), f"encode_text({prompt_field})")


def zero_generator_metrics() -> dict:
  keys = (
    "generator_loss",
    "generator_grad_norm",
    "dmdtrain_gradient_norm",
    "generator_timestep",
    "exit_step_generator",
  )
  return {k: jnp.zeros((), jnp.float32) for k in keys}
