"""End-to-end DiT conversion: upstream file(s) -> checked, converted parameters -> Orbax checkpoint."""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path

import jax

from longlive_jax import checkpoint
from longlive_jax.config import PRESETS, ConfigError, WanConfig, get_preset
from longlive_jax.convert import lora as lora_lib
from longlive_jax.convert import sources, wan_dit
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
  """A converted DiT before it is written: config, parameters, optional separate adapter."""

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
  progress: bool = True,
) -> DitParts:
  """Reads and converts a Wan / LongLive DiT checkpoint (optionally with a LoRA), checking every key and shape."""
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

  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=len(src), desc="converting DiT", unit="tensor")

  def tick(done, total):
    if bar is not None:
      bar.update(done - bar.n)

  params = wan_dit.convert(model_src, cfg, progress=tick)
  if bar is not None:
    bar.close()
  return DitParts(cfg, params, adapter, adapter_meta, cfg_source, len(src), src_path)


def convert_dit(
  src_path: str | Path,
  out: str | Path,
  *,
  overwrite: bool = False,
  **kwargs,
) -> ConvertSummary:
  """Converts a Wan / LongLive DiT checkpoint (optionally with a LoRA) into an Orbax checkpoint folder.

  ``kwargs`` are those of :func:`build_dit`.
  """
  t0 = time.time()
  out = Path(out)
  if out.exists() and not overwrite:
    raise CheckpointError(f"{out}: already exists (pass --overwrite to replace it)")
  d = build_dit(src_path, **kwargs)
  num_params = sum(v.size for v in jax.tree.leaves(d.params))
  checkpoint.save(
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
