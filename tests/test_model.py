"""Structure and numerics of the DiT that the golden cases do not pin down on their own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax.config import WAN_T2V_1_3B, WAN_T2V_14B, ConfigError, WanConfig, tiny_config
from longlive_jax.convert import wan_dit
from longlive_jax.model import layers, rope
from longlive_jax.model.params import params_of
from longlive_jax.model.wan import abstract_model, count_params, init_model


@pytest.mark.parametrize(("cfg", "expected"), [(WAN_T2V_1_3B, 1_418_996_800), (WAN_T2V_14B, 14_288_491_584)])
def test_full_size_parameter_count(cfg, expected):
  assert count_params(abstract_model(cfg)) == expected


@pytest.mark.parametrize(("cfg", "num_keys"), [(WAN_T2V_1_3B, 825), (WAN_T2V_14B, 1095)])
def test_full_size_key_mapping_matches_model_shapes(cfg, num_keys):
  """Every upstream key maps onto a model parameter of the right shape, without allocating."""
  want = wan_dit.expected_shapes(cfg)
  assert len(want) == num_keys
  abstract = params_of(abstract_model(cfg))
  seen = set()
  for r in wan_dit._rules(cfg):
    node = abstract
    for p in r.path:
      node = node[p]
    fake = np.broadcast_to(np.zeros((), np.float32), r.upstream_shape)
    got = r.transform(fake).shape
    assert ((cfg.num_layers,) + got if r.stacked else got) == tuple(node.shape), r.upstream
    seen.add(r.path)
  leaves = jax.tree_util.tree_flatten_with_path(abstract)[0]
  assert len(seen) == len(leaves), "some model parameters have no upstream key"


def test_sinusoid_matches_float64():
  rng = np.random.default_rng(0)
  t = np.concatenate([[0.0, 1000.0, 937.5, 833.3333, 625.0, 4.98], rng.uniform(0, 1000, 200)]).astype(np.float32)
  half = 128
  w = np.power(10000.0, -np.arange(half, dtype=np.float64) / half)
  ang = t.astype(np.float64)[:, None] * w[None]
  ref = np.concatenate([np.cos(ang), np.sin(ang)], axis=1)
  got = np.asarray(jax.jit(lambda t: layers.sinusoidal_embedding(t, 256))(t))
  assert np.abs(got - ref).max() < 2e-6
  # The naive float32 product is what this guards against: it is ~100x worse.
  naive = np.concatenate([np.cos(t[:, None] * w.astype(np.float32)), np.sin(t[:, None] * w.astype(np.float32))], 1)
  assert np.abs(naive - ref).max() > 1e-5


def test_rope_split_and_offsets():
  assert rope.axis_pairs(128) == (22, 21, 21)
  assert rope.axis_pairs(32) == (6, 5, 5)
  cos, sin = rope.grid_rope(frame_pos=jnp.array([7, 8]), height=3, width=4, head_dim=32)
  assert cos.shape == (2 * 3 * 4, 16)
  # token (f=1, h=2, w=3): frame angle uses position 8 with D_axis = 12, row 2 / column 3 with D_axis = 10
  tok = 1 * 12 + 2 * 4 + 3
  ft = 8 / np.power(10000.0, np.arange(0, 12, 2) / 12)
  fh = 2 / np.power(10000.0, np.arange(0, 10, 2) / 10)
  fw = 3 / np.power(10000.0, np.arange(0, 10, 2) / 10)
  np.testing.assert_allclose(np.asarray(cos[tok]), np.cos(np.concatenate([ft, fh, fw])), atol=1e-7)
  np.testing.assert_allclose(np.asarray(sin[tok]), np.sin(np.concatenate([ft, fh, fw])), atol=1e-7)
  # Interleaved pairs: (x0, x1) rotated by the first angle.
  x = jnp.zeros((1, 24, 1, 32)).at[0, tok, 0, 0].set(1.0)
  y = rope.apply_rope(x, cos, sin)
  np.testing.assert_allclose(np.asarray(y[0, tok, 0, :2]), [np.cos(ft[0]), np.sin(ft[0])], atol=1e-6)


def _inputs(cfg, b=2, f=3, h=4, w=6, seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(k[0], (b, f, h, w, cfg.in_dim))
  t = jax.random.uniform(k[1], (b,), minval=0, maxval=1000)
  ctx = jax.random.normal(k[2], (b, cfg.text_len, cfg.text_dim))
  return x, t, ctx


def test_forward_compiles_once():
  cfg = tiny_config()
  model = init_model(cfg)
  from flax import nnx

  graphdef, params = nnx.split(model)
  fwd = jax.jit(lambda p, x, t, c: nnx.merge(graphdef, p)(x, t, c))
  y1 = fwd(params, *_inputs(cfg, seed=1))
  y2 = fwd(params, *_inputs(cfg, seed=2))
  assert fwd._cache_size() == 1
  assert not np.allclose(np.asarray(y1), np.asarray(y2))


def test_compile_size_does_not_grow_with_depth():
  """Layers are scanned: the lowered program of a 2-layer and an 8-layer model have the same size."""
  sizes = []
  for n in (2, 8):
    cfg = tiny_config(num_layers=n)
    model = abstract_model(cfg)
    x, t, ctx = _inputs(cfg)
    text = jax.jit(lambda m, x, t, c: m(x, t, c)).lower(model, x, t, ctx).as_text()
    sizes.append(len(text))
  assert abs(sizes[0] - sizes[1]) < 0.02 * sizes[0]


def test_bfloat16_path_close_to_float32():
  cfg = tiny_config(dim=64, ffn_dim=128)
  f32 = init_model(cfg)
  from longlive_jax.model.params import model_from_params

  bf16 = model_from_params(cfg.replace(dtype="bfloat16"), params_of(f32))
  x, t, ctx = _inputs(cfg)
  y32 = np.asarray(f32(x, t, ctx))
  y16 = np.asarray(bf16(x, t, ctx))
  assert y16.dtype == np.float32 and np.isfinite(y16).all()
  rel = np.linalg.norm(y16 - y32) / np.linalg.norm(y32)
  assert 0 < rel < 0.05


def test_per_frame_timesteps_equal_per_sample_when_constant():
  cfg = tiny_config()
  m = init_model(cfg)
  x, t, ctx = _inputs(cfg)
  y1 = m(x, t, ctx)
  y2 = m(x, jnp.broadcast_to(t[:, None], x.shape[:2]), ctx)
  np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), atol=1e-6)
  # and a different timestep on one frame changes that frame most
  t3 = jnp.broadcast_to(t[:, None], x.shape[:2]).at[:, 1].set(0.0)
  d = np.abs(np.asarray(m(x, t3, ctx)) - np.asarray(y1)).mean(axis=(0, 2, 3, 4))
  assert d[1] > d[0] and d[1] > d[2]


def test_padding_mask_ignores_padded_tokens():
  """Keys beyond seq_lens do not affect the real tokens (upstream k_lens semantics)."""
  cfg = tiny_config()
  m = init_model(cfg)
  x, t, ctx = _inputs(cfg, b=1, f=2)
  s_real = 1 * 2 * 3  # first frame: (4/2) x (6/2) tokens
  x2 = x.at[:, 1].set(123.0)  # garbage in the padded frame
  y1 = m(x, t, ctx, seq_lens=jnp.array([s_real]))
  y2 = m(x2, t, ctx, seq_lens=jnp.array([s_real]))
  np.testing.assert_allclose(np.asarray(y1[:, 0]), np.asarray(y2[:, 0]), atol=1e-5)


def test_invalid_cache_entries_are_ignored_and_valid_ones_used():
  cfg = tiny_config()
  m = init_model(cfg)
  x, t, ctx = _inputs(cfg, b=1)
  ck, cv = m.cross_kv(ctx)
  pos = jnp.arange(3, dtype=jnp.int32)
  y_ref, k_new, v_new = m.forward_tokens(x, t, cross_k=ck, cross_v=cv, frame_pos=pos)
  shape = (cfg.num_layers, 1, 10, cfg.num_heads, cfg.head_dim)
  garbage = (jnp.full(shape, 50.0), jnp.full(shape, -7.0))
  y_masked, _, _ = m.forward_tokens(
    x, t, cross_k=ck, cross_v=cv, frame_pos=pos, extra_kv=(*garbage, jnp.zeros((1, 10), bool))
  )
  np.testing.assert_allclose(np.asarray(y_masked), np.asarray(y_ref), atol=1e-5)
  y_used, _, _ = m.forward_tokens(
    x, t, cross_k=ck, cross_v=cv, frame_pos=pos, extra_kv=(*garbage, jnp.ones((1, 10), bool))
  )
  assert np.abs(np.asarray(y_used) - np.asarray(y_ref)).max() > 1e-3
  assert k_new.shape == v_new.shape == (cfg.num_layers, 1, 3 * 2 * 3, cfg.num_heads, cfg.head_dim)


def test_cached_kv_equals_joint_attention():
  """Feeding a frame's own K/V back as a cache reproduces attention over [cache, self] exactly.

  Frames 0..2 run alone (their K/V are what a cache stores); frames 3..5 then attend to
  that cache plus themselves. Reference: the same 6 frames through one forward where
  the first block is computed first and its K/V are concatenated per layer by hand.
  """
  cfg = tiny_config()
  m = init_model(cfg)
  x, t, ctx = _inputs(cfg, b=1, f=6)
  ck, cv = m.cross_kv(ctx)
  _, k0, v0 = m.forward_tokens(x[:, :3], t, cross_k=ck, cross_v=cv, frame_pos=jnp.arange(3, dtype=jnp.int32))
  valid = jnp.ones((1, k0.shape[2]), bool)
  y1, _, _ = m.forward_tokens(
    x[:, 3:], t, cross_k=ck, cross_v=cv, frame_pos=jnp.arange(3, 6, dtype=jnp.int32), extra_kv=(k0, v0, valid)
  )
  # Same result if the cache is stored in another slot order (keys are already roped).
  perm = jax.random.permutation(jax.random.key(3), k0.shape[2])
  y2, _, _ = m.forward_tokens(
    x[:, 3:],
    t,
    cross_k=ck,
    cross_v=cv,
    frame_pos=jnp.arange(3, 6, dtype=jnp.int32),
    extra_kv=(k0[:, :, perm], v0[:, :, perm], valid),
  )
  np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), atol=1e-5)
  # Frame offset matters: the same block at positions 0..2 differs.
  y3, _, _ = m.forward_tokens(
    x[:, 3:], t, cross_k=ck, cross_v=cv, frame_pos=jnp.arange(3, dtype=jnp.int32), extra_kv=(k0, v0, valid)
  )
  assert np.abs(np.asarray(y3) - np.asarray(y1)).max() > 1e-4


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match="num_heads"):
    WanConfig(dim=30, num_heads=4)
  with pytest.raises(ConfigError, match="dtype"):
    WanConfig(dtype="float64")
  with pytest.raises(ConfigError, match="unknown upstream"):
    WanConfig.from_upstream({"dim": 64, "bogus": 1})


def test_batch_of_videos_of_different_shapes_equals_one_call_per_video():
  """Upstream's batch API: videos of different (frames, h, w) in one call, padded to seq_len, with per-sample
  RoPE grids and a key padding mask, give the same values as one call per video."""
  cfg = tiny_config()
  m = init_model(cfg, seed=3)
  shapes = [(3, 4, 6), (2, 6, 4), (1, 2, 2)]  # 18, 12 and 1 tokens: different grids, frame counts and padding
  keys = jax.random.split(jax.random.key(11), len(shapes) + 1)
  xs = [jax.random.normal(k, (*s, cfg.in_dim)) for k, s in zip(keys, shapes, strict=False)]
  t = jnp.array([999.0, 512.5, 3.0])
  lens = [5, 16, 1]  # prompt lengths: the list of prompts is zero-padded to text_len, as upstream
  ctx = jax.random.normal(keys[-1], (3, cfg.text_len, cfg.text_dim))
  ctx = ctx * (jnp.arange(cfg.text_len)[None, :, None] < jnp.array(lens)[:, None, None])
  prompts = [ctx[i, :n] for i, n in enumerate(lens)]

  batched = jax.jit(lambda m, xs, t, c: m(xs, t, c))(m, xs, t, prompts)
  longer = jax.jit(lambda m, xs, t, c: m(xs, t, c, seq_len=40))(m, xs, t, ctx)  # upstream's seq_len padding
  single = jax.jit(lambda m, x, t, c: m(x, t, c))
  for i, x in enumerate(xs):
    want = np.asarray(single(m, x[None], t[i : i + 1], ctx[i : i + 1])[0])
    assert batched[i].shape == want.shape == (*shapes[i], cfg.out_dim)
    np.testing.assert_allclose(np.asarray(batched[i]), want, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(longer[i]), want, atol=2e-5, rtol=1e-5)
  # The samples really differ (no accidental sharing across the batch).
  assert np.abs(np.asarray(batched[0][:1, :2, :2]) - np.asarray(batched[2])).max() > 1e-3


def test_batch_of_videos_rejects_bad_arguments():
  cfg = tiny_config()
  m = init_model(cfg)
  xs = [jnp.zeros((2, 4, 4, cfg.in_dim)), jnp.zeros((1, 2, 4, cfg.in_dim))]
  ctx = jnp.zeros((2, cfg.text_len, cfg.text_dim))
  with pytest.raises(ValueError, match="one timestep per video"):
    m(xs, jnp.zeros((2, 2)), ctx)
  with pytest.raises(ValueError, match="seq_len 3 is shorter than the longest video \\(8 tokens\\)"):
    m(xs, jnp.zeros(2), ctx, seq_len=3)
  with pytest.raises(ValueError, match="video 1: expected"):
    m([xs[0], jnp.zeros((2, 4, 4, 3))], jnp.zeros(2), ctx)
  with pytest.raises(ValueError, match="seq_lens goes with"):
    m(xs, jnp.zeros(2), ctx, seq_lens=jnp.array([8, 2]))


def test_learned_positions_start_neutral_and_then_place_tokens():
  """``pos_grid``: zero at initialisation (a RoPE-only model's weights load and compute the same), then a token's
  output depends on where it sits in the frame and on whether its frame is at position 0, which RoPE alone cannot
  give from constant inputs; list and batch entry points agree; a different token grid is refused by name."""
  from flax import nnx

  base = tiny_config(patch_size=(1, 2, 2))
  cfg = base.replace(pos_grid=(2, 3))
  assert WanConfig.from_dict(cfg.to_dict()) == cfg
  plain, posed = init_model(base, seed=0), init_model(cfg, seed=0)
  nnx.update(posed, nnx.state(plain))  # the same weights; the learned positions stay zero
  x = jnp.ones((1, 3, 4, 6, base.in_dim))  # constant latents: every token the same
  ctx = jax.random.normal(jax.random.key(1), (1, base.text_len, base.text_dim))
  t = jnp.asarray([500.0])
  flat = np.asarray(plain(x, t, ctx))
  np.testing.assert_array_equal(np.asarray(posed(x, t, ctx)), flat)
  same = flat.reshape(3, 2, 2, 3, 2, -1)[:, :, 0, :, 0]  # [F, H', W', C]: RoPE alone cannot tell tokens apart
  np.testing.assert_allclose(same, np.broadcast_to(same[1:2, :1, :1], same.shape), atol=1e-5)
  posed.pos_embedding[...] = jax.random.normal(jax.random.key(2), posed.pos_embedding.shape)
  posed.first_frame_embedding[...] = jax.random.normal(jax.random.key(3), posed.first_frame_embedding.shape)
  out = np.asarray(posed(x, t, ctx))  # [1, 3, 4, 6, C]
  patches = out.reshape(3, 2, 2, 3, 2, -1)[:, :, 0, :, 0]  # [F, H', W', C] one pixel per token
  assert np.abs(patches[1, 0, 0] - patches[1, 1, 2]).max() > 1e-3  # position in the frame matters
  assert np.abs(patches[0, 0, 0] - patches[1, 0, 0]).max() > 1e-3  # and the first frame is marked
  listed = posed([x[0]], t, ctx)[0]
  np.testing.assert_allclose(np.asarray(listed), out[0], atol=1e-5)
  with pytest.raises(ValueError, match=r"2x3 \(pos_grid\).*native latent size 4x6"):
    posed(jnp.ones((1, 3, 4, 4, base.in_dim)), t, ctx)
  with pytest.raises(ConfigError, match="pos_grid"):
    tiny_config(pos_grid=(2, 0))


def test_learned_frame_positions_mark_the_first_frames_only():
  """``pos_frames``: zero at initialisation (the same outputs as without), then frame position ``p < N`` adds row
  ``p`` of the table to its tokens and later positions add nothing; a negative size is refused."""
  from flax import nnx

  base = tiny_config(patch_size=(1, 2, 2))
  cfg = base.replace(pos_frames=2)
  assert WanConfig.from_dict(cfg.to_dict()) == cfg
  plain, timed = init_model(base, seed=0), init_model(cfg, seed=0)
  nnx.update(timed, nnx.state(plain))
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 6, base.in_dim))
  ctx = jax.random.normal(jax.random.key(1), (1, base.text_len, base.text_dim))
  t = jnp.asarray([500.0])
  np.testing.assert_array_equal(np.asarray(timed(x, t, ctx)), np.asarray(plain(x, t, ctx)))
  table = jax.random.normal(jax.random.key(2), timed.frame_embedding.shape)  # [2, D]
  timed.frame_embedding[...] = table
  frame_pos = jnp.asarray([3, 0, 1, 2], jnp.int32)  # any order: rows follow the positions, not the slots
  got = np.asarray(timed.embed_patches(x, frame_pos=frame_pos)).reshape(4, 6, -1)  # [F, H'W', D]
  want = np.asarray(plain.embed_patches(x, frame_pos=frame_pos)).reshape(4, 6, -1)
  np.testing.assert_allclose(got[0], want[0], atol=1e-6)  # position 3 >= N: nothing
  np.testing.assert_allclose(got[3], want[3], atol=1e-6)  # position 2 >= N: nothing
  np.testing.assert_allclose(got[1] - want[1], np.broadcast_to(table[0], want[1].shape), atol=1e-5)
  np.testing.assert_allclose(got[2] - want[2], np.broadcast_to(table[1], want[2].shape), atol=1e-5)
  assert np.abs(np.asarray(timed(x, t, ctx)) - np.asarray(plain(x, t, ctx))).max() > 1e-3
  with pytest.raises(ConfigError, match="pos_frames"):
    tiny_config(pos_frames=-1)
