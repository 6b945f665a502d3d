"""The vae stage's ``latent_noise``: the decoder sees the posterior sample plus noise of a per-clip level drawn
uniformly in ``[0, latent_noise]`` normalised latent units, the encoder's outputs are untouched."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax.train.optim import OptimConfig
from longlive_jax.train.stages.vae import Options, VAEStage, reconstruct


class _StubVAE:
  """Encodes every chunk to a fixed posterior (``log_var`` -30: the sample is ``mu`` to 3e-7) and records what the
  decoder is given, so the noise that reaches the decoder can be measured exactly."""

  def __init__(self, mu):
    self.mu, self.decoded, self.encoded = mu, [], 0  # mu [B, F, h, w, z]

  def encode_moments_chunk(self, video, feats, *, first):
    i, self.encoded = self.encoded, self.encoded + 1
    feats.put(feats.take((1,), jnp.float32))  # a one-buffer cache, carried as the real one is
    return self.mu[:, i : i + 1], jnp.full_like(self.mu[:, i : i + 1], -30.0)

  def decode_chunk(self, z, feats, *, first):
    self.decoded.append(z)
    feats.put(feats.take((1,), jnp.float32))
    return jnp.zeros((z.shape[0], 1 if first else 4, 8, 8, 3))


def test_latent_noise_reaches_the_decoder_at_a_per_clip_level_scaled_per_channel():
  b, f = 64, 3
  mu = jax.random.normal(jax.random.key(3), (b, f, 6, 6, 2))  # [B, F, h, w, z]
  video = jnp.zeros((b, 1 + 4 * (f - 1), 8, 8, 3))
  key = jax.random.key(0)
  plain = _StubVAE(mu)
  _, _, mu_plain, *_ = reconstruct(plain, video, key)
  z_plain = jnp.concatenate(plain.decoded, axis=1)
  np.testing.assert_allclose(np.asarray(z_plain), np.asarray(mu), atol=1e-5)  # no noise option: the posterior
  scale = np.array([0.5, 2.0], np.float32)
  noisy = _StubVAE(mu)
  _, _, mu_noisy, *_ = reconstruct(noisy, video, key, noise_scale=scale)
  np.testing.assert_array_equal(np.asarray(mu_noisy), np.asarray(mu_plain))  # the encoder's side is unchanged
  eps = (np.asarray(jnp.concatenate(noisy.decoded, axis=1)) - np.asarray(mu)) / scale  # [B, F, h, w, z]
  level = eps.reshape(b, -1).std(axis=1)  # one level per clip, the same for both channels after scaling
  per_channel = eps.reshape(b, -1, 2).std(axis=1)  # [B, z]
  np.testing.assert_allclose(per_channel[:, 0], per_channel[:, 1], rtol=0.35, atol=0.02)
  assert level.min() >= 0 and level.max() < 1.15  # u ~ U(0, 1)
  assert 0.35 < level.mean() < 0.65 and np.corrcoef(per_channel[:, 0], per_channel[:, 1])[0, 1] > 0.95
  assert (level > 0.8).sum() >= 5 and (level < 0.2).sum() >= 5  # spread over the whole range, not one level


def test_latent_noise_options_are_checked():
  with pytest.raises(ValueError, match="latent_noise: needs options.freeze_encoder"):
    Options(latent_noise=0.5)
  with pytest.raises(ValueError, match="latent_noise: must be >= 0"):
    Options(latent_noise=-1.0, init="x", freeze_encoder=True)
  assert Options(latent_noise=0.5, init="x", freeze_encoder=True).latent_noise == 0.5


def test_latent_noise_is_in_units_of_the_frozen_encoders_latent_std(tmp_path):
  cfg, init = _frozen_vae(tmp_path)
  stage = VAEStage(
    vae_config=cfg.replace(latent_std=(1.0, 1.0)),  # the configured statistics are not the frozen encoder's
    optim_config=OptimConfig(),
    options=Options(init=str(init), freeze_encoder=True, latent_noise=0.4),
  )
  np.testing.assert_allclose(stage._noise_scale(), [0.2, 1.2], rtol=1e-6)
  plain = VAEStage(vae_config=cfg, optim_config=OptimConfig(), options=Options(init=str(init), freeze_encoder=True))
  assert plain._noise_scale() is None


def test_latent_scale_stretches_each_channel_about_the_mean_by_a_per_clip_factor():
  b, f = 64, 3
  mu = jax.random.normal(jax.random.key(4), (b, f, 6, 6, 2))  # [B, F, h, w, z]
  video = jnp.zeros((b, 1 + 4 * (f - 1), 8, 8, 3))
  mean = np.array([0.3, -1.0], np.float32)
  vae = _StubVAE(mu)
  _, _, mu_out, *_ = reconstruct(vae, video, jax.random.key(0), stretch=(mean, 0.5))
  np.testing.assert_array_equal(np.asarray(mu_out), np.asarray(mu))  # the encoder's side is unchanged
  z = np.asarray(jnp.concatenate(vae.decoded, axis=1))  # [B, F, h, w, z]
  f0 = ((z - mean) / (np.asarray(mu) - mean))[:, 0, 0, 0]  # [B, z]: the factor read at one latent
  # the same factor at every frame and position: z - mean = f0 (mu - mean) everywhere
  np.testing.assert_allclose(z - mean, f0[:, None, None, None] * (np.asarray(mu) - mean), rtol=1e-4, atol=1e-4)
  assert f0.min() >= 1.0 and f0.max() <= 1.5  # 1 + U(0, 1) * 0.5
  assert (f0 > 1.4).sum() >= 5 and (f0 < 1.1).sum() >= 5  # spread over the whole range
  assert abs(np.corrcoef(f0[:, 0], f0[:, 1])[0, 1]) < 0.4  # drawn per channel, not one factor per clip


def test_latent_scale_options_are_checked_and_use_the_frozen_mean(tmp_path):
  with pytest.raises(ValueError, match="latent_scale: needs options.freeze_encoder"):
    Options(latent_scale=0.5)
  with pytest.raises(ValueError, match="latent_scale: must be >= 0"):
    Options(latent_scale=-0.1, init="x", freeze_encoder=True)
  cfg, init = _frozen_vae(tmp_path)
  stage = VAEStage(
    vae_config=cfg.replace(latent_mean=(0.0, 0.0)),  # the configured statistics are not the frozen encoder's
    optim_config=OptimConfig(),
    options=Options(init=str(init), freeze_encoder=True, latent_scale=0.4),
  )
  mean, s = stage._stretch()
  np.testing.assert_allclose(mean, [0.1, -0.2], rtol=1e-6)
  assert s == pytest.approx(0.4)
  plain = VAEStage(vae_config=cfg, optim_config=OptimConfig(), options=Options(init=str(init), freeze_encoder=True))
  assert plain._stretch() is None


def _frozen_vae(tmp_path):
  """A tiny VAE config with latent statistics (0.1, -0.2) +- (0.5, 3.0) and its zero-weight checkpoint (an init
  for a frozen encoder)."""
  from flax import nnx

  from longlive_jax import checkpoint
  from longlive_jax.vae.config import VAEConfig
  from longlive_jax.vae.model import abstract_vae

  cfg = VAEConfig(dim=4, num_res_blocks=1, z_dim=2, latent_mean=(0.1, -0.2), latent_std=(0.5, 3.0))
  params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), nnx.to_pure_dict(nnx.state(abstract_vae(cfg), nnx.Param)))
  init = checkpoint.save(tmp_path / "vae", components={"vae": (params, cfg.to_dict())}, meta={}, overwrite=True)
  return cfg, init
