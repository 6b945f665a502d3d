"""Streaming engine properties beyond the golden cases (which pin upstream semantics)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax.config import tiny_config
from longlive_jax.model.wan import block_causal_mask, init_model
from longlive_jax.schedule import sigma_at
from longlive_jax.stream import engine
from longlive_jax.stream.cache import StreamSpec
from longlive_jax.stream.cache import view as cache_view
from longlive_jax.stream.driver import SWITCH_MODES, Streamer, Switch
from longlive_jax.stream.noise import BlockShape, GivenNoise, KeyNoise

H, W = 4, 6


def _model(cfg, seed):
  """``init_model``, with random (not zero) learned positions when ``cfg.pos_grid`` / ``cfg.pos_frames`` are set,
  so they matter."""
  model = init_model(cfg, seed=seed)
  k1, k2, k3 = jax.random.split(jax.random.key(seed + 100), 3)
  if any(cfg.pos_grid):
    model.pos_embedding[...] = jax.random.normal(k1, model.pos_embedding.shape)
    model.first_frame_embedding[...] = jax.random.normal(k2, model.first_frame_embedding.shape)
  if cfg.pos_frames:
    model.frame_embedding[...] = jax.random.normal(k3, model.frame_embedding.shape)
  return model


def _setup(window=9, sink=3, relative=False, seed=0, patch=2, h=H, w=W, pos=False, horizon=0):
  cfg = tiny_config(
    patch_size=(1, patch, patch),
    pos_grid=(h // patch, w // patch) if pos else (0, 0),
    pos_frames=5 if pos else 0,  # frames 0-4 get a learned row, later ones none: both kinds in a 9-frame test
  )
  model = _model(cfg, seed)
  spec = StreamSpec(
    block_frames=3,
    sink_frames=sink,
    window_frames=window,
    tokens_per_frame=(h // patch) * (w // patch),
    relative_rope=relative or bool(horizon),
    rope_horizon=horizon,
  )
  return cfg, Streamer(model, spec)


def _draws(cfg, nb, seed=1, h=H, w=W):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  noise = jax.random.normal(k1, (1, 3 * nb, h, w, cfg.in_dim))
  renoise = jax.random.normal(k2, (nb, 3, 1, 3, h, w, cfg.in_dim))
  ctx = jax.random.normal(k3, (1, cfg.text_len, cfg.text_dim))
  return noise, renoise, ctx


@pytest.mark.parametrize("relative, horizon", [(False, 0), (True, 0), (True, 9)])
def test_scan_equals_python_loop(relative, horizon):
  cfg, st = _setup(relative=relative, horizon=horizon)
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


@pytest.mark.parametrize(
  "patch, h, w, pos", [(2, H, W, False), (4, 8, 8, False), (4, 8, 8, True)]
)  # Wan2.1's 2x2 patch; the toy world's 4x4, also with learned absolute positions (pos_grid, pos_frames)
def test_streaming_equals_one_block_causal_full_forward(patch, h, w, pos):
  """With a window covering the video, every denoising step of the last block equals ONE forward of the model over
  the whole sequence (earlier blocks clean at t=0, the last block noisy at t_k) under the block-causal mask, and the
  final cache holds exactly the keys/values of the block-causal forward over the clean video."""
  cfg, st = _setup(window=30, sink=3, patch=patch, h=h, w=w, pos=pos)
  nb = 3
  noise, renoise, ctx = _draws(cfg, nb, h=h, w=w)
  sess = st.session(GivenNoise(noise, renoise, block_frames=3), ctx, batch=1)
  run = [sess.next_block() for _ in range(nb)]
  clean = jnp.concatenate([x0 for _, x0, _ in run], axis=1)  # [1, 9, h, w, C]
  model = _model(cfg, seed=0)
  ck, cv = model.cross_kv(ctx)
  tpf = (h // patch) * (w // patch)
  mask = block_causal_mask(num_frames=3 * nb, block_frames=3, tokens_per_frame=tpf)[None]  # [1, S, S]
  pos = jnp.arange(3 * nb, dtype=jnp.int32)
  steps = np.asarray(run[-1][2]["x0_steps"])  # [4, 1, 3, H, W, C]
  x_t = noise[:, 6:9]
  for k, (t, sig) in enumerate(zip(np.asarray(st.timesteps), np.asarray(st.sigmas), strict=True)):
    x_full = jnp.concatenate([clean[:, :6], x_t], axis=1)
    t_full = jnp.asarray([[0.0] * 6 + [float(t)] * 3])
    flow, _, _ = model.forward_tokens(x_full, t_full, cross_k=ck, cross_v=cv, frame_pos=pos, key_mask=mask)
    x0_ref = x_t - sig * flow[:, 6:9]
    np.testing.assert_allclose(steps[k], np.asarray(x0_ref), atol=2e-5, err_msg=f"step {k}")
    if k + 1 < len(steps):
      s_next = float(st.sigmas[k + 1])
      x_t = (1.0 - s_next) * jnp.asarray(steps[k]) + s_next * renoise[2, k]
  _, k_ref, v_ref = model.forward_tokens(clean, jnp.zeros((1, 9)), cross_k=ck, cross_v=cv, frame_pos=pos, key_mask=mask)
  # frame f sits in slot f here (sink 0..2, ring slot 3 + (f - 3) % 24), so the first 9 slots are the video in order.
  np.testing.assert_allclose(np.asarray(sess.cache.k[:, :, : 9 * tpf]), np.asarray(k_ref), atol=2e-5)
  np.testing.assert_allclose(np.asarray(sess.cache.v[:, :, : 9 * tpf]), np.asarray(v_ref), atol=2e-5)


def test_a_spec_that_does_not_fit_the_block_is_refused():
  """StreamSpec's default tokens_per_frame (1560, 480x832) on a small block used to write nothing into the cache, so
  every block was generated without memory; the engine now refuses the mismatch, naming both counts."""
  cfg = tiny_config(patch_size=(1, 4, 4))
  st = Streamer(init_model(cfg, seed=0), StreamSpec(block_frames=3, sink_frames=3, window_frames=9))
  noise, renoise, ctx = _draws(cfg, 1, h=8, w=8)
  with pytest.raises(ValueError, match=r"4 tokens per frame \(patch 4x4\) but the StreamSpec says 1560"):
    next(st.stream(noise, renoise, [ctx]))


def test_block_causal_mask_hides_the_future():
  """Changing a later block's input never changes an earlier block's output under the block-causal mask."""
  cfg = tiny_config()
  model = init_model(cfg, seed=0)
  noise, _, ctx = _draws(cfg, 2)
  ck, cv = model.cross_kv(ctx)
  mask = block_causal_mask(num_frames=6, block_frames=3, tokens_per_frame=6)[None]
  pos = jnp.arange(6, dtype=jnp.int32)
  t = jnp.full((1, 6), 500.0)
  a, _, _ = model.forward_tokens(noise, t, cross_k=ck, cross_v=cv, frame_pos=pos, key_mask=mask)
  b, _, _ = model.forward_tokens(noise.at[:, 3:].add(1.0), t, cross_k=ck, cross_v=cv, frame_pos=pos, key_mask=mask)
  np.testing.assert_array_equal(np.asarray(a[:, :3]), np.asarray(b[:, :3]))
  assert np.max(np.abs(np.asarray(a[:, 3:] - b[:, 3:]))) > 1e-3


def test_key_noise_stream_equals_keyed_scan_and_is_reproducible():
  cfg, st = _setup()
  nb = 5
  _, _, ctx = _draws(cfg, nb)
  shape = BlockShape(batch=1, frames=3, height=H, width=W, channels=cfg.in_dim)
  key = jax.random.key(7)
  loop = [
    np.asarray(x) for _, x, _ in st.stream(KeyNoise(key, shape=shape, num_steps=4), contexts=[ctx], num_blocks=nb)
  ]
  again = [
    np.asarray(x) for _, x, _ in st.stream(KeyNoise(key, shape=shape, num_steps=4), contexts=[ctx], num_blocks=2)
  ]
  out, _ = st.generate_keyed(st.init_cache(batch=1), key, st.encode(ctx), num_blocks=nb, shape=shape)
  np.testing.assert_allclose(np.asarray(out), np.stack(loop), atol=1e-5)
  np.testing.assert_array_equal(np.stack(again), np.stack(loop[:2]))
  other = [
    np.asarray(x)
    for _, x, _ in st.stream(KeyNoise(jax.random.key(8), shape=shape, num_steps=4), contexts=[ctx], num_blocks=1)
  ]
  assert np.max(np.abs(other[0] - loop[0])) > 1e-2


def test_switch_modes():
  """recache rewrites the window under the new prompt; keep leaves the cache; clear empties it (positions go on)."""
  cfg = tiny_config()
  model = init_model(cfg, seed=0)
  noise, renoise, ctx = _draws(cfg, 4)
  ctx2 = ctx[:, ::-1] * 0.5
  spec = StreamSpec(block_frames=3, sink_frames=3, window_frames=9, tokens_per_frame=(H // 2) * (W // 2))
  outs = {}
  for mode in SWITCH_MODES:
    st = Streamer(model, spec, switch_mode=mode)
    sess = st.session(GivenNoise(noise, renoise, block_frames=3), ctx, batch=1)
    for _ in range(3):
      sess.next_block()
    sess.switch(ctx2)
    outs[mode] = np.asarray(sess.next_block()[1])
  # the three modes give three different continuations
  assert np.max(np.abs(outs["keep"] - outs["recache"])) > 1e-4
  assert np.max(np.abs(outs["clear"] - outs["keep"])) > 1e-4
  # clear == a fresh stream that starts at frame 9 with the new prompt
  st = Streamer(model, spec)
  fresh = st.init_cache(batch=1).replace(next_frame=jnp.asarray(9, jnp.int32))
  x0, _, _ = st.block(fresh, noise[:, 9:12], renoise[3], st.encode(ctx2))
  np.testing.assert_allclose(outs["clear"], np.asarray(x0), atol=1e-6)


@pytest.mark.parametrize("global_sink", [True, False])
def test_recache_past_the_window_is_one_program_and_equals_the_static_one(global_sink):
  """Past the window a switch's frame is traced: the same values as the per-frame (static) program, and switches
  at frames 12 and 18 share one executable (the studio switches wherever the user presses Enter)."""
  cfg = tiny_config()
  model = init_model(cfg, seed=0)
  noise, renoise, ctx = _draws(cfg, 6)
  spec = StreamSpec(block_frames=3, sink_frames=3, window_frames=9, tokens_per_frame=(H // 2) * (W // 2))
  st = Streamer(model, spec, global_sink=global_sink)
  cache = st.init_cache(batch=1)
  cross = st.encode(ctx)
  lat = []
  for b in range(6):
    x0, cache, _ = st.block(cache, noise[:, 3 * b : 3 * b + 3], renoise[b], cross)
    lat.append(x0)
  lat = jnp.concatenate(lat, axis=1)  # [1, 18, H, W, C]
  cross2 = st.encode(ctx[:, ::-1] * 0.5)
  before = st._recache_past_window._cache_size()
  for s in (12, 18):
    got = st.recache(jax.tree.map(jnp.copy, cache), lat[:, s - 9 : s], cross2, switch_frame=s)
    want = engine.recache(
      model, cache, lat[:, s - 9 : s], cross=cross2, spec=spec, switch_frame=s, global_sink=global_sink
    )
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert st._recache_past_window._cache_size() == before + 1


def test_context_noise_commits_the_noised_block():
  """renoise_context commits add_noise(x0, eps, context_t) with the nearest-grid sigma (0.00498 at t=0)."""
  cfg = tiny_config()
  model = init_model(cfg, seed=0)
  noise, _, ctx = _draws(cfg, 1)
  spec = StreamSpec(block_frames=3, sink_frames=3, window_frames=9, tokens_per_frame=(H // 2) * (W // 2))
  st = Streamer(model, spec)
  cross = model.cross_kv(ctx)
  cache = st.init_cache(batch=1)
  x0 = noise[:, :3]
  eps = jax.random.normal(jax.random.key(3), x0.shape)
  sig = float(sigma_at(0.0, shift=5.0)[0])
  assert abs(sig - 0.00498) < 1e-5
  got = engine.commit(model, cache, x0, cross=cross, spec=spec, context_t=0.0, context_eps=eps)
  want = engine.commit(model, cache, (1 - sig) * x0 + sig * eps, cross=cross, spec=spec, context_t=0.0)
  clean = engine.commit(model, cache, x0, cross=cross, spec=spec, context_t=0.0)
  np.testing.assert_allclose(np.asarray(got.k), np.asarray(want.k), atol=1e-6)
  assert np.max(np.abs(np.asarray(got.k) - np.asarray(clean.k))) > 1e-5
  with pytest.raises(ValueError, match="renoise_context needs a context noise draw"):
    Streamer(model, spec, renoise_context=True).block(cache, x0, noise[None, :, :3], cross)


def test_absolute_rope_length_guard_and_relative_mode_beyond_it():
  cfg = dataclasses.replace(tiny_config(), rope_max_len=9)
  model = init_model(cfg, seed=0)
  noise, renoise, ctx = _draws(cfg, 4)
  spec = StreamSpec(block_frames=3, sink_frames=3, window_frames=9, tokens_per_frame=(H // 2) * (W // 2))
  st = Streamer(model, spec)
  with pytest.raises(ValueError, match="rope_max_len"):
    list(st.stream(noise, renoise, [ctx]))
  rel = Streamer(model, dataclasses.replace(spec, relative_rope=True))
  out = [np.asarray(x) for _, x, _ in rel.stream(noise, renoise, [ctx])]
  assert len(out) == 4 and np.all(np.isfinite(out[-1]))


def _x0s(st, noise, renoise, contexts, switches=()):
  return np.concatenate([np.asarray(x) for _, x, _ in st.stream(noise, renoise, contexts, switches)], axis=1)


def test_rope_horizon_keeps_absolute_positions_up_to_it_and_then_freezes_the_geometry(monkeypatch):
  """Up to the horizon a stream is the absolute-RoPE one (learned frame positions included); past it only the
  sink stays where it was: the sink's keys sit at their own positions, every later frame ``next - P`` earlier."""
  cfg, st_abs = _setup(pos=True)
  noise, renoise, ctx = _draws(cfg, 8)
  absolute = _x0s(st_abs, noise, renoise, [ctx])
  _, st_far = _setup(pos=True, horizon=1000)
  np.testing.assert_allclose(_x0s(st_far, noise, renoise, [ctx]), absolute, atol=1e-5)
  _, st_h = _setup(pos=True, horizon=12)
  near = _x0s(st_h, noise, renoise, [ctx])
  np.testing.assert_allclose(near[:, :15], absolute[:, :15], atol=1e-5)  # blocks starting at frames 0..12
  assert np.max(np.abs(near[:, 15:] - absolute[:, 15:])) > 1e-3  # past it the sink is nearer
  # the positions a call at frame 21 sees: sink 0-2 as they were, ring frames 15-20 -> 15-9 .. 20-9
  cache = st_h.init_cache(batch=1)
  spec = st_h.spec
  cache = cache.replace(
    frame=jnp.asarray([0, 1, 2, 18, 19, 20], jnp.int32)[: spec.num_slots], next_frame=jnp.asarray(21, jnp.int32)
  )
  *_, pos, _ = cache_view(cache, spec)
  np.testing.assert_array_equal(np.asarray(pos), [0, 1, 2, 9, 10, 11])
  assert int(engine._query_pos(cache, spec, 3, jnp.asarray(6))[0]) == 12
  # a recache at S = 21 rewrites frames 15-20 (the sink kept) at the positions the next block will see them at
  seen = []
  call = engine.call

  def spy(*args, frame_pos=None, **kw):
    seen.append(np.asarray(frame_pos))
    return call(*args, frame_pos=frame_pos, **kw)

  monkeypatch.setattr(engine, "call", spy)
  lat = jnp.asarray(noise[:, 12:21])
  engine.recache(_model(cfg, seed=0), cache, lat, cross=st_h.encode(ctx), spec=spec, switch_frame=21)
  np.testing.assert_array_equal(seen[-1], [6, 7, 8, 9, 10, 11])


