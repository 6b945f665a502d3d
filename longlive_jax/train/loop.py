"""The generic training loop: any :class:`~longlive_jax.train.stage.Stage`, one config, one code path.

``train(cfg)``:

  1. mesh from ``cfg.mesh`` (:mod:`longlive_jax.sharding`), the stage from the registry;
  2. the grain pipeline of the stage's dataset (``stage.data``; ``None`` = the stage makes its own
     inputs), sharded by process, ``batch_size / process_count`` records per process: a built tfds
     dataset (``data.dataset_dir``, or ``data.source`` built once), or an ``.npz`` of stacked record
     arrays (``data.source: x.npz``, for kinds without a builder such as ``ode_pairs``);
  3. the state: restored from the latest valid checkpoint in ``cfg.checkpoint_dir`` when there is one
     (and ``checkpoint.resume``), else ``stage.init(key(seed), mesh=mesh)``. The restore target is a
     freshly initialised state (its shardings and shapes), which is then dropped;
  4. ``jax.jit(stage.step, out_shardings=(state shardings, replicated), donate_argnums=0)``;
  5. steps with a tqdm bar (loss, steps/s), metrics every ``log.every`` steps to
     ``<log_dir>/metrics.jsonl`` and/or TensorBoard event files (tensorboardX, no TensorFlow needed),
     a checkpoint every ``checkpoint.interval`` steps and at the end (async, with the data position);
  6. export of ``stage.export(state)`` with :func:`longlive_jax.checkpoint.save` (single process).

Ctrl-C stops after the current step, saves a checkpoint and raises KeyboardInterrupt, so running
``train`` again resumes (a second Ctrl-C stops at once).
Per-step randomness must come from the state (stages fold the step into a key), so a resumed run
reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from longlive_jax import sharding
from longlive_jax.train import stages
from longlive_jax.train.checkpointing import CheckpointMismatchError, TrainCheckpointer
from longlive_jax.train.config import TrainConfig, TrainConfigError, resolve_model_config, to_dict

METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass
class TrainResult:
  step: int
  resumed_from: int | None
  last_metrics: dict[str, float]
  checkpoint_dir: Path
  export_dir: Path | None
  state: Any = None


# ---------------------------------------------------------------------------------------------- data


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
  name = cfg.data.text_encoder
  if name is None:
    return None
  if name == "hash":
    mc = resolve_model_config(cfg.model)
    return hash_text_encoder(text_len=mc.text_len, text_dim=mc.text_dim, seed=0)
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
  from longlive_jax.data.pipeline import make_dataset

  if kind is None or kind == "none":
    return None
  n_proc = jax.process_count()
  if cfg.batch_size % n_proc:
    raise TrainConfigError(f"batch_size={cfg.batch_size} is not divisible by the {n_proc} processes")
  if cfg.data.dataset_dir is None and cfg.data.source is not None and Path(cfg.data.source).suffix == ".npz":
    return iter(npz_dataset(cfg.data.source, cfg=cfg, batch_size=cfg.batch_size // n_proc))
  path = dataset_dir(cfg, kind)
  got, _ = open_source(path)
  if got != kind:
    raise TrainConfigError(f"data.dataset_dir {path} holds {got!r} records, stage {cfg.stage!r} reads {kind!r}")
  ds = make_dataset(
    path,
    batch_size=cfg.batch_size // n_proc,
    seed=cfg.seed,
    shuffle=cfg.data.shuffle,
    num_epochs=cfg.data.num_epochs,
    num_threads=cfg.data.num_threads,
    prefetch_buffer_size=cfg.data.prefetch,
  )
  return iter(ds)


class _NpzRecords:
  """Random access to the records of an ``.npz`` of stacked arrays (record i = every array's row i)."""

  def __init__(self, path: Path):
    try:
      with np.load(path, allow_pickle=False) as z:
        self.arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
      raise TrainConfigError(f"data.source {path}: not a readable .npz of arrays: {e}") from e
    sizes = {k: len(v) for k, v in self.arrays.items() if np.ndim(v)}
    if not sizes or len(set(sizes.values())) != 1:
      raise TrainConfigError(f"data.source {path}: arrays must share their leading (record) axis, got {sizes}")
    self.n = next(iter(sizes.values()))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {k: str(v[i]) if v.dtype.kind == "U" else v[i] for k, v in self.arrays.items()}


def npz_dataset(path: str | Path, *, cfg: TrainConfig, batch_size: int):
  """The grain pipeline (shard by process, shuffle, repeat, batch) over an ``.npz`` record file.

  For record kinds without a tfds builder (e.g. ``ode_pairs``): every array's leading axis indexes
  the records; unicode arrays become strings. Checkpointable like the ArrayRecord pipelines.
  """
  import grain

  from longlive_jax.data.pipeline import collate

  ds = grain.MapDataset.source(_NpzRecords(Path(path)))
  n = len(ds)
  ds = ds[: n - n % jax.process_count()][jax.process_index() :: jax.process_count()]
  if cfg.data.shuffle:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds.repeat(cfg.data.num_epochs).batch(batch_size, drop_remainder=True, batch_fn=collate)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.data.num_threads, prefetch_buffer_size=cfg.data.prefetch))


