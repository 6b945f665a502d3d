"""Training stages ode-init, self-forcing and streaming-long on tiny configs (train/stages/*.py).

Each stage is built from a train config through the registry, runs a few jitted steps on tiny random data and is
checked for what each step must change (and leave alone); streaming-long for its carried sequence and the
training-time prompt-switch recache; exports load as models. Steps compile at XLA backend optimisation level 0
(compile time; the numbers are the same computation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax.model.params import model_from_params
from longlive_jax.model.wan import block_causal_mask
from longlive_jax.sharding import MeshConfig, make_mesh
from longlive_jax.train import losses
from longlive_jax.train.config import TrainConfigError, config_from_dict
from longlive_jax.train.inputs import hash_text_encoder
from longlive_jax.train.stages import get_stage
from longlive_jax.train.stages.ode_init import causal_mask

ENC = hash_text_encoder(text_len=16, text_dim=32)
FAST = {"xla_backend_optimization_level": 0}
LAT = {"latent_height": 4, "latent_width": 4}


def _stage(name, options, **top):
  cfg = config_from_dict(
    {"stage": name, "run_dir": "/tmp/unused", "steps": 3, "model": {"preset": "tiny"}, "options": options} | top
  )
  return get_stage(name)(cfg)


def _changed(a, b) -> float:
  if a is None:
    return 0.0
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _finite(metrics):
  for k, v in metrics.items():
    assert np.isfinite(float(v)), k


def test_self_forcing_steps_update_the_critic_every_step_and_the_generator_every_ratio():
  opts = {**LAT, "num_training_frames": 6, "local_attn_size": 7, "lr_critic": 1e-3, "dfake_gen_update_ratio": 2}
  stage = _stage("self-forcing", opts, optim={"lr": 1e-3}, ema={"enabled": True, "start_step": 1})
  state = stage.init(jax.random.PRNGKey(0), mesh=None)
  batch = stage.make_batch([{"prompt": "a cat"}, {"prompt": "a dog"}], encode_text=ENC)
  assert batch["cond"].shape == batch["uncond"].shape == (2, 16, 32)
  np.testing.assert_array_equal(batch["uncond"][0], batch["uncond"][1])  # the negative prompt, once per sample
  step = jax.jit(stage.step, compiler_options=FAST)
  teacher0 = state.teacher
  for i, gen_updates in enumerate((True, False, True)):
    old = state
    state, m = step(state, batch)
    _finite(m)
    assert float(m["generator_updated"]) == float(gen_updates)
    assert (_changed(old.generator, state.generator) > 1e-5) == gen_updates, f"step {i}"
    assert _changed(old.critic, state.critic) > 1e-5
    assert 0 <= float(m["exit_step_critic"]) <= 3
    if gen_updates:
      assert float(m["generator_loss"]) > 0 and float(m["generator_grad_norm"]) > 0
      assert _changed(old.ema, state.ema) > 0  # EMA follows generator steps (step >= start: a real average)
  assert _changed(teacher0, state.teacher) == 0.0
  assert int(state.step) == 3
  params = stage.export(state)
  assert _changed(params, state.ema) == 0.0  # the EMA is exported
  model_from_params(stage.core.cfgs["generator"], params)


STREAM_OPTS = {
  **LAT,
  "local_attn_size": 7,  # sink 3 + ring 1 + block 3
  "streaming_chunk_size": 9,
  "streaming_min_new_frame": 6,
  "streaming_max_length": 21,  # chunks 0-8, 9-14, 15-20, then a new sequence
  "switch_choices": [15],  # after the first chunk: the training recache zeroes the sink
  "lr_critic": 1e-3,
  "dfake_gen_update_ratio": 2,
  "adapter": {"rank": 4, "alpha": 8},
}


def test_streaming_long_carries_the_sequence_switches_with_the_training_recache_and_trains_lora_only():
  stage = _stage("streaming-long", STREAM_OPTS, optim={"lr": 1e-3}, model={"preset": "tiny", "dtype": "bfloat16"})
  assert stage.core.cfgs["critic"].dtype == "bfloat16"  # bf16 compute for every network, float32 master weights
  state = stage.init(jax.random.PRNGKey(0), mesh=None)
  batch = stage.make_batch([{"prompt_a": "a cat", "prompt_b": "a dog"}], encode_text=ENC)
  step = jax.jit(stage.step, compiler_options=FAST)
  gen_base, critic_base, teacher = state.generator_base, state.critic_base, state.teacher
  assert state.stream.cache.k.dtype == jnp.bfloat16 and gen_base["head"]["kernel"].dtype == jnp.float32
  # step 0 (generator step): generator chunk 0-8 (first chunk, 9 new), critic chunk 9-14 (6 new after 3 overlap);
  # step 1: critic chunk 15-20 after the switch at 15; step 2: the next chunk would pass 21 -> new sequence.
  expect = [(True, 9, 15, 1, 0), (False, 15, 21, 1, 1), (True, 9, 15, 2, 0)]
  prevs = []
  for gen, start, length, seqs, switched in expect:
    old = state
    state, m = step(state, batch)
    _finite(m)
    got = tuple(int(m[k]) for k in ("chunk_start", "sequence_length", "sequences", "switched"))
    assert got == (start, length, seqs, switched)
    assert 0 <= float(m["exit_step_critic"]) <= 3 and float(m["generator_updated"]) == float(gen)
    assert int(state.stream.cache.next_frame) == length
    assert (_changed(old.generator, state.generator) > 1e-6) == gen
    assert _changed(old.critic, state.critic) > 1e-6
    prevs.append(np.asarray(state.stream.prev))
    k_sink = np.abs(np.asarray(state.stream.cache.k[:, :, : 3 * 4]))
    if switched:  # training recache at 15 > 9: sink zeroed but kept (attended), ring = frame 20 after one more chunk
      assert k_sink.max() == 0.0
      np.testing.assert_array_equal(np.asarray(state.stream.cache.frame), [0, 1, 2, 20])
    else:
      assert k_sink.max() > 0.0
  # the 3 overlap frames of a later chunk are the previous chunk's last 3 (frames 12-14)
  np.testing.assert_array_equal(prevs[1][:, :3], prevs[0][:, 6:])
  for name, a, b in (("generator", gen_base, state.generator_base), ("critic", critic_base, state.critic_base)):
    assert _changed(a, b) == 0.0, f"frozen {name} base changed"
  assert _changed(teacher, state.teacher) == 0.0
  assert set(state.generator) <= {"self_attn", "cross_attn", "ffn"}  # adapters only
  params = stage.export(state)
  model_from_params(stage.core.cfgs["generator"], params)
  delta = params["blocks"]["self_attn"]["q"]["kernel"] - gen_base["blocks"]["self_attn"]["q"]["kernel"]
  assert float(jnp.max(jnp.abs(delta))) > 1e-7  # the trained adapter is merged in


def test_streaming_long_options_are_checked():
  with pytest.raises(TrainConfigError, match="switch_choices"):
    _stage("streaming-long", {**STREAM_OPTS, "switch_choices": [12]})
  with pytest.raises(TrainConfigError, match="unknown key options.streaming_chunk"):
    _stage("streaming-long", {**STREAM_OPTS, "streaming_chunk": 9})
  stage = _stage("streaming-long", STREAM_OPTS)
  with pytest.raises(ValueError, match="prompt_a"):
    stage.make_batch([{"prompt": "x"}], encode_text=None)


def test_ode_init_regresses_onto_trajectories_with_the_block_causal_mask():
  np.testing.assert_array_equal(
    np.asarray(causal_mask(num_frames=6, block_frames=3, tokens_per_frame=4)),
    np.asarray(block_causal_mask(num_frames=6, block_frames=3, tokens_per_frame=4)),
  )
  local = np.asarray(causal_mask(num_frames=9, block_frames=3, tokens_per_frame=1, window=4))
  assert local[8].tolist() == [False] * 5 + [True] * 4  # block 2 (frames 6-8) sees frames 5..8
  stage = _stage("ode-init", {}, optim={"lr": 1e-3})
  rng = np.random.default_rng(0)
  records = [{"trajectory": rng.standard_normal((5, 6, 4, 4, 16)).astype(np.float32), "prompt": p} for p in "ab"]
  batch = stage.make_batch(records, encode_text=ENC)
  mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
  state = stage.init(jax.random.PRNGKey(0), mesh=mesh)
  # the loss against an independent reference: per-block draws from the same key, one forward with the mask
  key = jax.random.key(3)
  loss, _ = jax.jit(stage.loss, compiler_options=FAST)(state.params, batch["trajectory"], batch["cond"], key)
  idx = np.repeat(np.asarray(jax.random.randint(key, (2, 2), 0, 4)), 3, axis=1)  # [B, F]
  step_t = np.array([1000.0, 937.5, 833.3333, 625.0, 0.0], np.float32)
  x_t = np.stack([batch["trajectory"][b, idx[b], np.arange(6)] for b in range(2)])  # [B, F, H, W, C]
  t = jnp.asarray(step_t[idx])
  model = model_from_params(stage.model_config, state.params)
  ck, cv = model.cross_kv(jnp.asarray(batch["cond"]))
  mask = block_causal_mask(num_frames=6, block_frames=3, tokens_per_frame=4)[None]
  flow, _, _ = model.forward_tokens(jnp.asarray(x_t), t, cross_k=ck, cross_v=cv, frame_pos=jnp.arange(6), key_mask=mask)
  x0 = jnp.asarray(x_t) - (t / 1000.0)[:, :, None, None, None] * flow  # sigma = t / 1000 on these grid points
  ref = losses.ode_regression_loss(x0_pred=x0, target=jnp.asarray(batch["trajectory"][:, -1]), timestep=t)
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-4)
  step = jax.jit(stage.step, compiler_options=FAST)
  for _ in range(2):
    old = state
    state, m = step(state, batch)
    _finite(m)
    assert _changed(old.params, state.params) > 1e-5
  model_from_params(stage.model_config, stage.export(state))
  with pytest.raises(ValueError, match="trajectory"):
    stage.make_batch([{"trajectory": np.zeros((4, 6, 4, 4, 16)), "prompt": "a"}], encode_text=ENC)


def _tiny_vae_file(path):
  """A random tiny Wan VAE in upstream safetensors layout (the ``vae`` option reads upstream files)."""
  from safetensors.numpy import save_file

  from longlive_jax.convert import wan_vae
  from longlive_jax.vae.config import tiny_vae_config

  cfg, rng, params = tiny_vae_config(), np.random.default_rng(0), {}
  for p, spec in wan_vae.param_specs(cfg):
    node = params
    for k in p[:-1]:
      node = node.setdefault(k, {})
    x = rng.standard_normal(spec.shape).astype(np.float32)
    node[p[-1]] = 1.0 + 0.1 * x if "gamma" in str(p[-1]) else x / np.sqrt(max(np.prod(spec.shape[:-1]), 1))
  save_file(wan_vae.to_upstream(params, cfg), str(path))
  return wan_vae.load_vae(path)


def test_streaming_long_window_with_the_vae_image_latent(tmp_path):
  """Later windows are [image latent of the decoded history, last chunk - 1 frames]; the mask covers new frames."""
  from longlive_jax.train.stages.streaming_long import vae_first_frame

  vae = _tiny_vae_file(tmp_path / "vae.safetensors")
  stage = _stage("streaming-long", {**STREAM_OPTS, "vae": str(tmp_path / "vae.safetensors"), "switch_mode": "none"})
  state = stage.init(jax.random.PRNGKey(0), mesh=None)
  batch = stage.make_batch([{"prompt_a": "a cat", "prompt_b": "a dog"}], encode_text=ENC)
  params = stage.core.generator_params(state.generator, state.generator_base)
  chunk = jax.jit(stage.chunk, compiler_options=FAST)
  first = chunk(params, state.stream, batch, jax.random.key(1))
  assert np.asarray(first.mask).all()
  np.testing.assert_array_equal(np.asarray(first.window), np.asarray(first.stream.prev))
  later = chunk(params, first.stream, batch, jax.random.key(2))
  prev0, prev1, win = (np.asarray(a) for a in (first.stream.prev, later.stream.prev, later.window))
  assert np.asarray(later.mask)[0, :, 0, 0, 0].tolist() == [False] * 3 + [True] * 6
  np.testing.assert_array_equal(prev1[:, :3], prev0[:, 6:])  # overlap frames 6-8, then the 6 new ones
  np.testing.assert_array_equal(win[:, 1:], prev1[:, 1:])
  history = np.concatenate([prev0, prev1[:, 3:]], axis=1)[:, :7]  # all but the last chunk - 1 = 8 frames
  img = jax.jit(vae_first_frame, compiler_options=FAST)(vae, jnp.asarray(history))
  np.testing.assert_allclose(win[:, :1], np.asarray(img), atol=1e-5)
  assert np.abs(win[:, 0] - prev1[:, 0]).max() > 1e-3  # really replaced


def test_streaming_long_recache_mode_none_switches_the_prompt_and_keeps_the_cache():
  """recache_mode none (the no-recache ablation): at the switch chunk the cache is left as it was and the chunk is
  conditioned on the second prompt; with the training recache the same chunk starts from a rewritten cache."""
  opts = {**STREAM_OPTS, "switch_choices": [9], "adapter": None}
  out = {}
  for mode in ("none", "training"):
    stage = _stage("streaming-long", {**opts, "recache_mode": mode})
    state = stage.init(jax.random.PRNGKey(0), mesh=None)
    batch = stage.make_batch([{"prompt_a": "a cat", "prompt_b": "a dog"}], encode_text=ENC)
    params = stage.core.generator_params(state.generator, state.generator_base)
    recache = jax.jit(stage._recache, compiler_options=FAST)
    prev = jax.random.normal(jax.random.key(1), state.stream.prev.shape)
    cache = stage.core.new_cache(1)
    cache = cache.replace(
      k=cache.k + 1.0, v=cache.v - 1.0, frame=jnp.arange(cache.frame.shape[0]), next_frame=jnp.int32(9)
    )
    out[mode] = recache(params, cache, prev, jnp.asarray(batch["cond_b"]), jnp.int32(9))
    if mode == "none":
      np.testing.assert_array_equal(np.asarray(out[mode].k), np.asarray(cache.k))
      np.testing.assert_array_equal(np.asarray(out[mode].v), np.asarray(cache.v))
  assert float(jnp.abs(out["training"].k - out["none"].k).max()) > 1e-3  # the training recache does rewrite it
  with pytest.raises(ValueError, match="recache_mode must be one of"):
    _stage("streaming-long", {**opts, "recache_mode": "keep"})


def test_streaming_long_inference_recache_option_dispatches_on_the_traced_switch_frame():
  from flax import nnx

  from longlive_jax.stream import engine

  opts = {**STREAM_OPTS, "recache_mode": "inference", "switch_choices": [9, 15], "adapter": None}
  stage = _stage("streaming-long", opts)
  state = stage.init(jax.random.PRNGKey(0), mesh=None)
  cache = stage.core.new_cache(1)
  cache = cache.replace(k=cache.k + 1.0, v=cache.v - 1.0, frame=jnp.arange(4), next_frame=jnp.int32(15))
  prev = jax.random.normal(jax.random.key(1), (1, 9, 4, 4, 16))
  cond_b = jnp.asarray(ENC(["a dog"]))
  got = jax.jit(stage._recache, compiler_options=FAST)(state.generator, cache, prev, cond_b, jnp.int32(15))
  model = nnx.merge(stage.core.graphdefs["generator"], state.generator)
  cross = model.cross_kv(cond_b)
  want = engine.recache(
    model, cache, prev[:, -7:], cross=cross, spec=stage.core.stream_spec, switch_frame=15, global_sink=True
  )
  np.testing.assert_allclose(np.asarray(got.k), np.asarray(want.k), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got.frame), np.asarray(want.frame))
  assert float(jnp.abs(got.k[:, :, :12] - 1.0).max()) == 0.0  # global sink kept (inference semantics)


def test_dmd_timestep_shift_changes_only_the_dmd_draw():
  """``options.dmd_timestep_shift`` warps the DMD / critic timestep draw; None keeps upstream's ``timestep_shift``."""
  from longlive_jax import schedule

  base = {**LAT, "num_training_frames": 6, "local_attn_size": 7}
  key = jax.random.key(3)
  upstream = _stage("self-forcing", base).core
  uniform = _stage("self-forcing", {**base, "dmd_timestep_shift": 1.0}).core
  t5 = np.asarray(upstream.sample_t(key, 4096))
  t1 = np.asarray(uniform.sample_t(key, 4096))
  np.testing.assert_allclose(t5, np.asarray(schedule.sample_timestep(key, 4096, shift=5.0)), rtol=1e-6)
  np.testing.assert_allclose(t1, np.asarray(schedule.sample_timestep(key, 4096, shift=1.0)), rtol=1e-6)
  assert 0.45 < np.mean(t1 < 500) < 0.55  # uniform: half the draws below t = 500
  assert np.mean(t5 < 500) < 0.2  # shift 5: most draws at high noise
  assert uniform.opts.timestep_shift == upstream.opts.timestep_shift == 5.0  # the generator's schedule is untouched
