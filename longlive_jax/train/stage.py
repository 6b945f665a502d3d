"""The contract between the training loop and a training stage.

A stage (teacher flow matching, ODE-regression init, Self-Forcing DMD, streaming long
tuning) is a small object with pure functions; the generic loop
(:mod:`longlive_jax.train.loop`) owns data, jit, sharding, checkpoints, metrics and the
progress bar, so every stage gets them the same way.

  * ``init(key, *, mesh) -> state``: the whole train state as ONE pytree (a
    ``flax.struct.dataclass``: trainable params, frozen params, optimiser states, EMA, step
    counter, PRNG key, and stage-specific carried state such as the streaming KV cache).
    Arrays are created directly with the shardings from :mod:`longlive_jax.sharding`.
  * ``step(state, batch) -> (state, metrics)``: pure and jit-able; the loop donates ``state``.
    ``metrics`` is a flat dict of float32 scalars.
  * ``data``: the name of the dataset the stage consumes ("video_latents", "prompts",
    "prompt_pairs", "ode_pairs") and ``make_batch(records, *, encode_text)`` turning grain
    records into the arrays ``step`` takes.
  * ``model_config``: the :class:`~longlive_jax.config.WanConfig` of the exported weights.
  * ``export(state) -> params``: inference weights (EMA if any, LoRA merged) for the
    :mod:`longlive_jax.checkpoint` format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax


class Stage(Protocol):
  name: str
  data: str

  def init(self, key: jax.Array, *, mesh: jax.sharding.Mesh | None) -> Any: ...

  def step(self, state: Any, batch: Mapping[str, jax.Array]) -> tuple[Any, dict[str, jax.Array]]: ...

  def make_batch(self, records: list[Mapping[str, Any]], *, encode_text: Callable | None) -> dict[str, Any]: ...

  def export(self, state: Any) -> dict: ...
