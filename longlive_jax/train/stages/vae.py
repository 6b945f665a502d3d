"""VAE stage: trains a (small) Wan VAE on videos with Wan's reconstruction + KL objective.

One step, for videos ``x [B, T, H, W, 3]`` in [-1, 1] (``T = 1 + 4k``):

  * encode causally, chunk by chunk as at inference (frame 0 alone, then 4-frame chunks, the feature
    cache carried: :meth:`~longlive_jax.vae.model.WanVAE.encode_moments_chunk`) into the posterior
    ``N(mu, exp(log_var))``, ``log_var`` clamped to [-30, 20] as upstream;
  * sample ``z = mu + exp(log_var / 2) eps`` and decode it latent by latent with the carried cache;
  * ``loss = mean |x - x_hat| + l2_weight mean (x - x_hat)^2 + kl_weight * mean KL(q || N(0, 1))`` (per element
    means), then AdamW.

The raw latent's per-channel mean and standard deviation are tracked as running averages of the
batches' ``mu`` (``stats_momentum``) in the state; the export stores them as the VAE's
``latent_mean`` / ``latent_std``, so the DiT sees normalised latents as with Wan's published values.

Export: a checkpoint folder holding only the ``vae`` component (:func:`longlive_jax.checkpoint.save`
with no DiT), which :func:`longlive_jax.pipeline.load_vae` and the whole-model assembly read.
Data ``videos``: records with ``video`` uint8 ``[T, H, W, 3]`` (e.g. ``data.source: toyworld``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from longlive_jax.sharding import MeshConfig, init_sharded, make_mesh
from longlive_jax.train import optim
from longlive_jax.vae.config import VAEConfig
from longlive_jax.vae.layers import Feats
from longlive_jax.vae.model import WanVAE, abstract_vae

Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
  """``options:`` of the vae stage.

  Attributes:
    vae: :class:`~longlive_jax.vae.config.VAEConfig` fields (e.g. ``{dim: 8, num_res_blocks: 1}``).
    kl_weight: weight of the per-element KL term against the per-pixel L1.
    stats_momentum: running-average momentum of the latent statistics.
    crop: train on square ``crop x crop`` windows of the clips (the VAE is convolutional, so it runs at any size
      later): long clips at small crops train the causal cache's steady state over many chunks for the cost of
      short full-size clips. The window of a record is a function of its ``index`` (exact resume).
    l2_weight: weight of an added per-pixel squared error (L1 alone tends to the per-pixel median, which on
      scenes of small objects on plain backgrounds is the background: the squared error keeps the objects).
    log_var_offset: added to the encoder's log-variance channels in training (a negative offset starts the
      posterior narrow, so the decoder sees informative latents from the first steps; inference uses ``mu``).
  """

  vae: dict = dataclasses.field(default_factory=lambda: {"dim": 8})
  kl_weight: float = 1.0e-3
  stats_momentum: float = 0.99
  log_var_offset: float = 0.0
  l2_weight: float = 0.0
  crop: int | None = None


@struct.dataclass
class VAEState:
  params: dict
  opt_state: Any
  ema: dict | None
  step: Array  # int32 []
  key: Array  # uint32 [2]
  mu_mean: Array  # float32 [z]: running mean of the raw posterior mean
  mu_sq: Array  # float32 [z]: running mean of its square


def reconstruct(vae: WanVAE, video: Array, key: Array, *, log_var_offset: float = 0.0) -> tuple[Array, Array, Array]:
  """``(x_hat [B, T, H, W, 3], mu, log_var [B, F, h, w, z])``: causal chunked encode, sample, streaming decode."""
  t = video.shape[1]
  feats = Feats(None)
  mus, lvs = [], []
  for s, e in [(0, 1), *((i, i + 4) for i in range(1, t, 4))]:  # frame 0, then 4-frame chunks
    m, lv = vae.encode_moments_chunk(video[:, s:e], feats, first=s == 0)  # [B, 1, h, w, z] each
    mus.append(m)
    lvs.append(lv)
    feats = Feats(feats.finish())
  mu = jnp.concatenate(mus, axis=1)  # [B, F, h, w, z]
  log_var = jnp.clip(jnp.concatenate(lvs, axis=1) + log_var_offset, -30.0, 20.0)
  z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu.shape, mu.dtype)
  feats = Feats(None)
  frames = []
  for i in range(z.shape[1]):  # latent 0 -> 1 frame, every later latent -> 4
    frames.append(vae.decode_chunk(z[:, i : i + 1], feats, first=i == 0))
    feats = Feats(feats.finish())
  return jnp.concatenate(frames, axis=1), mu, log_var


class VAEStage:
  """Trains a Wan VAE (see the module docstring); implements the Stage contract."""

  name = "vae"
  data = "videos"
  model_config = None  # no DiT: the export is a VAE component (see save_export)

  def __init__(
    self,
    *,
    vae_config: VAEConfig,
    optim_config: optim.OptimConfig,
    options: Options,
    ema_decay: float | None = None,
    ema_start_step: int = 0,
  ):
    self.vae_config = vae_config
    self.options = options
    self.tx = optim.make_optimizer(optim_config)
    self.ema_decay, self.ema_start_step = ema_decay, ema_start_step
    self._graphdef, self._abstract = nnx.split(abstract_vae(vae_config))

  def model(self, params: Mapping) -> WanVAE:
    state = jax.tree.map(lambda x: x, self._abstract)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self._graphdef, state)

  def init(self, key: Array, *, mesh: jax.sharding.Mesh | None) -> VAEState:
    mesh = mesh if mesh is not None else make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    k_model, k_train = jax.random.split(key)
    z = self.vae_config.z_dim

    def make(k_model, k_train):
      params = nnx.to_pure_dict(nnx.state(WanVAE(self.vae_config, rngs=nnx.Rngs(params=k_model)), nnx.Param))
      ema = jax.tree.map(lambda p: p * 1.0, params) if self.ema_decay is not None else None
      return VAEState(
        params=params,
        opt_state=self.tx.init(params),
        ema=ema,
        step=jnp.zeros((), jnp.int32),
        key=k_train,
        mu_mean=jnp.zeros((z,), jnp.float32),
        mu_sq=jnp.ones((z,), jnp.float32),
      )

    return init_sharded(make, mesh, k_model, k_train)

  def loss(self, params: Mapping, video: Array, key: Array) -> tuple[Array, dict]:
    x_hat, mu, log_var = reconstruct(self.model(params), video, key, log_var_offset=self.options.log_var_offset)
    l1 = jnp.mean(jnp.abs(x_hat.astype(jnp.float32) - video))
    mse = jnp.mean(jnp.square(jnp.clip(x_hat.astype(jnp.float32), -1.0, 1.0) - video))
    kl = 0.5 * jnp.mean(jnp.square(mu) + jnp.exp(log_var) - 1.0 - log_var)
    l2 = jnp.mean(jnp.square(x_hat.astype(jnp.float32) - video))
    loss = l1 + self.options.l2_weight * l2 + self.options.kl_weight * kl
    aux = {"l1": l1, "kl": kl, "psnr": 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))}
    return loss, (aux, jax.lax.stop_gradient(mu))

  def step(self, state: VAEState, batch: Mapping[str, Array]) -> tuple[VAEState, dict[str, Array]]:
    key = jax.random.fold_in(state.key, state.step)
    video = jnp.asarray(batch["video"], jnp.float32)
    (loss, (aux, mu)), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, video, key)
    params, opt_state, ema = optim.apply(
      self.tx,
      grads,
      state.opt_state,
      state.params,
      ema=state.ema,
      step=state.step,
      decay=self.ema_decay or 0.0,
      start_step=self.ema_start_step,
    )
    m = self.options.stats_momentum
    axes = tuple(range(mu.ndim - 1))
    mu_mean = m * state.mu_mean + (1 - m) * jnp.mean(mu, axis=axes)
    mu_sq = m * state.mu_sq + (1 - m) * jnp.mean(jnp.square(mu), axis=axes)
    new = state.replace(params=params, opt_state=opt_state, ema=ema, step=state.step + 1, mu_mean=mu_mean, mu_sq=mu_sq)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return new, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  def make_batch(self, records: list[Mapping[str, Any]], *, encode_text: Callable | None = None) -> dict[str, Any]:
    """``videos`` records -> ``{"video": float32 [B, T, H, W, 3] in [-1, 1]}``."""
    del encode_text
    if not records:
      raise ValueError("vae stage: empty batch (set data.source, e.g. 'toyworld')")
    video = np.stack([self._crop(r) for r in records])  # [B, T, H, W, 3]
    s = self.vae_config.space_stride
    if video.ndim != 5 or video.shape[-1] != 3 or (video.shape[1] - 1) % 4 or video.shape[2] % s or video.shape[3] % s:
      raise ValueError(
        f"vae stage: videos of shape {video.shape[1:]}; need [1 + 4k, H, W, 3] with H, W multiples of {s}"
      )
    return {"video": video.astype(np.float32) / 127.5 - 1.0}

  def _crop(self, record: Mapping[str, Any]) -> np.ndarray:
    video = np.asarray(record["video"])  # [T, H, W, 3]
    c = self.options.crop
    if c is None:
      return video
    h, w = video.shape[1:3]
    if c > min(h, w) or c % self.vae_config.space_stride:
      raise ValueError(f"vae stage: crop {c} must be a multiple of {self.vae_config.space_stride} and <= {h}x{w}")
    rng = np.random.default_rng([int(record.get("index", 0)), 17])
    y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
    return video[:, y : y + c, x : x + c]

  def trained_config(self, state: VAEState) -> VAEConfig:
    """The config with the tracked latent statistics."""
    mean = np.asarray(state.mu_mean, np.float64)
    std = np.sqrt(np.maximum(np.asarray(state.mu_sq, np.float64) - mean**2, 1e-12))
    return self.vae_config.replace(latent_mean=tuple(mean.tolist()), latent_std=tuple(std.tolist()))

  def export(self, state: VAEState) -> dict:
    return state.ema if state.ema is not None else state.params

  def save_export(self, out_dir: str | Path, state: VAEState, *, meta: dict) -> Path:
    """The export folder: a checkpoint holding the ``vae`` component only."""
    from longlive_jax import checkpoint

    cfg = self.trained_config(state)
    params = jax.tree.map(np.asarray, self.export(state))
    return checkpoint.save(out_dir, components={"vae": (params, cfg.to_dict())}, meta=meta, overwrite=True)


def make_stage(cfg) -> VAEStage:
  """The vae stage of a :class:`~longlive_jax.train.config.TrainConfig`."""
  from longlive_jax.train.config import TrainConfigError

  opts = cfg.options if isinstance(cfg.options, Options) else Options(**dict(cfg.options or {}))
  try:
    vae_cfg = VAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in opts.vae.items()})
  except TypeError as e:
    raise TrainConfigError(f"options.vae: {e}; valid keys: {', '.join(VAEConfig().to_dict())}") from e
  return VAEStage(
    vae_config=vae_cfg,
    optim_config=cfg.optim,
    options=opts,
    ema_decay=cfg.ema.decay if cfg.ema.enabled else None,
    ema_start_step=cfg.ema.start_step,
  )
