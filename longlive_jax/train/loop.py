"""The generic training loop: any :class:`~longlive_jax.train.stage.Stage`, one config, one code path.

``train(cfg)``:

  1. mesh from ``cfg.mesh`` (:mod:`longlive_jax.sharding`), the stage from the registry;
  2. the grain pipeline of the stage's dataset (``stage.data``), sharded by process
     (:func:`longlive_jax.train.inputs.make_data_iterator`);
  3. the state: ``stage.init(key(seed), mesh=mesh)``, or, when ``cfg.checkpoint_dir`` holds a valid
     checkpoint (and ``checkpoint.resume``), that checkpoint restored into the shapes, dtypes and
     shardings of the initialised state, whose arrays are freed before the restore (the stage's
     shardings exist only on its concrete arrays: ``jax.eval_shape`` returns none on this mesh);
  4. ``jax.jit(stage.step, out_shardings=(state shardings, replicated), donate_argnums=0)``;
  5. steps with a tqdm bar (loss; the bar's own rate in steps/s), metrics every ``log.every`` steps to
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from longlive_jax import sharding
from longlive_jax.model.attention import override as attention_override
from longlive_jax.train import stages
from longlive_jax.train.checkpointing import CheckpointMismatchError, TrainCheckpointer, abstract_state
from longlive_jax.train.config import TrainConfig, TrainConfigError, check_output_dirs, resolve_model_config, to_dict
from longlive_jax.train.inputs import (
  make_data_iterator,
  make_text_encoder,
  split_records,
)

METRICS_FILE = "metrics.jsonl"
# tqdm's default bar with the rate always in steps/s (its default turns to s/step below 1 step/s); the only rate
# shown, so no second figure can disagree with it.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


@dataclasses.dataclass
class TrainResult:
  step: int
  resumed_from: int | None
  last_metrics: dict[str, float]
  checkpoint_dir: Path
  export_dir: Path | None
  state: Any = None


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
  """Runs (or resumes) ``cfg.steps`` steps of ``cfg.stage``; see the module docstring.

  Everything is traced under ``cfg.attention`` when set (:func:`longlive_jax.model.attention.override`).
  """
  with attention_override(cfg.attention):
    return _train(cfg, stage=stage, return_state=return_state)


def _train(cfg: TrainConfig, *, stage: Any, return_state: bool) -> TrainResult:
  check_output_dirs(cfg)
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
  start, resumed = 0, None
  if cfg.checkpoint.resume and ckpt.latest_step() is not None:
    target = abstract_state(state)
    jax.tree.map(lambda x: x.delete() if isinstance(x, jax.Array) else None, state)  # one state on device, not two
    restored = ckpt.restore(None, target=target, data_iter=it)
    if restored.meta.get("stage") != cfg.stage:
      raise CheckpointMismatchError(
        f"{cfg.checkpoint_dir}: the latest checkpoint is of stage {restored.meta.get('stage')!r}, not {cfg.stage!r}"
      )
    state, start = restored.state, restored.step
    resumed = start
  if start > cfg.steps:
    raise TrainConfigError(f"steps={cfg.steps} but {cfg.checkpoint_dir} already holds step {start}")

  state = unalias(state)
  step_fn = compile_step(stage, state, mesh)
  writer = MetricsWriter(cfg.log_dir, cfg.log.format, enabled=main)
  bar = tqdm(
    total=cfg.steps,
    initial=start,
    disable=not (cfg.log.progress and main),
    desc=cfg.stage,
    unit="step",
    bar_format=BAR_FORMAT,
  )
  last: dict[str, float] = {}
  done = start

  def log(step: int, metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}  # waits for that step only
    writer.write(step, values)
    if "loss" in values:
      bar.set_postfix({"loss": f"{values['loss']:.4g}"})
    return values

  # A logged step's metrics are read after the next step is dispatched, so the device never waits
  # for the host between steps.
  pending = None
  with _StopOnInterrupt() as stop:
    try:
      for step in range(start + 1, cfg.steps + 1):
        state, metrics = step_fn(state, next_batch(stage, it, mesh, encode_text))
        done = step
        if pending is not None:
          last = log(*pending)
        pending = (step, metrics) if step % cfg.log.every == 0 or step == cfg.steps else None
        bar.update(1)
        if stop.requested:
          break
        if step % cfg.checkpoint.interval == 0 and step != cfg.steps:
          ckpt.save(step, state, data_iter=it, meta=meta)
      if pending is not None:
        last = log(*pending)
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

  The model config saved with it: ``stage.model_config``, else ``cfg.model``. A stage with a
  ``save_export(out_dir, state, *, meta)`` method writes its own folder instead.

  Multi-process runs skip it (the folder is written with a local temporary rename); export from
  the Orbax train checkpoint on one host instead.
  """
  from longlive_jax import checkpoint

  if jax.process_count() > 1:
    return None
  meta = {"stage": cfg.stage, "step": cfg.steps, "train_config": to_dict(cfg)}
  if hasattr(stage, "save_export"):  # a stage whose export is not a DiT (e.g. the VAE)
    return stage.save_export(cfg.export_dir, state, meta=meta)
  model_cfg = getattr(stage, "model_config", None) or resolve_model_config(cfg.model)
  params = stage.export(state)
  return checkpoint.save(cfg.export_dir, cfg=model_cfg, params=params, meta=meta, overwrite=True)
