"""VAE stage: trains a (small) Wan VAE on videos with Wan's reconstruction + KL objective.

One step, for videos ``x [B, T, H, W, 3]`` in [-1, 1] (``T = 1 + 4k``):

  * encode causally, chunk by chunk as at inference (frame 0 alone, then 4-frame chunks, the feature
    cache carried: :meth:`~longlive_jax.vae.model.WanVAE.encode_moments_chunk`) into the posterior
    ``N(mu, exp(log_var))``, ``log_var`` clamped to [-30, 20] as upstream;
  * sample ``z = mu + exp(log_var / 2) eps`` and decode it latent by latent with the carried cache;
  * ``loss = mean |x - x_hat| + l2_weight mean (x - x_hat)^2 + edge_weight GDL + kl_weight * mean KL(q || N(0, 1))``
    (per element means; ``GDL`` the gradient-difference loss, :func:`gradient_difference`), then AdamW.

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
    detach_latents: ``[a, b)``: latents ``a .. b-1`` of each clip are a burn-in, run forward only: they are left
      out of the loss and the feature caches leaving them are cut from the gradient. The latents after ``b``
      then train the causal caches' steady state deep into a stream (a decoder trained only on the first
      latents of a stream sees at latent ``k`` a cache state it never saw once ``k`` passes its temporal
      receptive field, and decodes garbage there) for the backward cost of the trained latents only.
    first_frame_weight: weight of frame 0 (encoded and decoded alone) in the reconstruction terms against 1 for
      every later frame (4 makes it count as much as a 4-frame latent).
    edge_weight: weight of the gradient-difference loss (:func:`gradient_difference`): zero on flat regions,
      large on edges, so on small objects over plain backgrounds it trains the shapes that the per-pixel terms,
      dominated by the background, learn last.
    init: a checkpoint folder holding a ``vae`` component (e.g. an earlier vae export) to start from; its
      config must have the same architecture as ``vae``.
    freeze_encoder: train the decoder only (needs ``init``): the encoder and its latent statistics stay those of
      ``init`` exactly, so latents already encoded with it (and every model trained on them) stay valid while
      the decoder sharpens (Stable Diffusion's decoder fine-tune).
    latent_noise: the decoder is trained on ``z + u * latent_noise * latent_std * eps`` with ``u ~ U(0, 1)`` per
      clip and ``eps ~ N(0, 1)``: noise of up to ``latent_noise`` in the DiT's normalised latent units (needs
      ``freeze_encoder``, whose statistics are fixed). A generator's latents are never exactly on the encoder's
      manifold; a decoder that has learned to map nearby latents to the world's clean frames draws them as what
      they are closest to, instead of decoding their error into lumpy outlines (noise-augmented decoder training).
    latent_scale: the decoder is trained on ``m + (1 + u * latent_scale) (z - m)`` with ``m`` the frozen encoder's
      latent mean and ``u ~ U(0, 1)`` per clip and channel (applied before ``latent_noise``; needs
      ``freeze_encoder``): latents stretched away from the mean by up to ``1 + latent_scale`` decode as the
      clean frame. Written for the toy world's orange first frame (its DiT's latent 0 has 1.1-1.4x the true
      per-channel means); measured, it does not move that frame (``experiments/toyworld/decoder_scale.sh``:
      the error starts in the teacher's latent 0, not in a stretch a decoder can undo), so no shipped config
      uses it.
  """

  vae: dict = dataclasses.field(default_factory=lambda: {"dim": 8})
  kl_weight: float = 1.0e-3
  stats_momentum: float = 0.99
  log_var_offset: float = 0.0
  l2_weight: float = 0.0
  crop: int | None = None
  detach_latents: tuple[int, int] | None = None
  first_frame_weight: float = 1.0
  edge_weight: float = 0.0
  init: str | None = None
  freeze_encoder: bool = False
  latent_noise: float = 0.0
  latent_scale: float = 0.0

  def __post_init__(self):
    if self.freeze_encoder and self.init is None:
      raise ValueError("options.freeze_encoder: needs options.init (the VAE whose encoder is kept)")
    if self.latent_noise < 0:
      raise ValueError(f"options.latent_noise: must be >= 0, got {self.latent_noise}")
    if self.latent_noise and not self.freeze_encoder:
      raise ValueError(
        "options.latent_noise: needs options.freeze_encoder (noise in the fixed latent statistics' units)"
      )
    if self.latent_scale < 0:
      raise ValueError(f"options.latent_scale: must be >= 0, got {self.latent_scale}")
    if self.latent_scale and not self.freeze_encoder:
      raise ValueError("options.latent_scale: needs options.freeze_encoder (a stretch about the fixed latent mean)")
    if self.detach_latents is not None:
      a, b = (int(v) for v in self.detach_latents)
      if not 0 < a < b:
        raise ValueError(f"options.detach_latents: need [a, b) with 0 < a < b, got {list(self.detach_latents)}")
      object.__setattr__(self, "detach_latents", (a, b))


