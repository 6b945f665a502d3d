"""Orbax checkpoints of converted models: ``<dir>/params`` (+ ``<dir>/lora``) and ``<dir>/longlive_jax.json``.

Writes go to a sibling temporary folder that is renamed into place only after
everything (parameters, adapter, metadata) is on disk, so an interrupted
conversion never leaves a folder that loads as a valid checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from longlive_jax.config import WanConfig
from longlive_jax.convert.errors import CheckpointError
from longlive_jax.model.params import check_params, params_of
from longlive_jax.model.wan import abstract_model

META_FILE = "longlive_jax.json"
FORMAT_VERSION = 1


def save(
  out_dir: str | Path,
  *,
  cfg: WanConfig | None = None,
  params: dict | None = None,
  adapter: dict | None = None,
  adapter_meta: dict | None = None,
  meta: dict | None = None,
  components: Mapping[str, tuple[Any, dict]] | None = None,
  files: Mapping[str, str | Path] | None = None,
  overwrite: bool = False,
  write_trees: Callable[[Path, Mapping[str, Any]], None] | None = None,
) -> Path:
  """Saves a model (and optionally a separate LoRA adapter) as an Orbax checkpoint folder.

  ``components`` adds other models of the pipeline, ``name -> (params, config dict)``, each in
  ``<dir>/<name>`` (e.g. ``vae``, ``umt5``); ``files`` copies files or folders verbatim into
  ``<dir>/<name>`` (e.g. the tokenizer). All of it is renamed into place at once. ``cfg`` and
  ``params`` may both be None: a folder of components only (e.g. a trained VAE).
  ``write_trees(folder, {name: tree})`` writes the trees (``params``, ``lora``, components) as Orbax
  folders ``folder/<name>``; the default is Orbax's ``StandardCheckpointer``. The converter passes
  its streaming writer (:func:`longlive_jax.convert.writer.save`).
  """
  if (cfg is None) != (params is None):
    raise ValueError("checkpoint.save: give the DiT's cfg and params together (or neither)")
  out = Path(out_dir).absolute()
  if out.exists() and not overwrite:
    raise CheckpointError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
  try:
    trees = {"params": params, "lora": adapter, **{name: p for name, (p, _) in (components or {}).items()}}
    (write_trees or _write_standard)(tmp, {k: v for k, v in trees.items() if v is not None})
    for name, src in (files or {}).items():
      src = Path(src)
      if src.is_dir():
        shutil.copytree(src, tmp / name)
      else:
        shutil.copy2(src, tmp / name)
    info = {
      "format_version": FORMAT_VERSION,
      "model": "wan_dit" if cfg is not None else None,
      "config": cfg.to_dict() if cfg is not None else None,
      "lora": adapter_meta,
      "has_adapter": adapter is not None,
      "meta": meta or {},
      "components": {name: {"config": c} for name, (_, c) in (components or {}).items()},
      "files": {name: name for name in (files or {})},
    }
    (tmp / META_FILE).write_text(json.dumps(info, indent=2, default=str))
    if out.exists():
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def _write_standard(folder: Path, trees: Mapping[str, Any]) -> None:
  ckptr = ocp.StandardCheckpointer()
  for name, tree in trees.items():
    ckptr.save(folder / name, tree)
  ckptr.wait_until_finished()


def read_meta(ckpt_dir: str | Path) -> dict[str, Any]:
  path = Path(ckpt_dir).absolute()
  meta_path = path / META_FILE
  if not path.is_dir():
    raise CheckpointError(f"{path}: no such checkpoint folder")
  if not meta_path.is_file():
    raise CheckpointError(f"{path}: not a longlive-jax checkpoint ({META_FILE} missing; an interrupted save?)")
  try:
    info = json.loads(meta_path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{meta_path}: unreadable: {e}") from e
  if info.get("format_version") != FORMAT_VERSION:
    raise CheckpointError(f"{meta_path}: unsupported format_version {info.get('format_version')!r}")
  return info


def _abstract_like(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def check_finite(tree, *, origin: str) -> None:
  """Raises :class:`CheckpointError` naming the first parameter (tree path) holding NaN / inf and the count.

  Weights that never went through conversion (a training export, a copied folder) are checked where they enter,
  so a broken checkpoint is an error, not an all-NaN video. One pass over the parameters, on device.
  """
  for key, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
      continue
    bad = int(jnp.sum(~jnp.isfinite(leaf)))
    if bad:
      raise CheckpointError(f"{origin}: parameter {jax.tree_util.keystr(key)} holds {bad} non-finite values (NaN/inf)")


def load(ckpt_dir: str | Path, *, dtype: str | None = None) -> tuple[WanConfig, dict, dict | None, dict]:
  """Loads ``(config, params, adapter_or_None, info)``; ``dtype`` overrides the compute dtype of the config."""
  path = Path(ckpt_dir).absolute()
  info = read_meta(path)
  if info.get("config") is None:
    have = ", ".join(info.get("components") or {}) or "nothing"
    raise CheckpointError(f"{path}: holds no diffusion transformer (only: {have})")
  cfg = WanConfig.from_dict(info["config"])
  if dtype is not None:
    cfg = cfg.replace(dtype=dtype)
  target = params_of(abstract_model(cfg))
  ckptr = ocp.StandardCheckpointer()
  try:
    params = ckptr.restore(path / "params", _abstract_like(target))
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise CheckpointError(f"{path}/params: does not match the config in {META_FILE}: {e}") from e
  # Orbax restores the stored shapes whatever the target says: check them against the config.
  check_params(cfg, params, origin=f"{path}/params (config from {META_FILE})")
  check_finite(params, origin=f"{path}/params")
  adapter = None
  if info.get("has_adapter"):
    adapter = ckptr.restore(path / "lora")
  return cfg, params, adapter, info


def load_component(ckpt_dir: str | Path, name: str, *, target=None) -> tuple[dict, Any]:
  """``(config dict, params)`` of a pipeline component saved with :func:`save` (``components``).

  ``target`` (a pytree of arrays or ``jax.ShapeDtypeStruct``) fixes structure, dtypes and shardings.
  """
  path = Path(ckpt_dir).absolute()
  info = read_meta(path)
  comps = info.get("components") or {}
  if name not in comps:
    have = ", ".join(comps) or "none"
    raise CheckpointError(
      f"{path}: holds no {name!r} component (it has: {have}); convert the whole model with "
      "'longlive-jax convert --wan-dir DIR --longlive-dir DIR --out CKPT'"
    )
  ckptr = ocp.StandardCheckpointer()
  try:
    params = ckptr.restore(path / name, _abstract_like(target) if target is not None else None)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise CheckpointError(f"{path}/{name}: unreadable or does not match its config: {e}") from e
  check_finite(params, origin=f"{path}/{name}")
  return comps[name]["config"], params


def component_file(ckpt_dir: str | Path, name: str) -> Path:
  """Path of a file / folder copied into the checkpoint with ``files`` (e.g. ``tokenizer``)."""
  path = Path(ckpt_dir).absolute()
  info = read_meta(path)
  if name not in (info.get("files") or {}):
    raise CheckpointError(f"{path}: holds no {name!r} files (convert the whole model with --wan-dir)")
  return path / info["files"][name]


def native_latent_size(info: Mapping[str, Any]) -> tuple[int, int] | None:
  """``(height, width)`` in latents of a checkpoint's native resolution (``read_meta`` output), or ``None``.

  The metadata's ``native_resolution`` is in pixels; the spatial stride is its VAE component's
  (``2 ** (len(dim_mult) - 1)``: 8 for Wan2.1, 4 for the toy world's), 8 without a VAE component.
  """
  native = (info.get("meta") or {}).get("native_resolution")
  if not native:
    return None
  vae = (info.get("components") or {}).get("vae")
  stride = 2 ** (len(vae["config"].get("dim_mult", (1, 2, 4, 4))) - 1) if vae and vae.get("config") else 8
  return int(native[0]) // stride, int(native[1]) // stride


STREAM_DEFAULTS = {"block_frames": 3, "sink_frames": 3, "window_frames": 12, "rope_horizon": 0}  # LongLive's


def trained_stream(info: Mapping[str, Any]) -> dict[str, int]:
  """``{block_frames, sink_frames, window_frames, rope_horizon}`` a checkpoint streams best with (``read_meta``
  output): its metadata's ``stream`` entry (written by ``toyworld assemble``), else LongLive's (3, 3, 12, and
  absolute positions: horizon 0). Streaming with a wider window than the model was trained with shows it context
  it never saw; the horizon (see :class:`longlive_jax.stream.cache.StreamSpec`) is measured per model."""
  stream = (info.get("meta") or {}).get("stream") or {}
  return {k: int(stream.get(k, v)) for k, v in STREAM_DEFAULTS.items()}
