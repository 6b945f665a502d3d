"""End-to-end DiT conversion: upstream file(s) -> checked, converted parameters -> Orbax checkpoint.

Every key and shape is checked before anything is written; tensors are then read, converted
and written one layer at a time (:mod:`longlive_jax.convert.writer`), so peak memory stays
near a few tensors, not the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jax

from longlive_jax.config import PRESETS, ConfigError, WanConfig, get_preset
from longlive_jax.convert import lora as lora_lib
from longlive_jax.convert import sources, wan_dit, writer
from longlive_jax.convert.errors import CheckpointError


def resolve_config(src: sources.TensorSource, src_path: Path, config: str | None) -> tuple[WanConfig, str]:
  """The model config: ``--config`` (preset or JSON) > ``config.json`` beside the weights > shapes."""
  if config:
    if config.lower() in PRESETS:
      return get_preset(config), f"preset {config}"
    p = Path(config)
    if not p.is_file():
      raise ConfigError(f"--config {config!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
    return WanConfig.load(p), str(p)
  folder = src_path if src_path.is_dir() else src_path.parent
  cfg_file = folder / "config.json"
  if cfg_file.is_file():
    try:
      d = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise ConfigError(f"{cfg_file}: unreadable: {e}") from e
    if isinstance(d, dict) and "dim" in d and "num_heads" in d:
      return WanConfig.from_upstream(d), str(cfg_file)
  cfg = wan_dit.infer_config(src)
  return cfg, (
    f"inferred from tensor shapes: dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_heads} heads "
    "(assumes head_dim 128; pass --config or --num-heads otherwise)"
  )


@dataclasses.dataclass
class ConvertSummary:
  out: Path
  config_source: str
  num_tensors: int
  num_params: int
  lora: dict | None
  seconds: float
  peak_rss_mb: float


@dataclasses.dataclass
class DitParts:
  """A checked DiT before it is converted and written: config, lazy parameters, optional separate adapter.

  ``params`` holds :class:`~longlive_jax.convert.lazy.LazyLeaf` values: they are read and converted
  while :func:`~longlive_jax.convert.writer.save` writes them (``lazy.materialize_tree`` for arrays).
  """

  cfg: WanConfig
  params: dict
  adapter: dict | None
  adapter_meta: dict | None
  config_source: str
  num_tensors: int
  source: Path


def build_dit(
  src_path: str | Path,
  *,
  config: str | None = None,
  container: str | None = None,
  lora: str | Path | None = None,
  lora_container: str | None = None,
  lora_alpha: float | None = None,
  lora_mode: str = "merge",
  dtype: str | None = None,
  num_heads: int | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> DitParts:
  """Opens a Wan / LongLive DiT checkpoint (optionally with a LoRA), checking every key and shape.

  ``progress(done, total)`` is called per tensor as the lazy parameters are computed.
  """
  src_path = Path(src_path)
  if lora_mode not in ("merge", "separate"):
    raise ConfigError(f"--lora-mode must be 'merge' or 'separate', got {lora_mode!r}")
  src = sources.open_state_dict(src_path, container=container)
  cfg, cfg_source = resolve_config(src, src_path, config)
  if dtype is not None:
    cfg = cfg.replace(param_dtype=dtype)
  if num_heads is not None:
    cfg = cfg.replace(num_heads=num_heads)
  wan_dit.check_keys(src, cfg, origin=src.origin)
  adapter = adapter_meta = None
  model_src = src
  if lora is not None:
    peft = lora_lib.read_peft_lora(lora, container=lora_container, alpha=lora_alpha)
    lora_lib.check_against_base(peft, src, shape_of=src.shape)
    adapter_meta = {
      "rank": peft.rank,
      "alpha": peft.alpha,
      "scale": peft.scale,
      "alpha_source": peft.alpha_source,
      "modules": len(peft.modules),
      "origin": peft.origin,
      "mode": lora_mode,
    }
    if lora_mode == "merge":
      model_src = lora_lib.MergedSource(src, peft)
    else:
      adapter = lora_lib.adapter_tree(peft, cfg)

  params = wan_dit.convert_lazy(model_src, cfg, progress=progress)
  return DitParts(cfg, params, adapter, adapter_meta, cfg_source, len(src), src_path)


@contextlib.contextmanager
def progress_bar(show: bool, desc: str) -> Iterator[Callable[[int, int], None] | None]:
  """A ``(done, total)`` callback drawing a tqdm bar (None when ``show`` is false)."""
  if not show:
    yield None
    return
  from tqdm import tqdm

  bar = tqdm(desc=desc, unit="tensor")

  def tick(done, total):
    bar.total = total
    bar.update(done - bar.n)

  try:
    yield tick
  finally:
    bar.close()


def convert_dit(
  src_path: str | Path,
  out: str | Path,
  *,
  overwrite: bool = False,
  **kwargs,
) -> ConvertSummary:
  """Converts a Wan / LongLive DiT checkpoint (optionally with a LoRA) into an Orbax checkpoint folder.

  ``kwargs`` are those of :func:`build_dit`, with ``progress`` a bool (draw a progress bar).
  Tensors are converted while they are written: peak memory is about one tensor and a few layers.
  """
  t0 = time.time()
  out = Path(out)
  if out.exists() and not overwrite:
    raise CheckpointError(f"{out}: already exists (pass --overwrite to replace it)")
  show = kwargs.pop("progress", True)
  with progress_bar(show, "converting DiT") as tick:
    d = build_dit(src_path, progress=tick, **kwargs)
    num_params = sum(v.size for v in jax.tree.leaves(d.params))
    writer.save(
      out,
      cfg=d.cfg,
      params=d.params,
      adapter=d.adapter,
      adapter_meta=d.adapter_meta,
      meta={"source": str(d.source), "config_source": d.config_source, "num_params": num_params},
      overwrite=overwrite,
    )
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  return ConvertSummary(out, d.config_source, d.num_tensors, num_params, d.adapter_meta, time.time() - t0, peak)