@struct.dataclass
class VAEState:
  params: dict
  opt_state: Any
  ema: dict | None
  step: Array  # int32 []
  key: Array  # uint32 [2]
  mu_mean: Array  # float32 [z]: running mean of the raw posterior mean
  mu_sq: Array  # float32 [z]: running mean of its square


def reconstruct(
  vae: WanVAE,
  video: Array,
  key: Array,
  *,
  log_var_offset: float = 0.0,
  detach: tuple[int, int] | None = None,
  noise_scale: Array | None = None,
  stretch: tuple[Array, float] | None = None,
) -> tuple[Array, Array, Array, Array, Array]:
  """Causal chunked encode, sample, streaming decode of ``video [B, T, H, W, 3]`` (``T = 1 + 4(F - 1)``).

  Frame 0 is encoded / decoded alone, then every 4-frame chunk with the feature caches carried (a Python loop,
  unrolled: on CPU a ``lax.scan`` over the chunks runs the step about 6x slower). Returns ``(x_hat, target,
  mu_all, mu, log_var)``: the decoded frames and the input frames of the trained latents (all, or all but the
  burn-in ``detach = [a, b)``, whose frames are left out and whose outgoing caches are cut from the gradient),
  the posterior means of every latent ``[B, F, h, w, z]`` and the posterior ``[B, F', h, w, z]`` of the trained.
  ``noise_scale [z]``: the decoder decodes ``z + u * noise_scale * eps`` (``u ~ U(0, 1)`` per clip; see
  ``Options.latent_noise``); ``stretch = (mean [z], s)``: before that noise, ``z -> mean + (1 + u s)(z - mean)``
  (``u ~ U(0, 1)`` per clip and channel; see ``Options.latent_scale``). The posterior outputs are unchanged.
  """
  n = 1 + (video.shape[1] - 1) // 4
  trained = [i for i in range(n) if detach is None or not detach[0] <= i < detach[1]]

  def frames_of(i: int) -> slice:  # latent 0 is frame 0 alone, latent i >= 1 frames 4i-3 .. 4i
    return slice(0, 1) if i == 0 else slice(4 * i - 3, 4 * i + 1)

  def carry(feats: Feats, i: int) -> Feats:
    cache = feats.finish()
    if detach is not None and i == detach[1] - 1:  # the caches leaving the burn-in carry no gradient
      cache = jax.lax.stop_gradient(cache)
    return Feats(cache)

  feats = Feats(None)
  mus, lvs = [], []
  for i in range(n):
    m, lv = vae.encode_moments_chunk(video[:, frames_of(i)], feats, first=i == 0)  # [B, 1, h, w, z] each
    mus.append(m)
    lvs.append(lv)
    feats = carry(feats, i)
  mu_all = jnp.concatenate(mus, axis=1)  # [B, F, h, w, z]
  log_var = jnp.clip(jnp.concatenate(lvs, axis=1) + log_var_offset, -30.0, 20.0)
  z = mu_all + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu_all.shape, mu_all.dtype)
  if stretch is not None:
    mean, s = jnp.asarray(stretch[0], z.dtype), stretch[1]
    u = jax.random.uniform(jax.random.fold_in(key, 2), (z.shape[0], 1, 1, 1, z.shape[-1]), z.dtype)  # [B, 1, 1, 1, z]
    z = mean + (1.0 + u * s) * (z - mean)
  if noise_scale is not None:
    k_u, k_eps = jax.random.split(jax.random.fold_in(key, 1))  # the posterior's draw stays that of ``key``
    u = jax.random.uniform(k_u, (z.shape[0], 1, 1, 1, 1), z.dtype)  # [B, 1, 1, 1, 1]: one level per clip
    z = z + u * jnp.asarray(noise_scale, z.dtype) * jax.random.normal(k_eps, z.shape, z.dtype)
  feats = Feats(None)
  frames = []
  for i in range(n):  # latent 0 -> 1 frame, every later latent -> 4
    x = vae.decode_chunk(z[:, i : i + 1], feats, first=i == 0)
    if i in trained:  # burn-in frames never reach the loss (no cotangent, so no backward pass through them)
      frames.append(x)
    feats = carry(feats, i)
  target = jnp.concatenate([video[:, frames_of(i)] for i in trained], axis=1)
  idx = np.asarray(trained)
  return jnp.concatenate(frames, axis=1), target, mu_all, mu_all[:, idx], log_var[:, idx]


