"""Optimiser and EMA of LongLive's training (optax).

LongLive / Self-Forcing use AdamW with ``betas = (0.0, 0.999)`` (no first-moment averaging),
weight decay 0.01, gradient-norm clipping at 10, constant learning rates (stage 1: generator
2e-6, critic 4e-7; stage 2: 1e-5 / 2e-6) and an EMA of the generator (0.99 from step 200,
stage 1 only). Master weights stay float32; compute may run in bfloat16.
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


def apply(tx: optax.GradientTransformation, grads, opt_state, params, *, ema=None, step=None, decay=0.99, start_step=0):
  """One optimiser step, then the EMA (if ``ema`` is not None): ``(params, opt_state, ema)``."""
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  if ema is not None:
    ema = ema_update(ema, params, step=step, decay=decay, start_step=start_step)
  return params, opt_state, ema