@pytest.mark.parametrize("switch", [None, 15])
def test_rope_horizon_without_a_sink_is_a_uniform_shift(switch):
  """With no sink every cached frame and the block move back together, and RoPE only sees differences: a model
  without learned positions streams exactly as with absolute RoPE, prompt switches and their recache included
  (which checks that cache, block and recache positions agree)."""
  cfg, st_abs = _setup(sink=0, window=6)
  _, st_h = _setup(sink=0, window=6, horizon=6)
  noise, renoise, ctx = _draws(cfg, 8)
  ctx2 = ctx[:, ::-1]
  args = ([ctx], ()) if switch is None else ([ctx, ctx2], [Switch(switch, 1)])
  np.testing.assert_allclose(_x0s(st_h, noise, renoise, *args), _x0s(st_abs, noise, renoise, *args), atol=2e-5)


def test_bad_stream_inputs():
  with pytest.raises(ValueError, match="window_frames"):
    StreamSpec(block_frames=3, sink_frames=3, window_frames=6)
  with pytest.raises(ValueError, match="rope_horizon 12 needs relative_rope"):
    StreamSpec(block_frames=3, sink_frames=3, window_frames=9, rope_horizon=12)
  with pytest.raises(ValueError, match="at least window_frames"):
    StreamSpec(block_frames=3, sink_frames=3, window_frames=9, relative_rope=True, rope_horizon=6)
  cfg, st = _setup()
  noise, renoise, ctx = _draws(cfg, 2)
  with pytest.raises(ValueError, match="multiple of the block size"):
    list(st.stream(noise[:, :5], renoise, [ctx]))


@pytest.mark.parametrize(
  "switches, match",
  [
    ([Switch(6, 1), Switch(3, 1)], "must be greater"),
    ([Switch(0, 1)], "must be greater"),
    ([Switch(6, 1), Switch(6, 1)], "must be greater"),
    ([Switch(12, 1)], "out of range"),
    ([Switch(3, 2)], "prompt 2 does not exist"),
  ],
)
def test_bad_switches(switches, match):
  cfg, st = _setup()
  noise, renoise, ctx = _draws(cfg, 4)
  with pytest.raises(ValueError, match=match):
    list(st.stream(noise, renoise, [ctx, ctx], switches))


def test_wrong_embedding_width_is_named():
  cfg, st = _setup()
  with pytest.raises(ValueError, match=r"expects \[batch, 16, 32\]"):
    st.encode(jnp.zeros((1, cfg.text_len, cfg.text_dim + 1)))
