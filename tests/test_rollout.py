"""Self-Forcing rollout (train/rollout.py) and the training-time recache (train/recache.py).

Values are checked against the streaming engine (generate_block truncated at the exit step); gradients
against an independent reference built from engine.denoise on stopped inputs; the recache against
forwards over exactly the frames upstream's recache pass attends to.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from longlive_jax.config import tiny_config
from longlive_jax.model.params import model_from_params
from longlive_jax.stream import engine
from longlive_jax.stream.cache import StreamSpec, init_cache
from longlive_jax.stream.noise import BlockShape, KeyNoise
from longlive_jax.train import rollout as ro
from longlive_jax.train.lora_train import random_params
from longlive_jax.train.recache import training_recache

H, W, NB = 4, 4, 3
TPF = (H // 2) * (W // 2)
CFG = tiny_config()
STREAM = StreamSpec(block_frames=3, sink_frames=3, window_frames=7, tokens_per_frame=TPF)  # ring of 1 frame: rolls
SPEC = ro.RolloutSpec(stream=STREAM)
SHAPE = BlockShape(batch=1, frames=3, height=H, width=W, channels=CFG.in_dim)
KEY = jax.random.key(7)
FAST = {"xla_backend_optimization_level": 0}  # compile time; the same computation
sg = jax.lax.stop_gradient


@functools.cache
def _setup():
  params = random_params(CFG, seed=0)
  model = model_from_params(CFG, params)
  graphdef, _ = nnx.split(model)
  # default optimisation: the same program (and numbers) as the engine's KeyNoise
  draws = jax.jit(functools.partial(ro.draw_blocks, num_blocks=NB, shape=SHAPE, num_steps=SPEC.num_steps))(KEY)
  ctx = jax.random.normal(jax.random.key(3), (1, CFG.text_len, CFG.text_dim))
  w = jax.random.normal(jax.random.key(4), (1, 3 * NB, H, W, CFG.in_dim))  # loss weights
  return params, model, graphdef, draws, ctx, w


def _cache():
  return init_cache(STREAM, num_layers=CFG.num_layers, batch=1, num_heads=CFG.num_heads, head_dim=CFG.head_dim)


@functools.cache
def _value_and_grad(kv_grad: str, use_scan: bool, remat: bool = False):
  """jit of ``params, e, w -> ((sum(video * w), (video, cache)), grads)``: one compilation per mode."""
  _, _, graphdef, draws, ctx, _ = _setup()
  spec = dataclasses.replace(SPEC, kv_grad=kv_grad, remat=remat)

  def loss(params, e, w):
    video, cache = ro.rollout(graphdef, params, _cache(), draws, context=ctx, exit_step=e, spec=spec, use_scan=use_scan)
    return jnp.sum(video * w), (video, cache)

  return jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=FAST)


@functools.partial(jax.jit, static_argnames="e", compiler_options=FAST)
def _engine_reference(params, *, e):
  """Each block through engine.generate_block with the schedule cut after step e; returns the video, the final
  cache, and per block the cache it started from and the input of its exit step (for the gradient reference)."""
  _, model0, graphdef, draws, ctx, _ = _setup()
  model = nnx.merge(graphdef, params)
  ts, sig = (jnp.asarray(a) for a in SPEC.schedule())
  cache, outs, starts, inputs = _cache(), [], [], []
  cross = model.cross_kv(ctx)
  for b in range(NB):
    starts.append(cache)
    x0, cache, x0_steps = engine.generate_block(
      model,
      cache,
      draws.noise[b],
      draws.renoise[b][:e],
      cross=cross,
      timesteps=ts[: e + 1],
      sigmas=sig[: e + 1],
      spec=STREAM,
      context_t=0.0,
      context_eps=draws.context_eps[b],
      shift=5.0,
    )
    # the exit step's input: step e-1's x0 re-noised to sigma_e with the block's draw (the noise itself for e=0)
    inputs.append(draws.noise[b] if e == 0 else (1.0 - sig[e]) * x0_steps[e - 1] + sig[e] * draws.renoise[b][e - 1])
    outs.append(x0)
  return jnp.concatenate(outs, axis=1), cache, starts, inputs


def test_draws_match_the_engine_key_noise():
  _, _, _, draws, _, _ = _setup()
  kn = KeyNoise(KEY, shape=SHAPE, num_steps=SPEC.num_steps, context_eps=True)  # training-style: renoised context
  for b in (0, NB - 1):
    noise, renoise, ctx = kn(b)
    np.testing.assert_array_equal(np.asarray(draws.noise[b]), np.asarray(noise))
    np.testing.assert_array_equal(np.asarray(draws.renoise[b]), np.asarray(renoise))
    np.testing.assert_array_equal(np.asarray(draws.context_eps[b]), np.asarray(ctx))


def test_rollout_equals_engine_generate_block_truncated_at_the_exit():
  """Forward values for several exit steps (one compiled rollout, the exit step traced): each block equals
  generate_block cut after step e committing its x0 with the training-style context noise; caches agree."""
  params, _, _, _, _, w = _setup()
  vg = _value_and_grad("stop", True)
  for e in (0, 2):  # no step before the exit / two (traced loop bound); e=2 is shared with the gradient test
    (_, (video, cache)), _ = vg(params, jnp.int32(e), w)
    ref, ref_cache, _, _ = _engine_reference(params, e=e)
    np.testing.assert_allclose(np.asarray(video), np.asarray(ref), atol=2e-5, err_msg=f"exit step {e}")
    np.testing.assert_allclose(np.asarray(cache.k), np.asarray(ref_cache.k), atol=2e-5)
    np.testing.assert_allclose(np.asarray(cache.v), np.asarray(ref_cache.v), atol=2e-5)
    np.testing.assert_array_equal(np.asarray(cache.frame), np.asarray(ref_cache.frame))
    assert int(cache.next_frame) == 3 * NB


def test_gradient_flows_only_through_the_exit_steps():
  """d/dparams of sum(video * w) equals the gradient of the exit-step denoise calls alone, with their caches and
  inputs held constant: nothing flows through the earlier steps, the commits or the cache."""
  params, _, graphdef, _, ctx, w = _setup()
  e = 2
  (_, (video, _)), grads = _value_and_grad("stop", True)(params, jnp.int32(e), w)
  _, _, starts, inputs = _engine_reference(params, e=e)
  ts, sig = (jnp.asarray(a) for a in SPEC.schedule())

  def exit_only(p):
    model = nnx.merge(graphdef, p)
    cross = model.cross_kv(ctx)
    outs = [
      engine.denoise(model, sg(starts[b]), sg(inputs[b]), t=ts[e], sigma=sig[e], cross=cross, spec=STREAM)
      for b in range(NB)
    ]
    return jnp.sum(jnp.concatenate(outs, axis=1) * w)

  ref = jax.jit(jax.grad(exit_only), compiler_options=FAST)(params)
  flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(ref)
  for g, r in zip(flat, flat_ref, strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5 * (1 + float(np.max(np.abs(r)))))
  total = sum(float(jnp.sum(jnp.abs(g))) for g in flat)
  assert total > 1e-2  # the reference is not trivially zero


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_straight_through_changes_gradients_not_values():
  params, _, _, _, _, w = _setup()
  e = jnp.int32(1)
  (loss_s, (video_s, cache_s)), g_stop = _value_and_grad("stop", True)(params, e, w)
  (loss_t, (video_t, cache_t)), g_st = _value_and_grad("straight_through", True)(params, e, w)
  np.testing.assert_array_equal(np.asarray(video_t), np.asarray(video_s))
  np.testing.assert_array_equal(np.asarray(cache_t.k), np.asarray(cache_s.k))
  assert _max_diff(g_st, g_stop) > 1e-3  # later blocks backpropagate into earlier blocks' exit-step K/V
  # A loss on the first block only: nothing reads its K/V with gradient afterwards, so both modes agree.
  w_first = w.at[:, 3:].set(0.0)
  _, g_stop1 = _value_and_grad("stop", True)(params, e, w_first)
  _, g_st1 = _value_and_grad("straight_through", True)(params, e, w_first)
  assert _max_diff(g_st1, g_stop1) < 1e-6


def test_remat_changes_nothing():
  params, _, _, _, _, w = _setup()
  e = jnp.int32(1)
  (_, (video, _)), g = _value_and_grad("straight_through", True)(params, e, w)
  (_, (video_r, _)), g_r = _value_and_grad("straight_through", True, True)(params, e, w)
  np.testing.assert_allclose(np.asarray(video_r), np.asarray(video), atol=1e-6)
  assert _max_diff(g_r, g) < 1e-5


def test_jit_scan_equals_python_loop():
  params, _, graphdef, draws, ctx, w = _setup()
  e = jnp.int32(2)
  (_, (video_s, cache_s)), _ = _value_and_grad("straight_through", True)(params, e, w)
  spec = dataclasses.replace(SPEC, kv_grad="straight_through")
  loop = jax.jit(
    lambda p, e: ro.rollout(graphdef, p, _cache(), draws, context=ctx, exit_step=e, spec=spec, use_scan=False),
    compiler_options=FAST,
  )
  video_l, cache_l = loop(params, e)
  np.testing.assert_allclose(np.asarray(video_l), np.asarray(video_s), atol=1e-5)
  np.testing.assert_allclose(np.asarray(cache_l.k), np.asarray(cache_s.k), atol=1e-5)
  assert int(cache_l.next_frame) == int(cache_s.next_frame) == 3 * NB


def test_bad_options_are_named():
  with pytest.raises(ValueError, match="kv_grad"):
    ro.RolloutSpec(stream=STREAM, kv_grad="through")


M = 9  # recache frames (the streaming chunk) >= window 7


@functools.partial(jax.jit, compiler_options=FAST)
def _recache(params, latents, s):
  model = model_from_params(CFG, params)
  ctx2 = jax.random.normal(jax.random.key(5), (1, CFG.text_len, CFG.text_dim))
  cache = _cache().replace(
    k=jnp.ones_like(_cache().k), v=jnp.ones_like(_cache().v), frame=jnp.arange(STREAM.num_slots), next_frame=s
  )  # stale content: must all be replaced
  return training_recache(model, cache, latents, cross=model.cross_kv(ctx2), spec=STREAM, switch_frame=s)


@functools.partial(jax.jit, static_argnames="zero_sink", compiler_options=FAST)
def _pass_reference(params, latents, pos, *, zero_sink):
  """One unmasked t=0 forward over exactly the frames upstream's recache queries attend to (+ the zero sink)."""
  model = model_from_params(CFG, params)
  ctx2 = jax.random.normal(jax.random.key(5), (1, CFG.text_len, CFG.text_dim))
  ck, cv = model.cross_kv(ctx2)
  extra = None
  if zero_sink:
    z = jnp.zeros((CFG.num_layers, 1, 3 * TPF, CFG.num_heads, CFG.head_dim))
    extra = (z, z, jnp.ones((1, 3 * TPF), bool))
  _, k, v = model.forward_tokens(
    latents, jnp.zeros(latents.shape[:2]), cross_k=ck, cross_v=cv, frame_pos=jnp.asarray(pos), extra_kv=extra
  )
  return k, v


