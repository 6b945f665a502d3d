"""The vae stage's decoder fine-tune (``options.freeze_encoder``) from a VAE export.

A file of its own (it was part of tests/test_toyworld.py's stage test): pytest-xdist runs test files side by side,
and the fine-tune's train step is a compile of its own (the frozen encoder changes the gradient program).
"""

import jax
import numpy as np
import pytest
from flax import nnx

FAST = {"xla_backend_optimization_level": 0}  # compile time only: the same computations


def test_decoder_fine_tune_keeps_the_encoder_and_its_latent_statistics(tmp_path):
  from longlive_jax import checkpoint
  from longlive_jax.toyworld import data
  from longlive_jax.train.optim import OptimConfig
  from longlive_jax.train.stages.vae import Options, VAEStage
  from longlive_jax.vae.config import VAEConfig
  from longlive_jax.vae.model import init_vae

  # the toy world's VAE architecture (3 levels) at the smallest width, as tests/test_toyworld.py's stage test
  cfg = VAEConfig(dim=4, num_res_blocks=1, dim_mult=(1, 2, 4), temperal_downsample=(True, True))
  # the export of an earlier vae stage: its weights and the latent statistics it measured (not the configured ones)
  measured = cfg.replace(latent_mean=tuple(0.1 * i - 0.5 for i in range(16)), latent_std=(0.5,) * 8 + (2.0,) * 8)
  init_params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(init_vae(measured, seed=3), nnx.Param)))
  out = checkpoint.save(
    tmp_path / "vae", components={"vae": (init_params, measured.to_dict())}, meta={"stage": "vae"}, overwrite=True
  )
  # a decoder fine-tune (freeze_encoder): the encoder and the latent statistics stay exactly init's, the decoder moves
  dec = VAEStage(
    vae_config=cfg,
    optim_config=OptimConfig(lr=1e-3),
    options=Options(init=str(out), freeze_encoder=True, crop=16),
    ema_decay=0.9,
  )
  src = data.ClipSource(num_records=8, latent_frames=2, size=32)
  batch = dec.make_batch([src[i] for i in range(2)])
  assert batch["video"].shape == (2, 5, 16, 16, 3)
  s2 = dec.init(jax.random.PRNGKey(5), mesh=None)
  step = jax.jit(dec.step, compiler_options=FAST)
  for _ in range(2):
    s2, _ = step(s2, batch)
  for tree in (s2.params, dec.export(s2)):
    for k in ("encoder", "conv1"):
      jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, tree[k]), init_params[k])
  moved = jax.tree.leaves(
    jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), s2.params["decoder"], init_params["decoder"])
  )
  assert max(moved) > 0
  assert dec.trained_config(s2).latent_mean == measured.latent_mean != cfg.latent_mean
  assert dec.trained_config(s2).latent_std == measured.latent_std != cfg.latent_std
  with pytest.raises(ValueError, match="freeze_encoder: needs options.init"):
    Options(freeze_encoder=True)
