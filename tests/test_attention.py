"""The attention dispatcher: every implementation equals the reference einsum softmax.

"chunked" runs here in full; "cudnn" has no GPU here, so its argument preparation (valid keys
reordered into a prefix + key lengths, or a full mask) is run through JAX's own XLA attention
and checked numerically, and the cuDNN call itself is traced and lowered for CUDA. "splash" (TPU)
runs here in the Pallas interpreter, the same kernel, checked numerically; its compiled form is
lowered for TPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax import checkpoint, cli
from longlive_jax.config import ATTENTION_IMPLS, ConfigError, tiny_config
from longlive_jax.model import attention as attn
from longlive_jax.model.attention import dispatch
from longlive_jax.model.attention.chunked import KEY_CHUNK, QUERY_CHUNK
from longlive_jax.model.params import model_from_params, params_of
from longlive_jax.model.wan import block_causal_mask, init_model

# Small chunks so that a few dozen tokens already take several query and key chunks (and padding).
_small_chunks = functools.partial(attn.chunked_attention, query_chunk=8, key_chunk=16)


def _qkv(*, b=2, sq=24, sk=37, h=3, dh=16, dtype=jnp.float32, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(ks[0], (b, sq, h, dh), jnp.float32).astype(dtype)
  k = jax.random.normal(ks[1], (b, sk, h, dh), jnp.float32).astype(dtype)
  v = jax.random.normal(ks[2], (b, sk, h, dh), jnp.float32).astype(dtype)
  return q, k, v


def _masks(*, b, sq, sk, seed=1):
  """Named masks: random key validity (one sample with no valid key at all), padding, streaming
  cache validity (cached keys with empty slots, then the block's own keys), block-causal with a
  broadcast batch axis, and a query-dependent mask with some fully masked queries."""
  rng = np.random.default_rng(seed)
  rand = rng.random((b, sk)) < 0.6
  rand[-1] = False  # the empty-valid edge case
  padding = np.arange(sk)[None, :] < np.array([sk - 5, 3] + [sk] * (b - 2))[:b, None]
  own = min(sq, sk)
  cache = np.concatenate([np.tile(rng.random(sk - own) < 0.5, (1, 1)), np.ones((1, own), bool)], axis=1)
  blk_q = np.arange(sq) // 8
  blk_k = np.arange(sk) * sq // sk // 8
  causal = (blk_k[None, :] <= blk_q[:, None])[None]  # [1, Sq, Sk]
  qdep = rng.random((b, sq, sk)) < 0.3
  qdep[:, ::5] = False  # every fifth query sees no key
  return {
    "none": None,
    "random_keys": rand,
    "padding": padding,
    "stream_cache": cache,
    "block_causal": causal,
    "query_dependent": qdep,
  }


_SHAPES = [dict(b=2, sq=24, sk=37), dict(b=2, sq=40, sk=40), dict(b=1, sq=9, sk=64, h=2, dh=8)]


def _check_chunked(shape, masks, *, skip=True):
  q, k, v = _qkv(**shape)
  fn = jax.jit(functools.partial(_small_chunks, skip_empty_chunks=skip))
  ref_fn = jax.jit(attn.reference_attention)
  for name in masks:
    mask = _masks(b=shape["b"], sq=shape["sq"], sk=shape["sk"])[name]
    m = None if mask is None else jnp.asarray(mask)
    got, ref = fn(q, k, v, key_mask=m), ref_fn(q, k, v, key_mask=m)
    assert got.shape == q.shape[:3] + v.shape[3:] and got.dtype == v.dtype
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5, err_msg=name)


_ALL_MASKS = ("none", "random_keys", "padding", "stream_cache", "block_causal", "query_dependent")


@pytest.mark.parametrize("shape", _SHAPES, ids=lambda s: f"{s['sq']}x{s['sk']}")
def test_chunked_equals_reference_float32(shape):
  _check_chunked(shape, _ALL_MASKS)


def test_chunked_without_skipping_equals_reference():
  _check_chunked(_SHAPES[0], ("random_keys", "query_dependent"), skip=False)


def test_chunked_equals_reference_with_default_chunks():
  """The production chunk sizes: several key chunks of a divisor size, plus a padded query chunk."""
  q, k, v = _qkv(b=1, sq=600, sk=2100, h=2, dh=8)
  mask = jnp.asarray(np.random.default_rng(0).random((1, 2100)) < 0.5).at[:, 1024:2048].set(False)
  got = jax.jit(attn.chunked_attention)(q, k, v, key_mask=mask)
  ref = jax.jit(attn.reference_attention)(q, k, v, key_mask=mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5)
  assert attn.chunked.chunking(2100, 1024) == (700, 3)
  assert attn.chunked.chunking(600, 512) == (300, 2)
  assert attn.chunked.chunking(1031, 1024) == (1024, 2)  # prime: padded


def test_chunked_equals_reference_bfloat16():
  q, k, v = _qkv(b=2, sq=24, sk=37, dtype=jnp.bfloat16)
  masks = _masks(b=2, sq=24, sk=37)
  for name in ("none", "stream_cache", "query_dependent"):
    m = None if masks[name] is None else jnp.asarray(masks[name])
    got = jax.jit(_small_chunks)(q, k, v, key_mask=m)
    ref = jax.jit(attn.reference_attention)(q, k, v, key_mask=m)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(
      np.asarray(got, np.float32), np.asarray(ref, np.float32), atol=3e-2, rtol=3e-2, err_msg=name
    )


def test_chunked_gradient_equals_reference():
  q, k, v = _qkv(b=1, sq=16, sk=37, h=2, dh=8)
  mask = jnp.asarray(_masks(b=1, sq=16, sk=37)["stream_cache"])

  def loss(fn, q, k, v):
    return jnp.sum(jnp.sin(fn(q, k, v, key_mask=mask)))

  got = jax.grad(functools.partial(loss, _small_chunks), argnums=(0, 1, 2))(q, k, v)
  ref = jax.grad(functools.partial(loss, attn.reference_attention), argnums=(0, 1, 2))(q, k, v)
  for g, r in zip(got, ref, strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-4)


def test_chunked_holds_no_whole_score_tensor():
  """The compiled chunked call has no [B, H, Sq, Sk] buffer; the reference does."""
  q, k, v = (jax.ShapeDtypeStruct((1, 2048, 2, 16), jnp.float32) for _ in range(3))
  mask = jax.ShapeDtypeStruct((1, 2048), jnp.bool_)
  ref_hlo = jax.jit(attn.reference_attention).lower(q, k, v, key_mask=mask).as_text()
  chunked_hlo = jax.jit(attn.chunked_attention).lower(q, k, v, key_mask=mask).as_text()
  assert "tensor<1x2x2048x2048xf32>" in ref_hlo
  assert "2048x2048" not in chunked_hlo
  assert f"tensor<1x2x{QUERY_CHUNK}x{KEY_CHUNK}xf32>" in chunked_hlo  # one chunk's scores, head-major


def test_prefix_valid_keys():
  _, k, v = _qkv(b=2, sk=10, h=1, dh=8)
  mask = jnp.array([[0, 1, 1, 0, 1, 0, 0, 0, 1, 0], [1] * 10], bool)
  kp, vp, lengths = attn.prefix_valid_keys(k, v, key_mask=mask)
  assert lengths.tolist() == [4, 10] and lengths.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(kp[0, :4]), np.asarray(k[0, jnp.array([1, 2, 4, 8])]))
  np.testing.assert_array_equal(np.asarray(vp[0, :4]), np.asarray(v[0, jnp.array([1, 2, 4, 8])]))
  np.testing.assert_array_equal(np.asarray(kp[1]), np.asarray(k[1]))


@pytest.mark.parametrize("shape", _SHAPES[:2], ids=lambda s: f"{s['sq']}x{s['sk']}")
def test_cudnn_argument_preparation_equals_reference(shape):
  """The cudnn path with JAX's XLA attention in place of the kernel: same masks, same numbers."""
  q, k, v = _qkv(**shape)
  fn = jax.jit(functools.partial(attn.fused_attention, implementation="xla"))
  for name, mask in _masks(b=shape["b"], sq=shape["sq"], sk=shape["sk"]).items():
    m = None if mask is None else jnp.asarray(mask)
    got = fn(q, k, v, key_mask=m)
    ref = attn.reference_attention(q, k, v, key_mask=m)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_splash_equals_reference_in_the_interpreter(dtype):
  """Splash attention (the Pallas kernel, interpreted on CPU) against the reference: lengths that are not
  multiples of its 128-block (padding), key masks with a fully masked sample, and the dispatcher routing a
  block-causal mask to the chunked path."""
  b, sq, sk = 2, 40, 150
  q, k, v = _qkv(b=b, sq=sq, sk=sk, h=2, dh=16, dtype=dtype)
  tol = dict(atol=1e-5, rtol=1e-5) if dtype == jnp.float32 else dict(atol=3e-2, rtol=3e-2)
  fn = jax.jit(functools.partial(attn.attention, impl="splash"))
  masks = _masks(b=b, sq=sq, sk=sk)
  for name in ("none", "random_keys", "padding", "stream_cache", "block_causal"):
    m = None if masks[name] is None else jnp.asarray(masks[name])
    got = np.asarray(fn(q, k, v, key_mask=m), np.float32)
    ref = np.asarray(attn.reference_attention(q, k, v, key_mask=m), np.float32)
    np.testing.assert_allclose(got, ref, **tol, err_msg=name)
  hlo = fn.lower(q, k, v, key_mask=jnp.asarray(masks["random_keys"])).as_text()
  assert "1x2x40x150" not in hlo and "40x150" not in hlo  # no score tensor outside the kernel


@pytest.mark.parametrize("mask_kind", ["none", "keys"])
def test_splash_lowers_for_tpu_at_full_size(mask_kind):
  """The 1.3B streaming block's self-attention lowers to the Mosaic (TPU) kernel; abstract shapes."""
  b, sq, sk, h, dh = 1, 4680, 18720, 12, 128
  q = jax.ShapeDtypeStruct((b, sq, h, dh), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((b, sk, h, dh), jnp.bfloat16)
  mask = None if mask_kind == "none" else jax.ShapeDtypeStruct((b, sk), jnp.bool_)
  assert attn.resolve_impl("auto", q=q, k=k, key_mask=mask, backend="tpu") == "splash"

  def f(q, k, v, m):
    return attn.splash_attention(q, k, v, key_mask=m)

  assert jax.eval_shape(f, q, k, k, mask).shape == (b, sq, h, dh)
  hlo = jax.jit(f).trace(q, k, k, mask).lower(lowering_platforms=("tpu",)).as_text()
  assert "tpu_custom_call" in hlo
  assert f"{sq}x{sk}" not in hlo and "4736x18816" not in hlo  # neither scores nor a bias, padded or not


def _lowered_streaming_step(impl: str, *, platform: str) -> str:
  """HLO text of a tiny bf16 WanDiT block (48 query tokens) against a 4-slot KV cache with one empty slot
  (48 cached + 48 own keys), attention_impl ``impl``, lowered for ``platform``."""
  cfg = tiny_config(dtype="bfloat16", attention_impl=impl)
  model = init_model(cfg)
  x, t, ctx = _model_inputs(cfg, b=1, f=3)
  cache_len = 4 * 12
  shape = (cfg.num_layers, 1, cache_len, cfg.num_heads, cfg.head_dim)
  ek, ev = jnp.ones(shape, jnp.bfloat16), jnp.ones(shape, jnp.bfloat16)
  valid = jnp.asarray(np.repeat([True, True, False, True], 12)[None])

  def step(model, x, t, ctx, ek, ev, valid):
    ck, cv = model.cross_kv(ctx)
    pos = jnp.arange(4, 7, dtype=jnp.int32)
    return model.forward_tokens(x, t, cross_k=ck, cross_v=cv, frame_pos=pos, extra_kv=(ek, ev, valid))[0]

  return jax.jit(step).trace(model, x, t, ctx, ek, ev, valid).lower(lowering_platforms=(platform,)).as_text()


def test_splash_streaming_model_step_lowers_for_tpu(monkeypatch):
  """A tiny bf16 WanDiT block against a KV cache with attention_impl="splash" lowers for TPU: self- and
  cross-attention through the Mosaic kernel."""
  monkeypatch.setattr(dispatch, "splash_interpret", lambda: False)  # the TPU kernel, not the interpreter
  hlo = _lowered_streaming_step("splash", platform="tpu")
  assert "tpu_custom_call" in hlo
  assert "48x96xf32" not in hlo and "48x16xf32" not in hlo  # no self- (48 x 96) or cross- (48 x 16) scores


@pytest.fixture
def fake_cudnn(monkeypatch):
  """Lets the cuDNN attention trace without a GPU: JAX asks for the cuDNN version while tracing."""
  from jax._src.cudnn import fused_attention_stablehlo as fa

  monkeypatch.setattr(fa, "check_cudnn_version", lambda: 90800)


@pytest.mark.parametrize("mask_kind", ["none", "keys", "query_keys"])
def test_cudnn_traces_and_lowers_for_cuda_at_full_size(fake_cudnn, mask_kind):
  """The 1.3B streaming block's self-attention (4680 queries, 18720 keys, a [B, Sk] cache mask) --
  the call that used to fail with "Bias must have same seq length as QKV" -- lowers to the cuDNN
  fused kernel; abstract shapes, nothing allocated."""
  b, sq, sk, h, dh = 1, 4680, 18720, 12, 128
  q = jax.ShapeDtypeStruct((b, sq, h, dh), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((b, sk, h, dh), jnp.bfloat16)
  mask = {
    "none": None,
    "keys": jax.ShapeDtypeStruct((b, sk), jnp.bool_),
    "query_keys": jax.ShapeDtypeStruct((1, sq, sk), jnp.bool_),
  }[mask_kind]

  def f(q, k, v, m):
    return attn.attention(q, k, v, key_mask=m, impl="cudnn")

  assert jax.eval_shape(f, q, k, k, mask).shape == (b, sq, h, dh)
  hlo = jax.jit(f).trace(q, k, k, mask).lower(lowering_platforms=("cuda",)).as_text()
  assert "__cudnn$fmha" in hlo
  if mask_kind != "query_keys":
    assert f"{sq}x{sk}" not in hlo  # neither scores nor a bias of the whole [Sq, Sk]


def test_cudnn_streaming_model_step_lowers_for_cuda(fake_cudnn):
  """A tiny bf16 WanDiT block against a KV cache with attention_impl="cudnn" lowers for CUDA."""
  hlo = _lowered_streaming_step("cudnn", platform="cuda")
  assert hlo.count("__cudnn$fmha") >= 2  # self- and cross-attention


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a CUDA GPU (runs on a lent device)")
def test_cudnn_equals_reference_on_gpu():
  """On a GPU: the cuDNN kernel itself against the reference, bfloat16, every mask kind."""
  shape = dict(b=2, sq=128, sk=384, h=4, dh=64)
  q, k, v = _qkv(**shape, dtype=jnp.bfloat16)
  assert attn.resolve_impl("auto", q=q, k=k) == "cudnn"
  fn = jax.jit(functools.partial(attn.attention, impl="cudnn"))
  for name, mask in _masks(b=2, sq=128, sk=384).items():
    m = None if mask is None else jnp.asarray(mask)
    got = np.asarray(fn(q, k, v, key_mask=m), np.float32)
    ref = np.asarray(attn.reference_attention(q, k, v, key_mask=m), np.float32)
    np.testing.assert_allclose(got, ref, atol=3e-2, rtol=3e-2, err_msg=name)


def test_cudnn_refuses_float32():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match="bfloat16 or float16"):
    attn.fused_attention(q, k, v)


def test_resolve_auto():
  small = jax.ShapeDtypeStruct((1, 64, 2, 16), jnp.float32)
  big = jax.ShapeDtypeStruct((1, 4680, 12, 128), jnp.float32)
  big_k = jax.ShapeDtypeStruct((1, 18720, 12, 128), jnp.float32)
  bf = jax.ShapeDtypeStruct((1, 4680, 12, 128), jnp.bfloat16)
  bf_k = jax.ShapeDtypeStruct((1, 18720, 12, 128), jnp.bfloat16)
  assert attn.resolve_impl("auto", q=small, k=small, backend="cpu") == "xla"
  assert attn.resolve_impl("auto", q=big, k=big_k, backend="cpu") == "chunked"
  assert attn.resolve_impl("auto", q=bf, k=bf_k, backend="tpu") == "splash"
  half = jax.ShapeDtypeStruct((1, 4680, 24, 64), jnp.bfloat16)  # head size 64: not a TPU lane multiple
  assert attn.resolve_impl("auto", q=half, k=half, backend="tpu") == "chunked"
  causal = jax.ShapeDtypeStruct((1, 4680, 18720), jnp.bool_)
  assert attn.resolve_impl("auto", q=bf, k=bf_k, key_mask=causal, backend="tpu") == "chunked"
  assert attn.resolve_impl("splash", q=bf, k=bf_k, key_mask=causal) == "chunked"  # no segment pattern
  assert attn.resolve_impl("auto", q=bf, k=bf_k, backend="cuda") == "cudnn"
  assert attn.resolve_impl("auto", q=big, k=big_k, backend="cuda") == "chunked"  # float32: no cuDNN kernel
  assert attn.resolve_impl("auto", q=small, k=small, backend="cuda") == "xla"
  for impl in ("xla", "chunked", "cudnn", "splash"):
    assert attn.resolve_impl(impl, q=small, k=small) == impl
  with pytest.raises(ValueError, match="auto, xla, chunked, cudnn, splash"):
    attn.resolve_impl("flash", q=small, k=small)


def test_dispatcher_routes_and_override(monkeypatch):
  calls = []
  monkeypatch.setattr(dispatch, "chunked_attention", lambda *a, **kw: calls.append("chunked") or a[2])
  monkeypatch.setattr(dispatch, "reference_attention", lambda *a, **kw: calls.append("xla") or a[2])
  q, k, v = _qkv(sq=8, sk=8)
  attn.attention(q, k, v, impl="auto")
  attn.attention(q, k, v, impl="chunked")
  with attn.override("chunked"):
    attn.attention(q, k, v, impl="xla")
  attn.attention(q, k, v, impl="xla")
  assert calls == ["xla", "chunked", "chunked", "xla"]
  with pytest.raises(ValueError, match="one of"):
    with attn.override("flash"):
      pass


def test_config_accepts_the_implementations_and_names_them_otherwise():
  assert tiny_config().attention_impl == "auto"
  assert ATTENTION_IMPLS == ("auto", "xla", "chunked", "cudnn", "splash")
  for impl in ("auto", "xla", "chunked", "splash"):
    assert tiny_config(attention_impl=impl).attention_impl == impl
  assert tiny_config(attention_impl="cudnn", dtype="bfloat16").attention_impl == "cudnn"
  with pytest.raises(ConfigError, match="'auto', 'xla', 'chunked', 'cudnn', 'splash', got 'flash'"):
    tiny_config(attention_impl="flash")
  with pytest.raises(ConfigError, match="cudnn.*bfloat16"):
    tiny_config(attention_impl="cudnn")  # float32


# ---------------------------------------------------------------------------------------------
# The model end to end: "chunked" (forced to several chunks) equals "xla".


def _model_inputs(cfg, *, b, f, h=8, w=8, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(ks[0], (b, f, h, w, cfg.in_dim)).astype(jnp.float32)
  t = jax.random.uniform(ks[1], (b,), minval=0, maxval=1000)
  ctx = jax.random.normal(ks[2], (b, cfg.text_len, cfg.text_dim))
  return x, t, ctx


@pytest.fixture
def small_chunks(monkeypatch):
  monkeypatch.setattr(dispatch, "chunked_attention", _small_chunks)


def _models():
  xla = init_model(tiny_config(attention_impl="xla"))
  chunked = model_from_params(tiny_config(attention_impl="chunked"), params_of(xla))
  return xla, chunked


@jax.jit
def _forward(model, x, t, ctx, seq_lens):
  return model(x, t, ctx, seq_lens=seq_lens)


@jax.jit
def _forward_tokens(model, x, t, ctx, key_mask, extra_kv):
  ck, cv = model.cross_kv(ctx)
  f0 = 0 if extra_kv is None else extra_kv[0].shape[2] // 16
  pos = jnp.arange(f0, f0 + x.shape[1], dtype=jnp.int32)
  return model.forward_tokens(x, t, cross_k=ck, cross_v=cv, frame_pos=pos, key_mask=key_mask, extra_kv=extra_kv)


def test_model_forward_chunked_equals_xla(small_chunks):
  """Bidirectional forward with a padding mask, and teacher forcing with a block-causal mask."""
  xla, chunked = _models()
  x, t, ctx = _model_inputs(xla.cfg, b=2, f=3)  # 48 tokens: 6 query chunks, 3 key chunks
  lens = jnp.array([48, 29])
  np.testing.assert_allclose(
    np.asarray(_forward(chunked, x, t, ctx, lens)), np.asarray(_forward(xla, x, t, ctx, lens)), atol=2e-5
  )
  mask = block_causal_mask(num_frames=3, block_frames=1, tokens_per_frame=16)[None]  # [1, S, S]
  y_ref = _forward_tokens(xla, x, t, ctx, mask, None)[0]
  y = _forward_tokens(chunked, x, t, ctx, mask, None)[0]
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=2e-5)


def test_streaming_block_chunked_equals_xla(small_chunks):
  """One streaming block against a KV cache with an empty slot: output and the block's K/V agree."""
  xla, chunked = _models()
  x, t, ctx = _model_inputs(xla.cfg, b=1, f=6)
  _, k0, v0 = _forward_tokens(xla, x[:, :3], t, ctx, None, None)  # 16 tokens per frame
  valid = jnp.asarray(np.repeat([True, False, True], 16)[None])  # frame 1's slot empty
  ref = _forward_tokens(xla, x[:, 3:], t, ctx, None, (k0, v0, valid))
  got = _forward_tokens(chunked, x[:, 3:], t, ctx, None, (k0, v0, valid))
  for g, r in zip(got, ref, strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5)


def test_streaming_block_splash_equals_xla():
  """The same streaming block with attention_impl="splash" (interpreted here): output and K/V agree."""
  xla = init_model(tiny_config(attention_impl="xla"))
  splash = model_from_params(tiny_config(attention_impl="splash"), params_of(xla))
  x, t, ctx = _model_inputs(xla.cfg, b=1, f=6)
  _, k0, v0 = _forward_tokens(xla, x[:, :3], t, ctx, None, None)
  valid = jnp.asarray(np.repeat([True, False, True], 16)[None])
  ref = _forward_tokens(xla, x[:, 3:], t, ctx, None, (k0, v0, valid))
  got = _forward_tokens(splash, x[:, 3:], t, ctx, None, (k0, v0, valid))
  for g, r in zip(got, ref, strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5)


def test_cli_attention_option_overrides_the_checkpoint(tmp_path, monkeypatch, capsys):
  """``generate --attention chunked`` traces every attention call as chunked; ``cudnn`` with a float32
  checkpoint is refused before loading, naming the dtype."""
  cfg = tiny_config(attention_impl="xla")
  ckpt = checkpoint.save(tmp_path / "ckpt", cfg=cfg, params=params_of(init_model(cfg)))
  np.save(tmp_path / "p.npy", np.random.default_rng(0).standard_normal((8, cfg.text_dim)).astype(np.float32))
  base = ["generate", str(tmp_path / "p.npy"), "--checkpoint", str(ckpt), "--frames", "3"]
  base += ["--height", "4", "--width", "6", "--window", "9", "--quiet"]
  assert cli.main([*base, "--attention", "cudnn", "--out", str(tmp_path / "c.npz")]) == 2
  assert "'cudnn' needs dtype bfloat16" in capsys.readouterr().err
  seen = []
  resolve = dispatch.resolve_impl
  monkeypatch.setattr(dispatch, "resolve_impl", lambda impl, **kw: seen.append(impl) or resolve(impl, **kw))
  assert cli.main([*base, "--attention", "chunked", "--out", str(tmp_path / "a.npz")]) == 0
  assert seen and set(seen) == {"chunked"}
  seen.clear()
  assert cli.main([*base, "--out", str(tmp_path / "b.npz")]) == 0
  assert seen and set(seen) == {"xla"}  # the checkpoint's attention_impl
  with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
    np.testing.assert_allclose(a["latents"], b["latents"], atol=1e-5)
