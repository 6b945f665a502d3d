"""LoRA on our parameter layout: merge an adapter tree into the block kernels (pure, jit-able, differentiable).

An adapter tree mirrors the block parameters: ``{"self_attn": {"q": {"a": [L, in, r],
"b": [L, r, out]}}, ...}``. ``merge`` returns new parameters with
``kernel + scale * a @ b`` per layer; used once for export, or inside a jitted
loss so gradients reach ``a``/``b`` while the base stays frozen.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp


def merge(params: Mapping, adapter: Mapping, *, scale: float) -> dict:
  """``params`` (nested, with ``params["blocks"]``) with every adapted kernel updated."""

  def walk(p: Mapping, a: Mapping, path: str) -> dict:
    out = dict(p)
    for k, sub in a.items():
      if k not in p:
        raise KeyError(f"LoRA adapter path {path}{k} is not a parameter of the model")
      if isinstance(sub, Mapping) and "a" in sub and "b" in sub:
        kernel = p[k]["kernel"]
        delta = jnp.einsum("lir,lro->lio", sub["a"], sub["b"])  # [L, in, out]
        out[k] = dict(p[k], kernel=(kernel.astype(jnp.float32) + scale * delta).astype(kernel.dtype))
      else:
        out[k] = walk(p[k], sub, f"{path}{k}.")
    return out

  return dict(params, blocks=walk(params["blocks"], adapter, "blocks."))
