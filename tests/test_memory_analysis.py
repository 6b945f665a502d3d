"""Compiled memory of the streaming block step: "chunked" attention holds no whole score tensor.

The block step (4 denoising passes and the cache-writing pass, ``Streamer._block``) is lowered
for abstract inputs (``abstract_model`` / ``jax.eval_shape``: nothing is allocated, as in
``experiments/bench_stream.py --lower-only``) and compiled. ``compiled.memory_analysis()
.temp_size_in_bytes`` is XLA's scratch allocation for all intermediates (the peak of overlapping
live ranges, after buffer reuse); arguments (weights, donated cache) and outputs are counted apart.

The config is small to compile but long in tokens, so that one self-attention score tensor
``[B, H, Sq, Sk]`` (``Sq`` = the block's tokens, ``Sk`` = the window's: cache slots + the block)
outweighs every other intermediate: dim 64, 2 heads, 1 layer, a 48 x 48 latent (576 tokens per
frame), 3-frame blocks in a 12-frame window, so ``Sq = 1728`` and ``Sk = 6912``. Sizes are computed
from these shapes, never hard-coded. The full-size figures (Wan2.1 1.3B at 480x832) come from the
benchmark's lower-only mode (experiments/README.md).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import pytest

from longlive_jax.config import tiny_config
from longlive_jax.model.wan import abstract_model
from longlive_jax.stream.cache import StreamSpec
from longlive_jax.stream.driver import Streamer
from longlive_jax.stream.noise import BlockShape

pytestmark = pytest.mark.slow  # two compilations of the block step: about 15-20 s each on 2 shared cores

HEIGHT = WIDTH = 48  # latent size; patch 2 x 2 -> 24 * 24 = 576 tokens per frame
SPEC = StreamSpec(block_frames=3, sink_frames=3, window_frames=12, tokens_per_frame=(HEIGHT // 2) * (WIDTH // 2))


def _config(impl: str):
  return tiny_config(dim=64, ffn_dim=128, num_heads=2, num_layers=1, attention_impl=impl)


def _score_dims() -> tuple[int, int]:
  """``(Sq, Sk)``: the block's tokens attend to the cache slots' and their own."""
  tpf = SPEC.tokens_per_frame
  return SPEC.block_frames * tpf, (SPEC.num_slots + SPEC.block_frames) * tpf


def _score_bytes(*, num_heads: int, batch: int = 1) -> int:
  """Bytes of one float32 score tensor ``[B, H, Sq, Sk]``."""
  sq, sk = _score_dims()
  return batch * num_heads * sq * sk * 4


@functools.cache
def _compiled(impl: str):
  """The block step compiled for abstract arguments of the shapes a stream passes (batch 1, float32 draws)."""
  cfg = _config(impl)
  st = Streamer(abstract_model(cfg), SPEC)
  shape = BlockShape(batch=1, frames=SPEC.block_frames, height=HEIGHT, width=WIDTH, channels=cfg.in_dim)
  cache = jax.eval_shape(functools.partial(st.init_cache, batch=1))
  ctx = jax.ShapeDtypeStruct((1, cfg.text_len, cfg.text_dim), jnp.float32)
  ck, cv = jax.eval_shape(st._cross, st.params, ctx)  # [L, B, T, H, Dh] each
  noise = jax.ShapeDtypeStruct(shape.shape, jnp.float32)  # [B, n, H, W, C]
  renoise = jax.ShapeDtypeStruct((st.num_steps - 1, *shape.shape), jnp.float32)  # [steps - 1, B, n, H, W, C]
  return st._block.lower(st.params, cache, noise, renoise, None, ck, cv, st.timesteps, st.sigmas).compile()


def _temp_bytes(impl: str) -> int:
  stats = _compiled(impl).memory_analysis()
  assert stats is not None, f"{jax.default_backend()} reports no compiled memory analysis"
  return int(stats.temp_size_in_bytes)


def _score_sized_arrays(impl: str) -> set[str]:
  """Array types of the optimised HLO with both a query (Sq) and a key (Sk) axis: whole score tensors."""
  sq, sk = _score_dims()
  found = set()
  for ty, dims in re.findall(r"\b([a-z]+[0-9]*)\[([0-9,]+)\]", _compiled(impl).as_text()):
    shape = [int(d) for d in dims.split(",")]
    if sq in shape and sk in shape:
      found.add(f"{ty}[{dims}]")
  return found


def test_xla_block_step_temporaries_hold_a_score_tensor():
  """The reference attention materialises ``[B, H, Sq, Sk]`` float32 scores: the measure sees them."""
  score = _score_bytes(num_heads=_config("xla").num_heads)
  temp = _temp_bytes("xla")
  assert temp >= score, f"xla temporaries {temp} B < one score tensor {score} B"
  assert _score_sized_arrays("xla"), "no [.., Sq, .., Sk] array in the xla program"


def test_chunked_block_step_temporaries_stay_well_below_a_score_tensor():
  """Online softmax over chunks: the whole step's temporaries are a fraction of one score tensor."""
  score = _score_bytes(num_heads=_config("chunked").num_heads)
  temp = _temp_bytes("chunked")
  assert temp < score / 4, f"chunked temporaries {temp} B = {temp / score:.2f} score tensors ({score} B each)"
  assert temp < _temp_bytes("xla") - score, "chunked saves less than one score tensor against xla"
  assert not _score_sized_arrays("chunked"), (
    f"score-sized arrays in the chunked program: {_score_sized_arrays('chunked')}"
  )
