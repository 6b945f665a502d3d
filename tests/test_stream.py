"""Streaming engine properties beyond the golden cases (which pin upstream semantics)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax.config import tiny_config
from longlive_jax.model.wan import init_model
from longlive_jax.stream.cache import StreamSpec
from longlive_jax.stream.driver import Streamer

H, W = 4, 6


def _setup(window=9, sink=3, relative=False, seed=0):
  cfg = tiny_config()
  model = init_model(cfg, seed=seed)
  spec = StreamSpec(
    block_frames=3, sink_frames=sink, window_frames=window, tokens_per_frame=(H // 2) * (W // 2), relative_rope=relative
  )
  return cfg, Streamer(model, spec)


def _draws(cfg, nb, seed=1):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  noise = jax.random.normal(k1, (1, 3 * nb, H, W, cfg.in_dim))
  renoise = jax.random.normal(k2, (nb, 3, 1, 3, H, W, cfg.in_dim))
  ctx = jax.random.normal(k3, (1, cfg.text_len, cfg.text_dim))
  return noise, renoise, ctx


@pytest.mark.parametrize("relative", [False, True])
def test_scan_equals_python_loop(relative):
  cfg, st = _setup(relative=relative)
  nb = 6
  noise, renoise, ctx = _draws(cfg, nb)
  loop = np.concatenate([np.asarray(x0) for _, x0, _ in st.stream(noise, renoise, [ctx])], axis=1)
  cross = st.encode(ctx)
  blocks = noise.reshape(1, nb, 3, H, W, cfg.in_dim).transpose(1, 0, 2, 3, 4, 5)
  out, _ = st.generate_scan(st.init_cache(batch=1), blocks, renoise, cross)
  scan = np.asarray(out).transpose(1, 0, 2, 3, 4, 5).reshape(loop.shape)
  np.testing.assert_allclose(scan, loop, atol=1e-5)


def test_one_compilation_for_the_whole_video_and_constant_cache():
  cfg, st = _setup()
  nb = 8
  noise, renoise, ctx = _draws(cfg, nb)
  cache = st.init_cache(batch=1)
  nbytes = cache.nbytes
  cross = st.encode(ctx)
  for b in range(nb):
    _, cache, _ = st.block(cache, noise[:, 3 * b : 3 * b + 3], renoise[b], cross)
    assert cache.nbytes == nbytes
  assert st._block._cache_size() == 1
  assert int(cache.next_frame) == 3 * nb


def test_appending_blocks_never_changes_earlier_ones():
  cfg, st = _setup()
  noise, renoise, ctx = _draws(cfg, 6)
  short = np.concatenate([np.asarray(x) for _, x, _ in st.stream(noise[:, :9], renoise[:3], [ctx])], axis=1)
  long = np.concatenate([np.asarray(x) for _, x, _ in st.stream(noise, renoise, [ctx])], axis=1)
  np.testing.assert_array_equal(long[:, :9], short)


def test_window_covering_the_video_equals_block_causal_full_forward():
  """With a window larger than the video, streaming (cache of t=0 passes) equals one forward per block over the
  whole prefix where earlier blocks are clean and only the current block is noisy, i.e. block-causal attention."""
  cfg, st = _setup(window=30, sink=3)
  nb = 3
  noise, renoise, ctx = _draws(cfg, nb)
  run = list(st.stream(noise, renoise, [ctx]))
  outs = [np.asarray(x) for _, x, _ in run]
  model = init_model(cfg, seed=0)
  ck, cv = model.cross_kv(ctx)
  # Reference for the last block's first denoising step: run blocks sequentially without any cache, feeding the
  # previous blocks' clean K/V concatenated by hand (block-causal: block i sees blocks < i at t=0 and itself).
  ks, vs = [], []
  for b in range(nb):
    clean = jnp.asarray(outs[b])
    extra = None
    if ks:
      k, v = jnp.concatenate(ks, axis=2), jnp.concatenate(vs, axis=2)
      extra = (k, v, jnp.ones((1, k.shape[2]), bool))
    pos = jnp.arange(3 * b, 3 * b + 3, dtype=jnp.int32)
    if b == nb - 1:
      flow, _, _ = model.forward_tokens(
        noise[:, 3 * b : 3 * b + 3], jnp.full((1, 3), 1000.0), cross_k=ck, cross_v=cv, frame_pos=pos, extra_kv=extra
      )
      x0_ref = noise[:, 3 * b : 3 * b + 3] - 1.0 * flow
    _, k, v = model.forward_tokens(clean, jnp.zeros((1, 3)), cross_k=ck, cross_v=cv, frame_pos=pos, extra_kv=extra)
    ks.append(k)
    vs.append(v)
  got = run[-1][2]["x0_steps"][0]
  np.testing.assert_allclose(np.asarray(got), np.asarray(x0_ref), atol=2e-5)


def test_bad_stream_inputs():
  with pytest.raises(ValueError, match="window_frames"):
    StreamSpec(block_frames=3, sink_frames=3, window_frames=6)
  cfg, st = _setup()
  noise, renoise, ctx = _draws(cfg, 2)
  with pytest.raises(ValueError, match="multiple of the block size"):
    list(st.stream(noise[:, :5], renoise, [ctx]))
