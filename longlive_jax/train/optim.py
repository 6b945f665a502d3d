"""Optimiser and EMA of LongLive's training (optax).

LongLive / Self-Forcing use AdamW with ``betas = (0.0, 0.999)`` (no first-moment averaging),
weight decay 0.01, gradient-norm clipping at 10, constant learning rates (stage 1: generator
2e-6, critic 4e-7; stage 2: 1e-5 / 2e-6) and an EMA of the generator (0.99 from step 200,
stage 1 only). Master weights stay float32; compute may run in bfloat16.

Beyond upstream, an optional schedule (:func:`lr_factor`): a linear warmup and a linear decay to zero
(warmup-stable-decay). It multiplies the step's update (the Adam step and the decoupled weight decay,
exactly as a scheduled learning rate would) instead of living in the optax state, so a run can gain or
change its schedule and still resume from its checkpoints.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
  lr: float = 2.0e-6
  beta1: float = 0.0
  beta2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.01
  clip_norm: float = 10.0
  warmup_steps: int = 0
  decay_start: int | None = None
  decay_steps: int = 0

  def __post_init__(self):
    if self.warmup_steps < 0:
      raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
    if (self.decay_start is None) != (self.decay_steps == 0):
      raise ValueError(
        f"decay_start and decay_steps go together (decay from step decay_start to zero over "
        f"decay_steps > 0 steps), got decay_start={self.decay_start}, decay_steps={self.decay_steps}"
      )
    if self.decay_steps < 0 or (self.decay_start is not None and self.decay_start < 0):
      raise ValueError(f"decay_start / decay_steps must be >= 0, got {self.decay_start}, {self.decay_steps}")

  @property
  def scheduled(self) -> bool:
    return self.warmup_steps > 0 or self.decay_start is not None


def lr_factor(cfg: OptimConfig, step: jax.Array) -> jax.Array:
  """float32 ``[]`` multiplier of ``cfg.lr`` at ``step`` (the step being taken, from 0): ``(step + 1) /
  warmup_steps`` during the warmup, 1, then ``1 - (step - decay_start) / decay_steps`` from ``decay_start``,
  and 0 after ``decay_start + decay_steps``."""
  s = jnp.asarray(step, jnp.float32)
  f = jnp.float32(1.0)
  if cfg.warmup_steps:
    f = jnp.minimum(f, (s + 1.0) / cfg.warmup_steps)
  if cfg.decay_start is not None:
    f = jnp.minimum(f, jnp.clip(1.0 - (s - cfg.decay_start) / cfg.decay_steps, 0.0, 1.0))
  return f


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  """``clip_by_global_norm(clip) -> adamw(lr, betas, eps, wd)`` as upstream's clip-then-step."""
  return optax.chain(
    optax.clip_by_global_norm(cfg.clip_norm),
    optax.adamw(cfg.lr, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, weight_decay=cfg.weight_decay),
  )


def ema_update(ema, params, *, step: jax.Array, decay: float, start_step: int):
  """EMA of ``params`` (float32). Before ``start_step`` the EMA tracks the weights exactly (upstream: created at
  ``start_step``); after, ``ema = decay * ema + (1 - decay) * params``."""
  d = jnp.where(step >= start_step, decay, 0.0).astype(jnp.float32)
  return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p.astype(jnp.float32)).astype(e.dtype), ema, params)


def apply(
  tx: optax.GradientTransformation,
  grads,
  opt_state,
  params,
  *,
  ema=None,
  step=None,
  decay=0.99,
  start_step=0,
  schedule: OptimConfig | None = None,
):
  """One optimiser step, then the EMA (if ``ema`` is not None): ``(params, opt_state, ema)``. With a
  ``schedule`` (the stage's optim config, when it has one), the update is scaled by :func:`lr_factor` at ``step``."""
  updates, opt_state = tx.update(grads, opt_state, params)
  if schedule is not None and schedule.scheduled:
    f = lr_factor(schedule, step)
    updates = jax.tree.map(lambda u: (u * f).astype(u.dtype), updates)
  params = optax.apply_updates(params, updates)
  if ema is not None:
    ema = ema_update(ema, params, step=step, decay=decay, start_step=start_step)
  return params, opt_state, ema