def test_training_recache_after_the_first_chunk_zeroes_a_write_protected_sink():
  """S > m: the sink stays zero but attended; the ring holds frame S-1 as computed by a pass whose queries see
  [zero sink | last window - sink frames] (upstream's buffer window), not all m frames."""
  params = _setup()[0]
  lat = jax.random.normal(jax.random.key(9), (1, M, H, W, CFG.in_dim))
  s = 15
  out = _recache(params, lat, jnp.int32(s))
  assert int(out.next_frame) == s
  np.testing.assert_array_equal(np.asarray(out.frame), [0, 1, 2, s - 1])  # sink slots valid (attended zeros)
  assert float(jnp.max(jnp.abs(out.k[:, :, : 3 * TPF]))) == 0.0
  assert float(jnp.max(jnp.abs(out.v[:, :, : 3 * TPF]))) == 0.0
  k, v = _pass_reference(params, lat[:, M - 4 :], np.arange(s - 4, s), zero_sink=True)
  np.testing.assert_allclose(np.asarray(out.k[:, :, 3 * TPF :]), np.asarray(k[:, :, -TPF:]), atol=2e-5)
  np.testing.assert_allclose(np.asarray(out.v[:, :, 3 * TPF :]), np.asarray(v[:, :, -TPF:]), atol=2e-5)
  # attending to all m frames instead would give different keys: the window restriction matters
  k_all, _ = _pass_reference(params, lat, np.arange(s - M, s), zero_sink=True)
  assert float(jnp.max(jnp.abs(k_all[:, :, -TPF:] - out.k[:, :, 3 * TPF :]))) > 1e-4


def test_training_recache_at_the_first_chunk_rewrites_the_sink():
  """S == m (the pass starts at frame 0): sink = frames 0..2 under the new prompt; the queries see frames
  0..2 and the last window - sink frames."""
  params = _setup()[0]
  lat = jax.random.normal(jax.random.key(9), (1, M, H, W, CFG.in_dim))
  out = _recache(params, lat, jnp.int32(M))
  np.testing.assert_array_equal(np.asarray(out.frame), [0, 1, 2, M - 1])
  sel = np.array([0, 1, 2, 5, 6, 7, 8])
  k, v = _pass_reference(params, lat[:, sel], sel, zero_sink=False)
  np.testing.assert_allclose(np.asarray(out.k[:, :, : 3 * TPF]), np.asarray(k[:, :, : 3 * TPF]), atol=2e-5)
  np.testing.assert_allclose(np.asarray(out.k[:, :, 3 * TPF :]), np.asarray(k[:, :, -TPF:]), atol=2e-5)
  np.testing.assert_allclose(np.asarray(out.v[:, :, 3 * TPF :]), np.asarray(v[:, :, -TPF:]), atol=2e-5)
