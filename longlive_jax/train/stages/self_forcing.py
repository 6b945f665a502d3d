"""Stage 1: Self-Forcing DMD (LongLive ``longlive_train_init.yaml``).

Each step (one compiled program): every ``dfake_gen_update_ratio``-th step (``step % 5 == 0``, a
``lax.cond``) the generator rolls out 21 frames from a fresh KV cache with gradient through one random
exit step and takes an AdamW step on the DMD loss, then the EMA (0.99 from step 200) is updated; every
step the critic takes an AdamW step on its flow loss on a fresh no-grad rollout of the (just updated)
generator, in upstream's order (:meth:`~longlive_jax.train.stages.dmd.DMDCore.train_step`). Generator
metrics are 0 on steps where it does not update (``generator_updated`` says which). Networks, losses and
options: :mod:`longlive_jax.train.stages.dmd`.

YAML keys: the fields of :class:`Options` (those of
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
)

Array = jax.Array


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
    self.model_config = self.core.cfgs["generator"]  # exported with the generator's weights
    self.num_blocks = opts.num_training_frames // opts.num_frame_per_block

  def init(self, key: Array, *, mesh=None) -> DMDState:
    return self.core.init_state(key, mesh=mesh)

  def step(self, state: DMDState, batch: Mapping[str, Array]) -> tuple[DMDState, dict]:
    cond = jnp.asarray(batch["cond"])

    def sample(params, stream, key):  # a fresh rollout; no stream is carried
      video, _, e = self.core.generate(params, key, cond, num_blocks=self.num_blocks)
      return video, None, cond, stream, {"exit_step": e}

    return self.core.train_step(state, uncond=jnp.asarray(batch["uncond"]), sample=sample)

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