def split_records(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
  """A collated batch (lists / stacked arrays) -> the list of its records (the Stage's ``make_batch`` input)."""
  n = len(next(iter(batch.values())))
  return [{k: v[i] for k, v in batch.items()} for i in range(n)]


# ------------------------------------------------------------------------------------------- metrics


class MetricsWriter:
  """jsonl and / or TensorBoard scalars (process 0 only)."""

  def __init__(self, log_dir: Path, fmt: str, *, enabled: bool = True):
    self.jsonl = self.tb = None
    if not enabled or fmt == "none":
      return
    log_dir.mkdir(parents=True, exist_ok=True)
    if fmt in ("jsonl", "both"):
      self.jsonl = open(log_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
    if fmt in ("tensorboard", "both"):
      from tensorboardX import SummaryWriter

      self.tb = SummaryWriter(str(log_dir))

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if self.jsonl is not None:
      self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
      self.jsonl.flush()
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(f"train/{k}", v, step)

  def close(self) -> None:
    if self.jsonl is not None:
      self.jsonl.close()
    if self.tb is not None:
      self.tb.close()


def read_metrics(log_dir: str | Path) -> list[dict]:
  path = Path(log_dir) / METRICS_FILE
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- step


def unalias(state: Any) -> Any:
  """The state with every buffer used by one leaf only (a copy for repeats), so it can be donated.

  Initialisers may put one array in two places (EMA = weights, teacher = critic); donating such a
  state fails ("donate the same buffer twice").
  """
  seen: set = set()

  def one(x):
    if not isinstance(x, jax.Array):
      return x
    ptrs = tuple(s.data.unsafe_buffer_pointer() for s in x.addressable_shards)
    if any(p in seen for p in ptrs):
      return jnp.array(x, copy=True)
    seen.update(ptrs)
    return x

  return jax.tree.map(one, state)


def compile_step(stage: Any, state: Any, mesh: jax.sharding.Mesh) -> Callable:
  """``stage.step`` jitted with the state's shardings pinned on output and the state donated."""
  state_sh = jax.tree.map(lambda x: x.sharding, state)
  return jax.jit(stage.step, out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))


def next_batch(stage: Any, it, mesh, encode_text) -> dict:
  records = split_records(next(it)) if it is not None else []
  return sharding.shard_batch(stage.make_batch(records, encode_text=encode_text), mesh)


# ---------------------------------------------------------------------------------------------- train


class _StopOnInterrupt:
  """First Ctrl-C (main thread only): finish the current step, checkpoint, then raise KeyboardInterrupt."""

  def __enter__(self):
    self.requested = False
    self._old = None
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.requested:  # second Ctrl-C: stop at once
      raise KeyboardInterrupt
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGINT, self._old)
    return False