def gradient_difference(x_hat: Array, x: Array) -> Array:
  """Per-frame gradient-difference loss (Mathieu et al. 2016) of ``[B, T, H, W, C]`` videos -> ``[T]``.

  The mean over batch, pixels and channels of ``|dy x_hat - dy x| + |dx x_hat - dx x|`` with ``dy``, ``dx`` the
  vertical and horizontal finite differences: it compares edges, so a blurred or displaced object costs as much
  as its edge pixels whatever the size of the flat background around it.
  """
  dy = jnp.abs(jnp.diff(x_hat, axis=2) - jnp.diff(x, axis=2))  # [B, T, H-1, W, C]
  dx = jnp.abs(jnp.diff(x_hat, axis=3) - jnp.diff(x, axis=3))  # [B, T, H, W-1, C]
  return jnp.mean(dy, axis=(0, 2, 3, 4)) + jnp.mean(dx, axis=(0, 2, 3, 4))


ENCODER_KEYS = ("encoder", "conv1")  # the parameters that map video to the posterior (conv2 + decoder decode)


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
    self.optim_config = optim_config
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

    start = self._init_params()

    def make(k_model, k_train):
      params = nnx.to_pure_dict(nnx.state(WanVAE(self.vae_config, rngs=nnx.Rngs(params=k_model)), nnx.Param))
      if start is not None:
        params = jax.tree.map(lambda p, q: jnp.asarray(q, p.dtype), params, start)
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

  def _init_params(self) -> dict | None:
    """The ``vae`` weights of ``options.init`` (None without it), checked against the configured architecture."""
    from longlive_jax import checkpoint

    path = self.options.init
    if path is None:
      return None
    target = nnx.to_pure_dict(nnx.state(abstract_vae(self.vae_config), nnx.Param))
    try:
      _, params = checkpoint.load_component(path, "vae", target=target)
    except FileNotFoundError as e:
      raise ValueError(f"options.init: {path}: {e}") from e
    want = jax.tree.map(lambda a: tuple(a.shape), target)
    got = jax.tree.map(lambda a: tuple(np.shape(a)), params)
    if want != got:
      raise ValueError(f"options.init: {path}: its vae is not the architecture of options.vae")
    return params

  def loss(self, params: Mapping, video: Array, key: Array) -> tuple[Array, dict]:
    x_hat, video, mu_all, mu, log_var = reconstruct(
      self.model(params),
      video,
      key,
      log_var_offset=self.options.log_var_offset,
      detach=self.options.detach_latents,
      noise_scale=self._noise_scale(),
      stretch=self._stretch(),
    )
    w = np.ones((video.shape[1],), np.float32)
    w[0] = self.options.first_frame_weight
    w = jnp.asarray(w / w.sum())  # per-frame weights [T'], summing to 1

    def frame_mean(err: Array) -> Array:  # [B, T', H, W, 3] -> weighted mean
      return jnp.sum(jnp.mean(err, axis=(0, 2, 3, 4)) * w)

    x_hat = x_hat.astype(jnp.float32)
    l1 = frame_mean(jnp.abs(x_hat - video))
    mse = jnp.mean(jnp.square(jnp.clip(x_hat, -1.0, 1.0) - video))
    kl = 0.5 * jnp.mean(jnp.square(mu) + jnp.exp(log_var) - 1.0 - log_var)
    l2 = frame_mean(jnp.square(x_hat - video))
    loss = l1 + self.options.l2_weight * l2 + self.options.kl_weight * kl
    aux = {}
    if self.options.edge_weight:
      edge = jnp.sum(gradient_difference(x_hat, video) * w)
      loss = loss + self.options.edge_weight * edge
      aux["edge"] = edge
    aux |= {"l1": l1, "kl": kl, "psnr": 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))}
    return loss, (aux, jax.lax.stop_gradient(mu_all))

  def _noise_scale(self) -> np.ndarray | None:
    """``latent_noise * latent_std [z]`` of the frozen encoder (``init``'s statistics), or None."""
    if not self.options.latent_noise:
      return None
    std = np.asarray(self.trained_config(None).latent_std, np.float32)  # frozen: init's own, independent of state
    return self.options.latent_noise * std

  def _stretch(self) -> tuple[np.ndarray, float] | None:
    """``(latent_mean [z], latent_scale)`` of the frozen encoder (``init``'s statistics), or None."""
    if not self.options.latent_scale:
      return None
    mean = np.asarray(self.trained_config(None).latent_mean, np.float32)
    return mean, float(self.options.latent_scale)

  def step(self, state: VAEState, batch: Mapping[str, Array]) -> tuple[VAEState, dict[str, Array]]:
    key = jax.random.fold_in(state.key, state.step)
    video = jnp.asarray(batch["video"], jnp.float32)
    freeze = self.options.freeze_encoder

    def loss_fn(params, video, key):  # a frozen encoder is a constant: zero gradients, and no backward pass through it
      if freeze:
        params = {k: (jax.lax.stop_gradient(v) if k in ENCODER_KEYS else v) for k, v in params.items()}
      return self.loss(params, video, key)

    (loss, (aux, mu)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, video, key)
    params, opt_state, ema = optim.apply(
      self.tx,
      grads,
      state.opt_state,
      state.params,
      ema=state.ema,
      step=state.step,
      decay=self.ema_decay or 0.0,
      start_step=self.ema_start_step,
      schedule=self.optim_config,
    )
    if freeze:  # exactly the initial encoder (no drift from the optimizer's epsilon terms)
      params = {k: (state.params[k] if k in ENCODER_KEYS else v) for k, v in params.items()}
      if ema is not None:
        ema = {k: (state.ema[k] if k in ENCODER_KEYS else v) for k, v in ema.items()}
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
    """The config with the tracked latent statistics (``init``'s own with a frozen encoder)."""
    if self.options.freeze_encoder:
      from longlive_jax import checkpoint

      c = checkpoint.read_meta(self.options.init)["components"]["vae"]["config"]
      return self.vae_config.replace(latent_mean=tuple(c["latent_mean"]), latent_std=tuple(c["latent_std"]))
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
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.vae.items()}
  z_dim = int(fields.get("z_dim", VAEConfig.z_dim))
  if z_dim != VAEConfig.z_dim:
    # Wan's published statistics have 16 entries; a VAE trained here measures its own at export, so a
    # different width starts from the neutral (0, 1) normalisation.
    fields.setdefault("latent_mean", (0.0,) * z_dim)
    fields.setdefault("latent_std", (1.0,) * z_dim)
  try:
    vae_cfg = VAEConfig(**fields)
  except (TypeError, ValueError) as e:
    raise TrainConfigError(f"options.vae: {e}; valid keys: {', '.join(VAEConfig().to_dict())}") from e
  return VAEStage(
    vae_config=vae_cfg,
    optim_config=cfg.optim,
    options=opts,
    ema_decay=cfg.ema.decay if cfg.ema.enabled else None,
    ema_start_step=cfg.ema.start_step,
  )
