"""Wan VAE: golden parity, streaming equals full decode/encode, one steady-state compilation, converter errors.

Tiny config only (dim 8, the golden case's shape). Every compiled program is shared between
tests where the shapes allow it (the VAE module is a pytree argument, weights are not constants).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax import golden
from longlive_jax.convert import CheckpointError, sources, torch_save, wan_vae
from longlive_jax.vae import stream
from longlive_jax.vae.config import VAEConfig, get_preset, tiny_vae_config
from longlive_jax.vae.golden_case import run_golden
from longlive_jax.vae.model import abstract_vae, count_params, init_vae


@pytest.fixture(scope="module")
def vae_case(golden_root):
  return golden_root / "wan_vae"


@pytest.fixture(scope="module")
def golden_sd(vae_case):
  src = sources.open_state_dict(vae_case / "weights.safetensors")
  return {k: src[k] for k in src}


@pytest.fixture(scope="module")
def golden_vae(golden_sd):
  cfg = tiny_vae_config()
  return wan_vae.vae_from_params(cfg, wan_vae.convert(golden_sd, cfg))


def test_golden_parity(vae_case):
  res = run_golden(vae_case, golden.read_case(vae_case))
  names = {c.name for c in res}
  assert {"mu", "latent", "decode_raw", "pixel", "z_stream_pixel", "z_stream_pixel_chunk_reset"} <= names
  print("; ".join(f"{c.name}: max|err| {c.max_abs_err:.2e} (atol {c.atol:.0e})" for c in res))
  assert all(c.passed for c in res), [c for c in res if not c.passed]


def test_presets_match_upstream_sizes():
  """Parameter counts measured on upstream ``_video_vae`` (reference notes): 126,892,531 for Wan2.1."""
  assert count_params(abstract_vae(get_preset("wan2.1-vae"))) == 126_892_531
  assert count_params(abstract_vae(get_preset("tiny"))) == 924_491
  assert len(wan_vae.expected_shapes(get_preset("wan2.1-vae"))) == 194


def _stream(vae, z, sizes):
  b, _, h, w, _ = z.shape
  cache = stream.init_decode_cache(vae, batch=b, height=h, width=w)
  out, start = [], 0
  for n in sizes:
    px, cache = stream.decode_step(vae, cache, z[:, start : start + n], clamp=False)
    out.append(np.asarray(px))
    start += n
  return out, cache


def test_streaming_decode_equals_full_decode(golden_vae):
  z = jax.random.normal(jax.random.key(3), (1, 7, 4, 4, 16))
  blocks, cache = _stream(golden_vae, z, [3, 2, 2])
  assert [b.shape[1] for b in blocks] == [9, 8, 8]  # latent 0 -> 1 frame, later latents -> 4
  full = np.asarray(stream.decode(golden_vae, z, clamp=False))
  assert full.shape == (1, 25, 32, 32, 3)
  np.testing.assert_allclose(np.concatenate(blocks, axis=1), full, atol=1e-6, rtol=0)
  assert int(cache.latents) == 7
  # The clamp is upstream's decode_to_pixel: exactly clip of the raw output.
  clamped = np.asarray(stream.decode(golden_vae, z))
  np.testing.assert_array_equal(clamped, np.clip(full, -1, 1))
  assert 0 < np.mean(np.abs(full) > 1)  # random weights do leave [-1, 1], so the clamp is exercised


def test_steady_state_step_compiles_once(golden_vae):
  """Two programs per stream shape: latent 0, and one for every later latent whatever the block sizes or clamp."""
  z = jax.random.normal(jax.random.key(4), (1, 14, 4, 4, 16))
  _stream(golden_vae, z, [1, 1])  # compiles (or reuses) both programs for this shape
  first, steady = stream.decode_first._cache_size(), stream.decode_steady._cache_size()
  cache = stream.init_decode_cache(golden_vae, batch=1, height=4, width=4)
  px, cache = stream.decode_step(golden_vae, cache, z[:, :2])
  assert px.shape == (1, 5, 32, 32, 3)
  structure, nbytes = jax.tree.structure(cache), cache.nbytes
  start = 2
  for i, n in enumerate([3, 1, 2, 4, 2]):
    px, cache = stream.decode_step(golden_vae, cache, z[:, start : start + n], clamp=bool(i % 2))
    start += n
    assert px.shape == (1, 4 * n, 32, 32, 3)
    assert jax.tree.structure(cache) == structure and cache.nbytes == nbytes  # fixed-shape pytree
  assert int(cache.latents) == 14
  assert stream.decode_first._cache_size() == first
  assert stream.decode_steady._cache_size() == steady


def test_scanned_block_program_equals_per_latent_steps(golden_vae):
  """``decode_steady`` on a whole block (``lax.scan`` inside one program) equals the per-latent steps."""
  z = jax.random.normal(jax.random.key(6), (1, 4, 4, 4, 16))
  per_latent, _ = _stream(golden_vae, z, [1, 3])
  cache = stream.init_decode_cache(golden_vae, batch=1, height=4, width=4)
  _, cache = stream.decode_step(golden_vae, cache, z[:, :1], clamp=False)
  block, _ = stream.decode_steady(golden_vae, cache, z[:, 1:], jnp.asarray(False))
  np.testing.assert_allclose(np.asarray(block), per_latent[1], atol=1e-6, rtol=0)


def test_streaming_encode_equals_full_encode(golden_vae):
  video = jax.random.uniform(jax.random.key(5), (1, 9, 32, 32, 3), minval=-1, maxval=1)
  full = np.asarray(stream.encode(golden_vae, video))
  cache = stream.init_encode_cache(golden_vae, batch=1, height=32, width=32)
  a, cache = stream.encode_step(golden_vae, cache, video[:, :5])
  b, cache = stream.encode_step(golden_vae, cache, video[:, 5:])
  assert a.shape[1] == 2 and b.shape[1] == 1 and int(cache.frames) == 9
  np.testing.assert_allclose(np.concatenate([a, b], axis=1), full, atol=1e-6, rtol=0)
  mu = np.asarray(stream.encode(golden_vae, video, normalize=False))
  np.testing.assert_allclose(np.asarray(stream.normalize_latent(jnp.asarray(mu))), full, atol=1e-6)
  np.testing.assert_allclose(np.asarray(stream.denormalize_latent(jnp.asarray(full))), mu, atol=1e-5)


def test_three_level_vae_streams_like_it_decodes():
  """3 levels (4x in space, 4x in time: the toy world's VAE): streaming decode / encode equal the full ones."""
  cfg = tiny_vae_config(dim_mult=(1, 2, 4), temperal_downsample=(True, True))
  assert (cfg.space_stride, cfg.time_stride) == (4, 4)
  vae = init_vae(cfg, seed=1)
  video = jax.random.uniform(jax.random.key(7), (1, 9, 16, 16, 3), minval=-1, maxval=1)
  z = stream.encode(vae, video)
  assert z.shape == (1, 3, 4, 4, 16)
  cache = stream.init_encode_cache(vae, batch=1, height=16, width=16)
  a, cache = stream.encode_step(vae, cache, video[:, :5])
  b, _ = stream.encode_step(vae, cache, video[:, 5:])
  np.testing.assert_allclose(np.concatenate([a, b], axis=1), np.asarray(z), atol=1e-6, rtol=0)
  zz = jax.random.normal(jax.random.key(8), (1, 5, 4, 4, 16))
  blocks, _ = _stream(vae, zz, [2, 1, 2])
  assert [x.shape[1] for x in blocks] == [5, 4, 8]
  full = np.asarray(stream.decode(vae, zz, clamp=False))
  assert full.shape == (1, 17, 16, 16, 3)
  np.testing.assert_allclose(np.concatenate(blocks, axis=1), full, atol=1e-6, rtol=0)


def test_bad_inputs_are_named(golden_vae):
  with pytest.raises(ValueError, match="1 \\+ 4k frames.*got 6"):
    stream.encode(golden_vae, jnp.zeros((1, 6, 32, 32, 3)))
  with pytest.raises(ValueError, match="multiples of 8"):
    stream.encode(golden_vae, jnp.zeros((1, 5, 30, 32, 3)))
  with pytest.raises(ValueError, match=r"\[B, F, h, w, 16\].*\(1, 3, 4, 4, 8\)"):
    stream.decode(golden_vae, jnp.zeros((1, 3, 4, 4, 8)))
  cache = stream.init_decode_cache(golden_vae, batch=1, height=4, width=4)
  with pytest.raises(ValueError, match="buffer 0 has shape .*needs"):
    stream.decode_step(golden_vae, cache, jnp.zeros((1, 1, 6, 4, 16)))


# ---------------------------------------------------------------------------------------------- converter


def test_missing_key_is_named(golden_sd):
  sd = dict(golden_sd)
  del sd["decoder.upsamples.3.time_conv.weight"]
  with pytest.raises(CheckpointError, match=r"missing key.*'decoder\.upsamples\.3\.time_conv\.weight' \(shape"):
    wan_vae.convert(sd, tiny_vae_config())


def test_shape_mismatch_names_key_and_both_shapes(golden_sd):
  sd = dict(golden_sd)
  sd["encoder.middle.1.norm.gamma"] = np.ones((32, 1, 1, 1), np.float32)
  with pytest.raises(CheckpointError, match=r"'encoder\.middle\.1\.norm\.gamma'.*\(32, 1, 1, 1\).*\(32, 1, 1\)"):
    wan_vae.convert(sd, tiny_vae_config())
  with pytest.raises(
    CheckpointError,
    match=r"'decoder\.conv1\.weight': checkpoint has \(32, 16, 3, 3, 3\), config expects \(384, 16,.*more shape",
  ):
    wan_vae.convert(golden_sd, get_preset("wan2.1-vae"))


def test_unexpected_key_is_named(golden_sd):
  sd = dict(golden_sd, **{"decoder.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(CheckpointError, match=r"unexpected key.*decoder\.extra\.weight"):
    wan_vae.convert(sd, tiny_vae_config())
  params = wan_vae.convert(sd, tiny_vae_config(), strict=False)  # tolerated on request
  with pytest.raises(CheckpointError, match=r"VAE parameter tree: unexpected parameter.*'extra'"):
    wan_vae.vae_from_params(tiny_vae_config(), {**params, "extra": np.zeros(3, np.float32)})


def test_round_trip_and_layout(golden_sd):
  cfg = tiny_vae_config()
  params = wan_vae.convert(golden_sd, cfg)
  w = golden_sd["decoder.upsamples.3.time_conv.weight"]  # [O, I, kT, kH, kW]
  k = params["decoder"]["upsamples"][3]["time_conv"]["kernel"]  # [kT, kH, kW, I, O]
  np.testing.assert_array_equal(k[2, 0, 0], w[:, :, 2, 0, 0].T)
  back = wan_vae.to_upstream(params, cfg)
  assert set(back) == set(golden_sd)
  for key, value in golden_sd.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_load_wan21_vae_pth(tmp_path, golden_sd, golden_vae):
  """``Wan2.1_VAE.pth`` is a bare torch state dict: read by our torch-free reader, config inferred from shapes."""
  path = tmp_path / "Wan2.1_VAE.pth"
  torch_save.save(path, golden_sd)
  vae = wan_vae.load_vae(path, VAEConfig.from_upstream({"dim": 8, "z_dim": 16, "dropout": 0.0}))
  assert vae.cfg == tiny_vae_config()
  inferred = wan_vae.infer_config(sources.open_state_dict(path))
  assert inferred == tiny_vae_config()
  for a, b in zip(jax.tree.leaves(vae), jax.tree.leaves(golden_vae), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(CheckpointError, match="missing 'encoder.conv1.weight'"):
    wan_vae.infer_config({"conv2.weight": np.zeros((16, 16, 1, 1, 1))})


def test_eager_init_draws_equal_jax_random_normal():
  """The VAE's eager init slices one power-of-two-long draw per layer (a handful of compiles, not one per shape):
  the values must be exactly the eager ``offset + std * jax.random.normal(key, shape)`` cast to the param dtype.
  Under a trace (jitted init) XLA fuses the scaling into the draw: the same values to an ulp."""
  from flax import nnx

  from longlive_jax.vae.layers import _init

  fast, ref = nnx.Rngs(7), nnx.Rngs(7)
  for shape, std, dtype, offset in [
    ((3, 3, 3, 4, 8), 0.3, jnp.float32, None),
    ((5,), 0.2, jnp.float32, 1.0),
    ((1,), 0.1, jnp.float32, None),
    ((3, 3, 6, 10), 0.05, jnp.bfloat16, None),
  ]:
    got = _init(fast, shape, std, dtype, offset=offset)
    want = std * jax.random.normal(ref.params(), shape, jnp.float32)
    want = (want if offset is None else offset + want).astype(dtype)
    assert got.shape == shape and got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
  traced = jax.jit(lambda: _init(nnx.Rngs(7), (3, 3, 3, 4, 8), 0.3, jnp.float32))()
  eager = np.asarray(_init(nnx.Rngs(7), (3, 3, 3, 4, 8), 0.3, jnp.float32))
  np.testing.assert_allclose(np.asarray(traced), eager, rtol=3e-7, atol=0)
