"""Prompts -> text context for the DiT, as Self-Forcing / LongLive's ``WanTextEncoder.forward`` does it.

``WanTextEncoder`` tokenizes (``text_len`` 512, ``</s>`` appended, padding id 0), runs the umT5
encoder with the attention mask, and zeroes the rows at and beyond each prompt's length
(``u[seq_len:] = 0.0``). The DiT then attends to all ``text_len`` rows without a mask, so those
zero rows are part of the model input and must be exactly zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longlive_jax.text.config import UMT5Config
from longlive_jax.text.model import UMT5Encoder, model_from_params
from longlive_jax.text.tokenizer import UMT5Tokenizer


def zero_padding_rows(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """``hidden [B, L, D]`` with rows ``>= seq_len`` set to 0, ``seq_len = (mask > 0).sum(1)`` (upstream's rule)."""
  seq_lens = jnp.sum(jnp.asarray(mask) > 0, axis=1)  # [B]
  keep = jnp.arange(hidden.shape[1])[None, :] < seq_lens[:, None]  # [B, L]
  return jnp.where(keep[:, :, None], hidden, 0.0)


@jax.jit(static_argnums=0)
def _encode_jit(graphdef, state, ids, mask):
  """One compiled program per (model structure, batch shape); the model is a pytree argument."""
  model = nnx.merge(graphdef, state)
  return zero_padding_rows(model(ids, mask), mask)


def encode_ids(model: UMT5Encoder, ids, mask) -> jax.Array:
  """Token ``ids``/``mask [N, L]`` -> float32 context ``[N, L, dim]`` with padding rows zeroed (jitted)."""
  ids = np.asarray(ids)
  if ids.size and (ids.min() < 0 or ids.max() >= model.cfg.vocab):
    raise ValueError(
      f"token ids span [{ids.min()}, {ids.max()}], outside the encoder's vocabulary of {model.cfg.vocab}"
    )
  graphdef, state = nnx.split(model)
  return _encode_jit(graphdef, state, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))


def encode_prompts(
  model_or_params: UMT5Encoder | Mapping,
  tokenizer: UMT5Tokenizer | str | Path,
  prompts: str | Sequence[str],
  *,
  text_len: int = 512,
  config: UMT5Config | None = None,
) -> np.ndarray:
  """Encodes prompts into the DiT's text context ``[N, text_len, dim]`` (float32, zero rows past each prompt).

  Args:
    model_or_params: an :class:`UMT5Encoder`, or its parameter dict together with ``config``.
    tokenizer: an :class:`UMT5Tokenizer`, or the folder holding its files (the tokenizer folder, or the
      Wan model folder containing ``google/umt5-xxl/``); missing files raise an error naming the folder.
    prompts: one prompt or a list.
    text_len: token rows per prompt (Wan: 512).
    config: required when ``model_or_params`` is a parameter dict.
  """
  if isinstance(model_or_params, UMT5Encoder):
    model = model_or_params
  else:
    if config is None:
      raise ValueError("encode_prompts: pass config= together with a parameter dict")
    model = model_from_params(config, model_or_params)
  if not isinstance(tokenizer, UMT5Tokenizer):
    tokenizer = UMT5Tokenizer.from_folder(tokenizer)
  ids, mask = tokenizer(prompts, text_len=text_len)
  return np.asarray(encode_ids(model, ids, mask))
