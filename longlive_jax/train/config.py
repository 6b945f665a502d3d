"""The training configuration: frozen dataclasses loaded from YAML, with ``key=value`` overrides.

``load_config("configs/tiny_teacher.yaml", ["steps=10", "optim.lr=1e-4"])`` reads the YAML file,
applies the dotted overrides and builds a :class:`TrainConfig`. Every value is type-checked against
the dataclass field it lands in; an unknown key or a value of the wrong type raises
:class:`TrainConfigError` naming the key (with its YAML file) and listing the valid keys.

Values are parsed as YAML scalars (``true``, ``null``, ``[1, 2]``), and for float fields a
number-like string is accepted (PyYAML reads ``1e-5`` as a string). Relative paths are used as
given, i.e. relative to the working directory (the shipped configs assume the repository root).

Stage-specific options live under ``options:``. A stage module may define a frozen dataclass
``Options``; the options are then checked and converted to it like every other section (see
:mod:`longlive_jax.train.stages`). Without one they stay a plain (read-only) mapping.

The generic typed-dataclass machinery (building, type coercion, overrides, YAML) lives in
:mod:`longlive_jax.train.config_parse` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from longlive_jax.config import ATTENTION_IMPLS, WanConfig, get_preset
from longlive_jax.sharding import MeshConfig
from longlive_jax.train.config_parse import (  # noqa: F401  (re-exported: the generic parsing lives there)
  TrainConfigError,
  _coerce,
  _fields,
  _RelativeKeyError,
  _type_name,
  apply_overrides,
  build,
  parse_override,
  read_yaml,
  to_dict,
)
from longlive_jax.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """The trained network.

  Attributes:
    preset: a :data:`longlive_jax.config.PRESETS` name, used when neither ``config`` nor ``checkpoint`` is given.
    config: a JSON model config (ours or upstream's ``config.json``), overrides ``preset``.
    checkpoint: a :mod:`longlive_jax.checkpoint` folder to start from (its config wins over both).
    overrides: WanConfig fields replaced after loading (e.g. ``{num_layers: 4}``).
    dtype: compute dtype: ``float32`` or ``bfloat16`` (master weights and optimizer stay float32).
    remat: rematerialise every transformer block in the backward pass (less memory, ~1/3 more compute).
  """

  preset: str = "tiny"
  config: str | None = None
  checkpoint: str | None = None
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    if self.dtype not in ("float32", "bfloat16"):
      raise TrainConfigError(f"model.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
    fields = _fields(WanConfig)
    unknown = sorted(set(self.overrides) - set(fields))
    if unknown:
      raise _RelativeKeyError(f"unknown key overrides.{unknown[0]}; valid keys: {', '.join(fields)}")
    try:
      object.__setattr__(self, "overrides", check_model_fields(self.overrides, "overrides."))
    except TrainConfigError as e:
      raise _RelativeKeyError(str(e)) from e


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmaConfig:
  """EMA of the trained weights (exported instead of the raw weights when enabled)."""

  enabled: bool = False
  decay: float = 0.99
  start_step: int = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  """Where the stage's records come from (see :mod:`longlive_jax.data`).

  Attributes:
    dataset_dir: a built dataset folder (``<data_dir>/<name>/<version>``).
    source: for prompt stages without ``dataset_dir``: a prompt txt (``prompts``) or pairs file
      (``prompt_pairs``), built once into ``data_dir``.
    switch_source: upstream's second txt of switch prompts (``prompt_pairs``).
    data_dir: where ``source`` is built.
    shuffle, num_epochs: shuffling and epochs (None: repeat forever).
    num_threads, prefetch: grain reader threads and prefetch buffer.
    on_error: bad source records: ``skip`` (reported) or ``fail``.
    text_encoder: ``hash`` (a fixed random embedding per prompt / caption, for tests and tiny runs), ``toyworld``
      (the toy world's frozen tiny umT5 and closed-vocabulary tokenizer),
      an upstream umT5 checkpoint (``models_t5_umt5-xxl-enc-bf16.pth`` or ``.safetensors``), or None
      (the stage needs none, or the dataset stores embeddings).
    text_encoder_preset, tokenizer: the umT5 config preset and the tokenizer folder (the Wan model
      folder or its ``google/umt5-xxl``) of a umT5 ``text_encoder``.
    video_encoder: for ``video_latents`` built from ``source`` (a captioned video folder): ``pool``,
      a fixed cheap encoder (8x8 spatial / 4-frame temporal average pool, Wan's latent geometry, and
      a fixed random 3 -> 16 channel projection) for tests and CPU runs. Real latents (Wan VAE) are
      built beforehand with :func:`longlive_jax.data.build_video_latents` and given as ``dataset_dir``.
    num_frames, height, width, fps: the clip each video is cut to before encoding.
    synthetic_videos: when > 0 and ``source`` has no videos yet, write this many synthetic captioned
      videos (moving squares, :func:`longlive_jax.data.write_synthetic_videos`) there first.
    world_clips, world_split, world_switch_prob: ``source: toyworld`` (``videos`` records rendered on
      demand by :class:`longlive_jax.toyworld.data.ClipSource`): how many distinct clips (seeded by
      index), which combinations (``train`` / ``held_out`` / ``all``), and the chance of a prompt switch
      in a clip. The clip is ``num_frames`` frames (1 + 4k) of ``height`` x ``height`` pixels.
  """

  dataset_dir: str | None = None
  source: str | None = None
  switch_source: str | None = None
  data_dir: str = "data"
  shuffle: bool = True
  num_epochs: int | None = None
  num_threads: int = 2
  prefetch: int = 4
  on_error: str = "skip"
  text_encoder: str | None = None
  text_encoder_preset: str = "umt5-xxl"
  tokenizer: str | None = None
  video_encoder: str | None = None
  num_frames: int = 81
  height: int = 480
  width: int = 832
  fps: float | None = 16.0
  synthetic_videos: int = 0
  world_clips: int = 100000
  world_split: str = "train"
  world_switch_prob: float = 0.3


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
  """Orbax train-state checkpoints (``<run_dir>/checkpoints`` unless ``dir`` is set).

  ``interval``: save every N steps (and at the end); ``keep``: newest N kept; ``resume``: start from
  the latest valid checkpoint when one exists; ``async_save``: write in a background thread.
  """

  dir: str | None = None
  interval: int = 500
  keep: int = 3
  resume: bool = True
  async_save: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogConfig:
  """Metrics (``<run_dir>/logs`` unless ``dir`` is set): ``format`` ``jsonl``, ``tensorboard`` or ``both``."""

  dir: str | None = None
  format: str = "jsonl"
  every: int = 1
  progress: bool = True

  def __post_init__(self):
    if self.format not in ("jsonl", "tensorboard", "both", "none"):
      raise TrainConfigError(f"log.format must be jsonl, tensorboard, both or none, got {self.format!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
  """Final inference export (:func:`longlive_jax.checkpoint.save`) to ``dir`` (``<run_dir>/export``)."""

  enabled: bool = True
  dir: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
  """``jax.distributed.initialize`` (see :mod:`longlive_jax.sharding`)."""

  initialize: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """One training run. ``batch_size`` is the global batch (over all devices and processes).

  ``compile_cache_dir``: JAX's persistent compilation cache (a restarted run skips compilation).
  ``attention``: the attention implementation every call of this run is traced with (one of
  ``ATTENTION_IMPLS``; None: each model's own ``attention_impl``). Training only: exported models keep
  their config's ``attention_impl``. On CPU, "xla" trains a small model faster than "auto"'s chunked
  kernel, whose backward pass goes through its key scan (toy teacher: 1.67 s against 1.97 s per step).
  """

  stage: str
  run_dir: str
  steps: int
  batch_size: int = 1
  seed: int = 0
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  ema: EmaConfig = dataclasses.field(default_factory=EmaConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
  log: LogConfig = dataclasses.field(default_factory=LogConfig)
  export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
  distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
  options: Any = dataclasses.field(default_factory=dict)
  compile_cache_dir: str | None = None
  attention: str | None = None

  def __post_init__(self):
    if self.steps < 0 or self.batch_size < 1:
      raise TrainConfigError(f"steps must be >= 0 and batch_size >= 1, got {self.steps} and {self.batch_size}")
    if not 0 <= self.seed < 2**32:
      raise TrainConfigError(f"seed must be in [0, 2**32), got {self.seed}")
    if self.attention is not None and self.attention not in ATTENTION_IMPLS:
      raise TrainConfigError(f"attention must be one of {', '.join(ATTENTION_IMPLS)} or null, got {self.attention!r}")

  @property
  def checkpoint_dir(self) -> Path:
    return Path(self.checkpoint.dir or Path(self.run_dir) / "checkpoints")

  @property
  def log_dir(self) -> Path:
    return Path(self.log.dir or Path(self.run_dir) / "logs")

  @property
  def export_dir(self) -> Path:
    return Path(self.export.dir or Path(self.run_dir) / "export")

  def to_dict(self) -> dict[str, Any]:
    return to_dict(self)


# ------------------------------------------------------------------------------------------ loading


def check_model_fields(values: Mapping[str, Any], where: str, *, strict: bool = False) -> dict[str, Any]:
  """The :class:`WanConfig` fields among ``values`` (a JSON model config, ``model.overrides``) checked against
  the field's type (``"dim": "thirty-two"`` fails here, naming ``where`` and the key, instead of deep inside the
  model); returns them converted (YAML's ``1e-6`` string -> float). ``strict``: no strings for numbers (JSON)."""
  fields = _fields(WanConfig)
  out = dict(values)
  for k, v in values.items():
    if k in fields:
      if strict and isinstance(v, str) and fields[k] is not str:
        raise TrainConfigError(f"{where}{k}: expected {_type_name(fields[k])}, got {v!r} (str)")
      out[k] = _coerce(v, fields[k], f"{where}{k}")
  return out


def _check_model(model: ModelConfig) -> None:
  """A ``model.config`` JSON file names WanConfig fields with values of their types (``model.overrides`` are
  checked by :class:`ModelConfig` itself)."""
  if model.config is not None and model.checkpoint is None:
    import json

    p = Path(model.config)
    try:
      d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise TrainConfigError(f"model.config: cannot read {p}: {e}") from e
    if not isinstance(d, dict):
      raise TrainConfigError(f"model.config: {p} holds {type(d).__name__}, not a JSON object of config fields")
    check_model_fields(d, f"model.config ({p}): ", strict=True)


def check_output_dirs(cfg: TrainConfig) -> None:
  """``run_dir`` and the checkpoint / log / export folders are folders this process can create or write into
  (a file there, or a read-only folder, fails before any work, naming the key)."""
  dirs = [("run_dir", Path(cfg.run_dir)), ("checkpoint.dir", cfg.checkpoint_dir)]
  if cfg.log.format != "none":
    dirs.append(("log.dir", cfg.log_dir))
  if cfg.export.enabled:
    dirs.append(("export.dir", cfg.export_dir))
  for key, d in dirs:
    for parent in [d, *d.parents]:
      if not parent.exists():
        continue
      if not parent.is_dir():
        what = "is a file" if parent == d else f"lies under {parent}, which is a file"
        raise TrainConfigError(f"{key} {d}: {what}, not a folder")
      if not os.access(parent, os.W_OK | os.X_OK):
        raise TrainConfigError(f"{key} {d}: cannot write into {parent} (permission denied)")
      break


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
  """Builds the config and converts ``options`` with the stage's ``Options`` dataclass, if it has one."""
  from longlive_jax.train import stages

  cfg = build(TrainConfig, values)
  _check_model(cfg.model)
  if cfg.stage not in stages.STAGES:
    raise TrainConfigError(f"unknown stage {cfg.stage!r}; valid stages: {', '.join(stages.STAGES)}")
  opts_cls = stages.options_class(cfg.stage)
  raw = cfg.options if cfg.options is not None else {}
  if opts_cls is not None:
    opts = _coerce(raw, opts_cls, "options")
  else:
    opts = types.MappingProxyType(dict(raw)) if isinstance(raw, Mapping) else raw
  return dataclasses.replace(cfg, options=opts)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
  """Reads ``path`` (YAML), applies ``key=value`` overrides and builds the :class:`TrainConfig`."""
  values = read_yaml(path)
  try:
    return config_from_dict(apply_overrides(values, overrides, cls=TrainConfig))
  except TrainConfigError as e:
    raise TrainConfigError(f"{path}: {e}") from e


def resolve_model_config(model: ModelConfig) -> WanConfig:
  """The :class:`WanConfig` a run trains: from ``checkpoint``, ``config`` or ``preset``, then ``overrides``;
  compute dtype from ``model.dtype``, parameters always float32 (the master weights)."""
  from longlive_jax import checkpoint

  if model.checkpoint is not None:
    base = WanConfig.from_dict(checkpoint.read_meta(model.checkpoint)["config"])
  elif model.config is not None:
    try:
      base = WanConfig.load(model.config)
    except (TypeError, ValueError) as e:
      raise TrainConfigError(f"model.config ({model.config}): {e}") from e
  else:
    base = get_preset(model.preset)
  try:
    return base.replace(**{**model.overrides, "dtype": model.dtype, "param_dtype": "float32"})
  except (TypeError, ValueError) as e:
    raise TrainConfigError(f"model.overrides: {e}; valid keys: {', '.join(base.to_dict())}") from e
