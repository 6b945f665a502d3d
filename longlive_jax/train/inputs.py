"""The training loop's inputs: the stage's dataset as a checkpointable grain iterator, and the encoders.

``make_data_iterator(cfg, kind)`` gives the per-process batches of the stage's dataset (``stage.data``;
``None`` = the stage makes its own inputs), sharded by process, ``batch_size / process_count`` records
per process: a built tfds dataset (``data.dataset_dir``, or ``data.source`` built once), or an ``.npz``
of stacked record arrays (``data.source: x.npz``, for kinds without a builder such as ``ode_pairs``).

``hash_text_encoder`` and ``pool_video_encoder`` are fixed cheap stand-ins for umT5 and the Wan VAE
(tests and CPU runs); ``make_text_encoder`` picks the one ``data.text_encoder`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from longlive_jax.train.config import TrainConfig, TrainConfigError, resolve_model_config


def hash_text_encoder(*, text_len: int, text_dim: int, seed: int = 0) -> Callable[[list[str]], np.ndarray]:
  """A fixed random embedding ``[N, text_len, text_dim]`` per prompt (seeded by the prompt's bytes).

  For tests and tiny CPU runs: equal prompts give equal embeddings, different prompts differ.
  """

  def encode(prompts: list[str]) -> np.ndarray:
    out = []
    for p in prompts:
      h = np.frombuffer(p.encode("utf-8") or b"\0", np.uint8).astype(np.uint32)
      rng = np.random.default_rng([seed, len(h), *h[:256].tolist(), int(h.sum())])
      out.append(rng.standard_normal((text_len, text_dim), np.float32))
    return np.stack(out)  # [N, L, D]

  return encode


def pool_video_encoder(*, channels: int = 16, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
  """A fixed cheap video "encoder" with the Wan VAE's latent geometry, for tests and CPU runs.

  ``[F, H, W, 3]`` uint8 -> ``[1 + (F - 1) / 4, H / 8, W / 8, channels]`` float32: pixels to [-1, 1],
  the first frame alone then 4-frame means (Wan's causal temporal grouping), 8x8 spatial means, and a
  fixed random ``3 -> channels`` projection (seeded).
  """
  proj = np.random.default_rng(seed).standard_normal((3, channels)).astype(np.float32)  # [3, C]

  def encode(frames: np.ndarray) -> np.ndarray:
    f, h, w, _ = frames.shape
    if (f - 1) % 4 or h % 8 or w % 8:
      raise ValueError(f"pool encoder: clip {frames.shape} needs 1 + 4k frames and H, W divisible by 8")
    x = frames.astype(np.float32) / 127.5 - 1.0  # [F, H, W, 3]
    x = np.concatenate([x[:1], x[1:].reshape(-1, 4, h, w, 3).mean(axis=1)])  # [F', H, W, 3]
    x = x.reshape(x.shape[0], h // 8, 8, w // 8, 8, 3).mean(axis=(2, 4))  # [F', h, w, 3]
    return x @ proj  # [F', h, w, C]

  return encode


def make_text_encoder(cfg: TrainConfig) -> Callable | None:
  """The ``data.text_encoder`` of the run: None, ``hash``, ``toyworld`` (the world's frozen tiny umT5 and
  tokenizer) or a umT5 checkpoint (with ``data.tokenizer``)."""
  name = cfg.data.text_encoder
  if name is None:
    return None
  if name == "hash":
    mc = resolve_model_config(cfg.model)
    return hash_text_encoder(text_len=mc.text_len, text_dim=mc.text_dim, seed=0)
  if name == "toyworld":
    from longlive_jax.toyworld.text import TextEncoder

    return TextEncoder()
  if Path(name).suffix not in (".pth", ".pt", ".safetensors"):
    raise TrainConfigError(f"data.text_encoder={name!r}: expected 'hash', null, or a umT5 .pth / .safetensors file")
  if cfg.data.tokenizer is None:
    raise TrainConfigError("data.text_encoder is a umT5 checkpoint: set data.tokenizer (the tokenizer folder)")
  from longlive_jax.convert.umt5 import load_encoder
  from longlive_jax.text.config import get_preset
  from longlive_jax.text.encode import encode_prompts
  from longlive_jax.text.tokenizer import UMT5Tokenizer

  mc = resolve_model_config(cfg.model)
  model = load_encoder(name, get_preset(cfg.data.text_encoder_preset))
  tokenizer = UMT5Tokenizer.from_folder(cfg.data.tokenizer)
  return lambda prompts: encode_prompts(model, tokenizer, list(prompts), text_len=mc.text_len)


def dataset_dir(cfg: TrainConfig, kind: str) -> Path:
  """The built dataset of ``kind`` for this run: ``data.dataset_dir``, or ``data.source`` built once."""
  from longlive_jax import data

  d = cfg.data
  if d.dataset_dir is not None:
    return Path(d.dataset_dir)
  if d.source is None:
    raise TrainConfigError(f"stage {cfg.stage!r} reads {kind!r} data: set data.dataset_dir (or data.source)")
  if kind == "prompts":
    return data.build_prompts(d.source, data_dir=d.data_dir, on_error=d.on_error).dataset_dir
  if kind == "prompt_pairs":
    res = data.build_prompt_pairs(d.source, data_dir=d.data_dir, switch_source=d.switch_source, on_error=d.on_error)
    return res.dataset_dir
  if kind == "video_latents" and d.video_encoder == "pool":
    return _build_pool_latents(cfg)
  raise TrainConfigError(
    f"data.source: {kind!r} datasets are built beforehand (or with data.video_encoder=pool); set data.dataset_dir"
  )


def _build_pool_latents(cfg: TrainConfig) -> Path:
  from longlive_jax import data
  from longlive_jax.data.video import VIDEO_SUFFIXES

  d = cfg.data
  src = Path(d.source)
  if d.synthetic_videos > 0 and not (src.is_dir() and any(p.suffix in VIDEO_SUFFIXES for p in src.iterdir())):
    data.write_synthetic_videos(src, d.synthetic_videos, frames=d.num_frames, height=d.height, width=d.width, seed=0)
  mc = resolve_model_config(cfg.model)
  clip = data.VideoLatentsConfig(num_frames=d.num_frames, height=d.height, width=d.width, fps=d.fps)
  res = data.build_video_latents(
    src,
    data_dir=d.data_dir,
    encode_video=pool_video_encoder(channels=mc.in_dim, seed=0),
    encode_text=hash_text_encoder(text_len=mc.text_len, text_dim=mc.text_dim, seed=0),
    config=clip,
    encoder_id=f"pool-v1:{mc.in_dim}/hash-v1:{mc.text_len}x{mc.text_dim}",
    on_error=d.on_error,
  )
  return res.dataset_dir


def make_data_iterator(cfg: TrainConfig, kind: str | None):
  """The checkpointable grain iterator of collated per-process batches, or None (no data)."""
  from longlive_jax.data import open_source
  from longlive_jax.data.pipeline import batched, make_dataset, npz_dataset

  if kind is None or kind == "none":
    return None
  n_proc = jax.process_count()
  if cfg.batch_size % n_proc:
    raise TrainConfigError(f"batch_size={cfg.batch_size} is not divisible by the {n_proc} processes")
  d = cfg.data
  opts = {
    "batch_size": cfg.batch_size // n_proc,
    "seed": cfg.seed,
    "shuffle": d.shuffle,
    "num_epochs": d.num_epochs,
    "num_threads": d.num_threads,
    "prefetch_buffer_size": d.prefetch,
  }
  if d.dataset_dir is None and d.source is not None and Path(d.source).suffix == ".npz":
    return iter(npz_dataset(d.source, **opts))
  if d.dataset_dir is None and d.source == "toyworld":
    return iter(batched(toyworld_source(cfg, kind), name="toyworld", **opts))
  path = dataset_dir(cfg, kind)
  got, _ = open_source(path)
  if got != kind:
    raise TrainConfigError(f"data.dataset_dir {path} holds {got!r} records, stage {cfg.stage!r} reads {kind!r}")
  return iter(make_dataset(path, **opts))


def toyworld_source(cfg: TrainConfig, kind: str):
  """The procedural clip source of ``data.source: toyworld`` (``videos`` records only)."""
  from longlive_jax.toyworld.data import ClipSource

  d = cfg.data
  if kind != "videos":
    raise TrainConfigError(f"data.source: toyworld renders 'videos' records; stage {cfg.stage!r} reads {kind!r}")
  if (d.num_frames - 1) % 4 or d.height != d.width:
    raise TrainConfigError(
      f"data: toyworld clips are square with 1 + 4k frames, got {d.num_frames} x {d.height}x{d.width}"
    )
  return ClipSource(
    num_records=d.world_clips,
    latent_frames=(d.num_frames - 1) // 4 + 1,
    size=d.height,
    split=d.world_split,
    switch_prob=d.world_switch_prob,
    seed=cfg.seed,
  )


def split_records(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
  """A collated batch (lists / stacked arrays) -> the list of its records (the Stage's ``make_batch`` input)."""
  n = len(next(iter(batch.values())))
  return [{k: v[i] for k, v in batch.items()} for i in range(n)]