def train(cfg: TrainConfig, *, stage: Any = None, return_state: bool = False) -> TrainResult:
  """Runs (or resumes) ``cfg.steps`` steps of ``cfg.stage``; see the module docstring."""
  if cfg.compile_cache_dir is not None:
    jax.config.update("jax_compilation_cache_dir", str(cfg.compile_cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  mesh = sharding.make_mesh(cfg.mesh)
  stage = stage if stage is not None else stages.get_stage(cfg.stage)(cfg)
  kind = getattr(stage, "data", None)
  it = make_data_iterator(cfg, kind)
  encode_text = make_text_encoder(cfg)
  main = jax.process_index() == 0

  ckpt = TrainCheckpointer(cfg.checkpoint_dir, keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
  meta = {"stage": cfg.stage, "config": to_dict(cfg)}
  state = stage.init(jax.random.PRNGKey(cfg.seed), mesh=mesh)
  start = resumed = None
  if cfg.checkpoint.resume and ckpt.latest_step() is not None:
    restored = ckpt.restore(None, target=state, data_iter=it)
    if restored.meta.get("stage") != cfg.stage:
      raise CheckpointMismatchError(
        f"{cfg.checkpoint_dir}: the latest checkpoint is of stage {restored.meta.get('stage')!r}, not {cfg.stage!r}"
      )
    jax.tree.map(lambda x: x.delete() if isinstance(x, jax.Array) else None, state)
    state, start = restored.state, restored.step
    resumed = start
  start = start or 0
  if start > cfg.steps:
    raise TrainConfigError(f"steps={cfg.steps} but {cfg.checkpoint_dir} already holds step {start}")

  state = unalias(state)
  step_fn = compile_step(stage, state, mesh)
  writer = MetricsWriter(cfg.log_dir, cfg.log.format, enabled=main)
  bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.log.progress and main), desc=cfg.stage, unit="step")
  last: dict[str, float] = {}
  done = start
  t_last, s_last = time.perf_counter(), start
  with _StopOnInterrupt() as stop:
    try:
      for step in range(start + 1, cfg.steps + 1):
        state, metrics = step_fn(state, next_batch(stage, it, mesh, encode_text))
        done = step
        if step % cfg.log.every == 0 or step == cfg.steps:
          last = {k: float(v) for k, v in jax.device_get(metrics).items()}
          now = time.perf_counter()
          rate = (step - s_last) / max(now - t_last, 1e-9)
          t_last, s_last = now, step
          writer.write(step, last)
          loss = {"loss": f"{last['loss']:.4g}"} if "loss" in last else {}
          bar.set_postfix({**loss, "steps/s": f"{rate:.3g}"})
        bar.update(1)
        if stop.requested:
          break
        if step % cfg.checkpoint.interval == 0 and step != cfg.steps:
          ckpt.save(step, state, data_iter=it, meta=meta)
    finally:
      bar.close()
      writer.close()
    if ckpt.latest_step() != done:
      ckpt.save(done, state, data_iter=it, meta=meta)
    ckpt.close()
    if stop.requested:
      raise KeyboardInterrupt(f"training stopped at step {done}; checkpoint saved in {cfg.checkpoint_dir}")

  export_dir = None
  if cfg.export.enabled:
    export_dir = export(cfg, stage, state)
  return TrainResult(
    step=cfg.steps,
    resumed_from=resumed,
    last_metrics=last,
    checkpoint_dir=cfg.checkpoint_dir,
    export_dir=export_dir,
    state=state if return_state else None,
  )


def export(cfg: TrainConfig, stage: Any, state: Any) -> Path | None:
  """Writes ``stage.export(state)`` as a :mod:`longlive_jax.checkpoint` folder (the inference format).

  The model config saved with it: ``stage.model_config``, else ``stage.core.cfgs["generator"]`` (the
  DMD stages), else ``cfg.model``.

  Multi-process runs skip it (the folder is written with a local temporary rename); export from
  the Orbax train checkpoint on one host instead.
  """
  from longlive_jax import checkpoint

  if jax.process_count() > 1:
    return None
  model_cfg = getattr(stage, "model_config", None)
  if model_cfg is None:  # the DMD stages keep their networks' configs in ``stage.core.cfgs``
    model_cfg = (getattr(getattr(stage, "core", None), "cfgs", None) or {}).get("generator")
  model_cfg = model_cfg or resolve_model_config(cfg.model)
  params = stage.export(state)
  meta = {"stage": cfg.stage, "step": cfg.steps, "train_config": to_dict(cfg)}
  return checkpoint.save(cfg.export_dir, cfg=model_cfg, params=params, meta=meta, overwrite=True)
