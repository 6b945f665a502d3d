"""The forced stage (train/stages/forced.py): teacher-forced block denoising equals the streaming engine.

Its one forward over ``[clean ; noisy]`` must give every block exactly the x0 estimate that inference computes
for that block from a KV cache into which the true earlier blocks were committed (sink, ring window and all),
or the stage trains something other than the step the generator takes when it streams.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax import schedule
from longlive_jax.model.params import model_from_params
from longlive_jax.sharding import MeshConfig, make_mesh
from longlive_jax.stream import engine
from longlive_jax.stream.cache import StreamSpec, init_cache
from longlive_jax.train.config import config_from_dict
from longlive_jax.train.inputs import hash_text_encoder
from longlive_jax.train.stages import get_stage
from longlive_jax.train.stages.forced import forced_mask

ENC = hash_text_encoder(text_len=16, text_dim=32)
FAST = {"xla_backend_optimization_level": 0}
F, H, W, C = 12, 4, 4, 16  # 4 blocks of 3: with sink 3 and window 9 the last block no longer sees frames 3-5


def _stage(options, **top):
  cfg = config_from_dict(
    {"stage": "forced", "run_dir": "/tmp/unused", "steps": 3, "model": {"preset": "tiny"}, "options": options} | top
  )
  return get_stage("forced")(cfg)


def _records(n=2, seed=0):
  rng = np.random.default_rng(seed)
  emb = ENC(["a", "b", "c"][:n])
  return [
    {"latents": rng.standard_normal((F, H, W, C)).astype(np.float32), "text_embedding": np.asarray(emb[i])}
    for i in range(n)
  ]


def test_forced_mask_reads_the_cache_a_streamed_block_reads():
  m = np.asarray(forced_mask(num_frames=12, block_frames=3, tokens_per_frame=1, sink=3, window=9))
  s = 12
  # noisy frame 9 (block 3): the sink 0-2 and the ring's 3 frames 6-8 of the clean half, its own block's noisy frames
  assert m[s + 9, :s].tolist() == [True] * 3 + [False] * 3 + [True] * 3 + [False] * 3
  assert m[s + 9, s:].tolist() == [False] * 9 + [True] * 3
  # clean frame 9 (the commit pass of block 3): the same cache, then its own clean block; never a noisy frame
  assert m[9, :s].tolist() == [True] * 3 + [False] * 3 + [True] * 6
  assert not m[:s, s:].any()
  # block 0's noisy frames see no clean frame at all (there is no past)
  assert not m[s : s + 3, :s].any()


@pytest.mark.parametrize("options", [{"sink_size": 3, "local_attn_size": 9}, {}])
def test_forced_x0_equals_streaming_from_a_cache_of_the_true_past(options):
  stage = _stage(options, optim={"lr": 1e-3})
  batch = stage.make_batch(_records())
  state = stage.init(jax.random.PRNGKey(0), mesh=make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]))
  lat, cond = jnp.asarray(batch["latents"]), jnp.asarray(batch["cond"])
  idx = jnp.asarray(np.repeat(np.array([[0, 1, 2, 3], [3, 2, 1, 0]]), 3, axis=1))  # [B, F]: every step at every block
  eps = jax.random.normal(jax.random.key(5), lat.shape)
  model = model_from_params(stage.model_config, state.params)

  o = stage.opts
  ts, sig = schedule.warped_steps(o.denoising_step_list, shift=o.timestep_shift)
  t = jnp.asarray(ts)[idx]
  x_t = (1 - jnp.asarray(sig)[idx][..., None, None, None]) * lat + jnp.asarray(sig)[idx][..., None, None, None] * eps

  # reference: the streaming engine, committing the true blocks into the cache one by one
  window = options.get("local_attn_size", F + 3)
  spec = StreamSpec(block_frames=3, sink_frames=options.get("sink_size", 0), window_frames=window, tokens_per_frame=4)
  cfg = stage.model_config
  cache = init_cache(spec, num_layers=cfg.num_layers, batch=2, num_heads=cfg.num_heads, head_dim=cfg.head_dim)
  cross = model.cross_kv(cond)
  ref = []
  for b in range(F // 3):
    sl = slice(3 * b, 3 * b + 3)
    sig_b = jnp.asarray(sig)[idx[:, 3 * b]][:, None, None, None, None]  # [B, 1, 1, 1, 1]
    flow, _, _ = engine.call(model, cache, spec, x_t[:, sl], t[:, sl], cross)
    ref.append(x_t[:, sl] - sig_b * flow)
    cache = engine.commit(model, cache, lat[:, sl], cross=cross, spec=spec)
  ref = jnp.concatenate(ref, axis=1)  # [B, F, H, W, C]
  x0 = jax.jit(stage.denoised, compiler_options=FAST)(state.params, lat, cond, idx, eps)
  np.testing.assert_allclose(np.asarray(x0), np.asarray(ref), atol=2e-5)

  # the stage's loss equals the mean squared error of that reference, blocks 1.. (skip_first_blocks = 1)
  loss, _ = jax.jit(stage.loss_at, compiler_options=FAST)(state.params, lat, cond, idx, eps)
  want = float(jnp.mean(jnp.square(ref[:, 3:] - lat[:, 3:])))
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)
  # with no block skipped, block 0 (denoised with an empty cache) counts too
  stage_all = _stage(options | {"skip_first_blocks": 0}, optim={"lr": 1e-3})
  loss_all, _ = jax.jit(stage_all.loss_at, compiler_options=FAST)(state.params, lat, cond, idx, eps)
  np.testing.assert_allclose(float(loss_all), float(jnp.mean(jnp.square(ref - lat))), rtol=1e-4)


def _stream_x0(stage, params, past, x_t, t, sig_idx, cond):
  """x0 of every block streamed by the engine, committing ``past``'s blocks into the cache one by one."""
  o, cfg = stage.opts, stage.model_config
  model = model_from_params(cfg, params)
  spec = StreamSpec(block_frames=3, sink_frames=o.sink_size, window_frames=o.local_attn_size, tokens_per_frame=4)
  cache = init_cache(
    spec, num_layers=cfg.num_layers, batch=past.shape[0], num_heads=cfg.num_heads, head_dim=cfg.head_dim
  )
  cross = model.cross_kv(cond)
  sig = jnp.asarray(schedule.warped_steps(o.denoising_step_list, shift=o.timestep_shift)[1])
  ref = []
  for b in range(F // 3):
    sl = slice(3 * b, 3 * b + 3)
    flow, _, _ = engine.call(model, cache, spec, x_t[:, sl], t[:, sl], cross)
    ref.append(x_t[:, sl] - sig[sig_idx[:, 3 * b]][:, None, None, None, None] * flow)
    cache = engine.commit(model, cache, past[:, sl], cross=cross, spec=spec)
  return jnp.concatenate(ref, axis=1)  # [B, F, H, W, C]


def test_forced_self_context_is_a_cache_of_the_generators_own_blocks():
  """``self_context``: the past in the cache is the generator's own x0 of each block (from the true clip noised to
  the last step), the target stays the true clip."""
  stage = _stage({"sink_size": 3, "local_attn_size": 9, "self_context": 1.0}, optim={"lr": 1e-3})
  batch = stage.make_batch(_records())
  state = stage.init(jax.random.PRNGKey(0), mesh=make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]))
  lat, cond = jnp.asarray(batch["latents"]), jnp.asarray(batch["cond"])
  o = stage.opts
  ts, sig = schedule.warped_steps(o.denoising_step_list, shift=o.timestep_shift)
  key = jax.random.key(3)
  # the draws of ForcedStage.loss
  k_idx, k_eps = jax.random.split(key)
  idx = jnp.repeat(jax.random.randint(k_idx, (2, F // 3), 0, len(ts)), 3, axis=1)  # [B, F]
  eps = jax.random.normal(k_eps, lat.shape)
  k_ctx, _ = jax.random.split(jax.random.fold_in(key, 1))
  last = jnp.full_like(idx, len(ts) - 1)
  eps_ctx = jax.random.normal(k_ctx, lat.shape)
  # the reference, with the engine: the estimate streams from a cache of the true past; the loss's blocks from a
  # cache of the estimate
  s = lambda i: jnp.asarray(sig)[i][..., None, None, None]  # noqa: E731
  est = _stream_x0(stage, state.params, lat, (1 - s(last)) * lat + s(last) * eps_ctx, jnp.asarray(ts)[last], last, cond)
  ref = _stream_x0(stage, state.params, est, (1 - s(idx)) * lat + s(idx) * eps, jnp.asarray(ts)[idx], idx, cond)
  assert float(jnp.max(jnp.abs(est - lat))) > 0.1  # the estimate is not the truth, so the test can tell them apart
  loss, _ = jax.jit(stage.loss, compiler_options=FAST)(state.params, lat, cond, key)
  np.testing.assert_allclose(float(loss), float(jnp.mean(jnp.square(ref[:, 3:] - lat[:, 3:]))), rtol=1e-4)
  truth = _stream_x0(stage, state.params, lat, (1 - s(idx)) * lat + s(idx) * eps, jnp.asarray(ts)[idx], idx, cond)
  assert abs(float(loss) - float(jnp.mean(jnp.square(truth[:, 3:] - lat[:, 3:])))) > 1e-3 * float(loss)
  with pytest.raises(Exception, match="self_context"):
    _stage({"self_context": 1.5})


def test_forced_steps_train_and_export():
  stage = _stage({"sink_size": 3, "local_attn_size": 9}, optim={"lr": 1e-3})
  batch = stage.make_batch(_records())
  state = stage.init(jax.random.PRNGKey(0), mesh=make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]))
  step = jax.jit(stage.step, compiler_options=FAST)
  old = state
  state, m = step(state, batch)
  assert np.isfinite(float(m["loss"]))
  diff = max(
    float(jnp.max(jnp.abs(a - b)))
    for a, b in zip(jax.tree.leaves(old.params), jax.tree.leaves(state.params), strict=True)
  )
  assert diff > 1e-5
  model_from_params(stage.model_config, stage.export(state))


def test_forced_options_and_records_are_checked():
  with pytest.raises(Exception, match="local_attn_size"):
    _stage({"sink_size": 3, "local_attn_size": 6})
  stage = _stage({})
  bad = [{"latents": r["latents"][:4], "text_embedding": r["text_embedding"]} for r in _records()]
  with pytest.raises(ValueError, match=r"latents of .* shape \(4, 4, 4, 16\)"):
    stage.make_batch(bad)
  short = [{"latents": r["latents"][:3], "text_embedding": r["text_embedding"]} for r in _records()]
  with pytest.raises(ValueError, match="more than 1 block"):
    stage.make_batch(short)
  wide = [{"latents": r["latents"], "text_embedding": np.zeros((16, 8), np.float32)} for r in _records()]
  with pytest.raises(ValueError, match=r"forced: text embedding of shape \(16, 8\), expected \[16, 32\]"):
    stage.make_batch(wide)


def test_forced_mask_with_a_switch_is_the_recache_pass():
  m = np.asarray(forced_mask(num_frames=12, block_frames=3, tokens_per_frame=1, sink=3, window=7, switch=[0, 6, 9]))
  plain = np.asarray(forced_mask(num_frames=12, block_frames=3, tokens_per_frame=1, sink=3, window=7))
  np.testing.assert_array_equal(m[0], plain)  # no switch: the plain mask
  # a switch at 6 <= window: the recache rewrites frames 0-5 in one unmasked pass
  assert m[1, 1, :12].tolist() == [True] * 6 + [False] * 6
  np.testing.assert_array_equal(m[1, 6:], plain[6:])  # later commits and every noisy query: unchanged
  # at 9 > window: frames 5-8 (the last window - sink) see each other and the kept sink; the sink keeps its row
  assert m[2, 5, :12].tolist() == [True] * 3 + [False] * 2 + [True] * 4 + [False] * 3
  np.testing.assert_array_equal(m[2, :5], plain[:5])
  assert not m[:, :12, 12:].any()


@pytest.mark.parametrize(
  ("window", "switch", "same_prompt"),
  [(9, 6, False), (9, 9, False), (7, 9, True)],  # past the window only the kept sink's prompt differs: same prompt
)
def test_forced_switch_equals_streaming_with_a_recache(window, switch, same_prompt):
  """A switch clip's loss is that of streaming its first blocks under the old prompt, recaching at the switch
  under the new one (engine.recache) and denoising the later blocks from that cache."""
  stage = _stage({"sink_size": 3, "local_attn_size": window}, optim={"lr": 1e-3})
  rec = _records(1)[0]
  old_emb = rec["text_embedding"] if same_prompt else np.asarray(ENC(["before"])[0])
  batch = stage.make_batch([rec | {"switch_latent": np.int32(switch)}])
  assert batch["switch"].tolist() == [switch]
  state = stage.init(jax.random.PRNGKey(0), mesh=make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]))
  lat, cond = jnp.asarray(batch["latents"]), jnp.asarray(batch["cond"])
  idx = jnp.asarray(np.repeat(np.array([[0, 1, 2, 3]]), 3, axis=1))  # [1, F]
  eps = jax.random.normal(jax.random.key(5), lat.shape)
  model = model_from_params(stage.model_config, state.params)
  o = stage.opts
  ts, sig = schedule.warped_steps(o.denoising_step_list, shift=o.timestep_shift)
  t, s = jnp.asarray(ts)[idx], jnp.asarray(sig)[idx][..., None, None, None]
  x_t = (1 - s) * lat + s * eps

  spec = StreamSpec(block_frames=3, sink_frames=3, window_frames=window, tokens_per_frame=4)
  cfg = stage.model_config
  cache = init_cache(spec, num_layers=cfg.num_layers, batch=1, num_heads=cfg.num_heads, head_dim=cfg.head_dim)
  old, new = model.cross_kv(jnp.asarray(old_emb)[None]), model.cross_kv(cond)
  for b in range(switch // 3):  # the old prompt's blocks, committed
    cache = engine.commit(model, cache, lat[:, 3 * b : 3 * b + 3], cross=old, spec=spec)
  m = min(window, switch)
  cache = engine.recache(model, cache, lat[:, switch - m : switch], cross=new, spec=spec, switch_frame=switch)
  ref = []
  for b in range(switch // 3, F // 3):
    sl = slice(3 * b, 3 * b + 3)
    flow, _, _ = engine.call(model, cache, spec, x_t[:, sl], t[:, sl], new)
    ref.append(x_t[:, sl] - s[:, sl] * flow)
    cache = engine.commit(model, cache, lat[:, sl], cross=new, spec=spec)
  ref = jnp.concatenate(ref, axis=1)  # [1, F - switch, H, W, C]

  sw = jnp.asarray(batch["switch"])
  x0 = jax.jit(stage.denoised, compiler_options=FAST)(state.params, lat, cond, idx, eps, switch=sw)
  np.testing.assert_allclose(np.asarray(x0[:, switch:]), np.asarray(ref), atol=2e-5)
  loss, _ = jax.jit(stage.loss_at, compiler_options=FAST)(state.params, lat, cond, idx, eps, switch=sw)
  np.testing.assert_allclose(float(loss), float(jnp.mean(jnp.square(ref - lat[:, switch:]))), rtol=1e-4)


def test_forced_switch_records_are_checked():
  stage = _stage({"sink_size": 3, "local_attn_size": 9})
  for bad in (4, 12, -3):
    with pytest.raises(ValueError, match=f"switch_latent {bad} .* multiple of 3 below the clip's 12 latents"):
      stage.make_batch([r | {"switch_latent": np.int32(bad)} for r in _records()])
