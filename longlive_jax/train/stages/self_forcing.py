"""Stage 1: Self-Forcing DMD (LongLive ``longlive_train_init.yaml``).

Each step (one compiled program): every ``dfake_gen_update_ratio``-th step (``step % 5 == 0``, a
``lax.cond``) the generator rolls out 21 frames from a fresh KV cache with gradient through one random
exit step and takes an AdamW step on the DMD loss, then the EMA (0.99 from step 200) is updated; every
step the critic takes an AdamW step on its flow loss on a fresh no-grad rollout of the (just updated)
generator, in upstream's order. Generator metrics are 0 on steps where it does not update
(``generator_updated`` says which). Networks, losses and options: :mod:`longlive_jax.train.stages.dmd`.

YAML keys: the fields of :class:`SelfForcingOptions` (those of
:class:`~longlive_jax.train.stages.dmd.DMDOptions` plus ``num_training_frames``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax.train.stages.dmd import (
  DMDCore,
  DMDOptions,
  DMDState,
  RunSetup,
  run_setup,
  stage_options,
  zero_generator_metrics,
)

Array = jax.Array
sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options(DMDOptions):
  """``options:`` of the self-forcing stage: :class:`~longlive_jax.train.stages.dmd.DMDOptions` and the clip length."""

  num_training_frames: int = 21  # latent frames per rollout (7 blocks of 3)


class SelfForcingStage:
  """Stage 1 (see the module docstring). ``data = "prompts"``; batches ``{"cond", "uncond"}`` ``[B, text_len, text_dim]``."""

  name = "self-forcing"
  data = "prompts"

  def __init__(self, opts: Options, run: RunSetup):
    if opts.num_training_frames % opts.num_frame_per_block:
      raise ValueError(
        f"num_training_frames {opts.num_training_frames} is not a multiple of num_frame_per_block "
        f"{opts.num_frame_per_block}"
      )
    self.opts = opts
    self.core = DMDCore(opts, run)
    self.num_blocks = opts.num_training_frames // opts.num_frame_per_block

  def init(self, key: Array, *, mesh=None) -> DMDState:
    return self.core.init_state(key, mesh=mesh)

  def step(self, state: DMDState, batch: Mapping[str, Array]) -> tuple[DMDState, dict]:
    core = self.core
    cond, uncond = jnp.asarray(batch["cond"]), jnp.asarray(batch["uncond"])
    key = jax.random.wrap_key_data(state.key)
    k_next, k_gen, k_gen_loss, k_crit, k_crit_loss = jax.random.split(key, 5)

    def gen_branch(st):
      def loss_fn(params):
        video, _, e = core.generate(params, k_gen, cond, num_blocks=self.num_blocks)
        critic_p = core.critic_params(st.critic, st.critic_base)
        loss, m = core.dmd_loss(video, None, critic_p, st.teacher, cond, uncond, k_gen_loss)
        return loss, ({**m, "exit_step_generator": e.astype(jnp.float32)}, None)

      st, m, _ = core.generator_step(st, loss_fn)
      return st, m

    def skip(st):
      return st, zero_generator_metrics()

    is_gen = state.step % self.opts.dfake_gen_update_ratio == 0
    state, gen_metrics = jax.lax.cond(is_gen, gen_branch, skip, state)
    gen_p = sg(core.generator_params(state.generator, state.generator_base))
    video, _, e = core.generate(gen_p, k_crit, cond, num_blocks=self.num_blocks)
    state, critic_metrics = core.critic_step(state, sg(video), None, cond, k_crit_loss)
    metrics = {
      **gen_metrics,
      **critic_metrics,
      "exit_step_critic": e.astype(jnp.float32),
      "generator_updated": is_gen.astype(jnp.float32),
    }
    state = state.replace(step=state.step + 1, key=jax.random.key_data(k_next))
    return state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  def make_batch(self, records, *, encode_text: Callable | None = None) -> dict:
    """``{"cond", "uncond"}`` float32 ``[B, text_len, text_dim]`` from prompt records (``text_embedding`` or ``prompt``)."""
    cond = self.core.embeddings(records, field="text_embedding", prompt_field="prompt", encode_text=encode_text)
    uncond = np.broadcast_to(self.core.uncond_embedding(encode_text), cond.shape)
    return {"cond": cond, "uncond": np.ascontiguousarray(uncond)}

  def export(self, state: DMDState) -> dict:
    return self.core.export(state)


def make_stage(cfg) -> SelfForcingStage:
  """The self-forcing stage of a :class:`~longlive_jax.train.config.TrainConfig` (registry entry)."""
  opts = stage_options(Options, cfg)
  return SelfForcingStage(opts, run_setup(cfg, opts))
