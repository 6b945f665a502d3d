"""grain input pipelines over the ArrayRecord datasets written by :mod:`longlive_jax.data.builders`.

Order of operations (``grain.MapDataset``, random access, so every stage is index arithmetic and
the iterator state is a few integers):

  source -> [even_shards: drop the last len % shard_count records] -> shard ``[index::count]``
  -> shuffle(seed) -> repeat(num_epochs; None = forever, each epoch reshuffled) -> decode
  -> batch -> ``to_iter_dataset`` (reader threads + prefetch) -> [encode_text on the batch]

:func:`batched` is that pipeline over any random-access source (the decode step is the source's);
:func:`npz_dataset` runs it over an ``.npz`` of stacked arrays (:class:`NpzRecords`).

Sharding defaults to this JAX process (``jax.process_index()`` of ``jax.process_count()``): the
shards partition the records, with no overlap. ``even_shards`` (default) gives every process the
same number of records per epoch so their epochs stay aligned. The text encoder runs on the
consuming thread, in order, once per batch.

Batches are dicts: strings become ``list[str]``, numbers and arrays are stacked on a new leading
axis. Per kind: ``prompts`` -> ``prompt, index, line`` (+ ``text_embedding [B, L, D]`` with
``encode_text``); ``prompt_pairs`` -> ``prompt_a, prompt_b, index, line`` (+ ``text_embedding_a``,
``text_embedding_b``, one encoder call for both); ``video_latents`` -> ``latents [B, F, h, w, C]``,
``text_embedding [B, L, D]`` (float32, or ``ml_dtypes.bfloat16`` when stored as bf16 bits),
``caption``, ``file``, ``index``.

Checkpointing: the iterator is a ``grain.DatasetIterator``: ``it.get_state()`` is a small
JSON-able dict and ``it.set_state(state)`` on a fresh iterator of the same pipeline resumes exactly.
With Orbax save it next to the train state, e.g.
``ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointSave(it))`` and restore with
``grain.checkpoint.CheckpointRestore(it)`` (one file per process).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import ml_dtypes
import numpy as np
import tensorflow_datasets as tfds

from longlive_jax.data.report import DataError

KINDS = ("prompts", "prompt_pairs", "video_latents")
_TEXT_FIELDS = {"prompts": ("prompt",), "prompt_pairs": ("prompt_a", "prompt_b"), "video_latents": ("caption", "file")}


def open_source(dataset_dir: str | Path, *, split: str = "train") -> tuple[str, Any]:
  """``(kind, random-access source)`` of a built dataset folder (``<data_dir>/<name>/<version>``)."""
  path = Path(dataset_dir)
  if not (path / "dataset_info.json").is_file():
    raise DataError(f"{path}: not a built dataset folder (no dataset_info.json); pass BuildResult.dataset_dir")
  builder = tfds.builder_from_directory(str(path))
  kind = builder.info.name
  if kind not in KINDS:
    raise DataError(f"{path}: dataset {kind!r} is none of {KINDS}")
  if split not in builder.info.splits:
    raise DataError(f"{path}: no split {split!r} (has {list(builder.info.splits)})")
  return kind, builder.as_data_source(split=split)


def _decode(kind: str, record: dict[str, Any]) -> dict[str, Any]:
  out = dict(record)
  for key in _TEXT_FIELDS[kind]:
    out[key] = record[key].decode("utf-8")
  for key in ("latents", "text_embedding"):
    if key in out and out[key].dtype == np.uint16:  # bfloat16 stored as its bit pattern
      out[key] = out[key].view(ml_dtypes.bfloat16)
  return out


def collate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Strings -> list, everything else stacked on a new leading batch axis."""
  out = {}
  for key, first in records[0].items():
    values = [r[key] for r in records]
    out[key] = values if isinstance(first, str) else np.stack([np.asarray(v) for v in values])
  return out


def _encode(kind: str, encode_text: Callable[[list[str]], Any], batch: dict[str, Any]) -> dict[str, Any]:
  out = dict(batch)
  if kind == "prompts":
    out["text_embedding"] = np.asarray(encode_text(batch["prompt"]))  # [B, L, D]
  else:
    n = len(batch["prompt_a"])
    emb = np.asarray(encode_text(batch["prompt_a"] + batch["prompt_b"]))  # [2B, L, D]
    out["text_embedding_a"], out["text_embedding_b"] = emb[:n], emb[n:]  # [B, L, D] each
  return out


def make_dataset(
  dataset_dir: str | Path,
  *,
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  shard_index: int | None = None,
  shard_count: int | None = None,
  even_shards: bool = True,
  drop_remainder: bool = True,
  encode_text: Callable[[list[str]], Any] | None = None,
  num_threads: int = 2,
  prefetch_buffer_size: int = 4,
  split: str = "train",
) -> grain.IterDataset:
  """The batched, sharded, shuffled, repeated pipeline over a built dataset (see the module doc)."""
  kind, source = open_source(dataset_dir, split=split)
  if encode_text is not None and kind == "video_latents":
    raise ValueError(f"make_dataset: {dataset_dir} already holds caption embeddings; encode_text is for prompt sets")
  it = batched(
    source,
    name=str(dataset_dir),
    batch_size=batch_size,
    seed=seed,
    shuffle=shuffle,
    num_epochs=num_epochs,
    shard_index=shard_index,
    shard_count=shard_count,
    even_shards=even_shards,
    drop_remainder=drop_remainder,
    decode=functools.partial(_decode, kind),
    num_threads=num_threads,
    prefetch_buffer_size=prefetch_buffer_size,
  )
  if encode_text is not None:
    it = it.map(functools.partial(_encode, kind, encode_text))
  return it


def batched(
  source: Any,
  *,
  name: str,
  batch_size: int,
  seed: int,
  shuffle: bool = True,
  num_epochs: int | None = None,
  shard_index: int | None = None,
  shard_count: int | None = None,
  even_shards: bool = True,
  drop_remainder: bool = True,
  decode: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
  num_threads: int = 2,
  prefetch_buffer_size: int = 4,
) -> grain.IterDataset:
  """The pipeline of the module doc over any random-access ``source`` of record dicts (``name`` in errors).

  :func:`make_dataset` (built tfds datasets) and :func:`npz_dataset` are this over their sources.
  """
  if shard_index is None or shard_count is None:
    if shard_index is not None or shard_count is not None:
      raise ValueError(f"make_dataset: give both shard_index and shard_count, got {shard_index} and {shard_count}")
    shard_index, shard_count = jax.process_index(), jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"make_dataset: shard_index={shard_index} is not in [0, shard_count={shard_count})")
  if batch_size < 1 or (num_epochs is not None and num_epochs < 1):
    raise ValueError(f"make_dataset: batch_size={batch_size} and num_epochs={num_epochs} must be positive")
  if not 0 <= seed < 2**32:
    raise ValueError(f"make_dataset: seed={seed} must be in [0, 2**32)")
  ds = grain.MapDataset.source(source)
  n = len(ds)
  if even_shards:
    ds = ds[: n - n % shard_count]
  ds = ds[shard_index::shard_count]
  if len(ds) == 0:
    raise DataError(f"{name}: shard {shard_index} of {shard_count} is empty ({n} records)")
  if len(ds) < batch_size and drop_remainder and num_epochs is not None:
    raise DataError(f"{name}: shard has {len(ds)} records, fewer than one batch of {batch_size}")
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  if decode is not None:
    ds = ds.map(decode)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=collate)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))


class NpzRecords:
  """Random access to the records of an ``.npz`` of stacked arrays (record i = every array's row i).

  Unicode arrays give ``str`` records. For record kinds without a tfds builder (e.g. ``ode_pairs``).
  """

  def __init__(self, path: str | Path):
    try:
      with np.load(path, allow_pickle=False) as z:
        self.arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
      raise DataError(f"{path}: not a readable .npz of arrays: {e}") from e
    sizes = {k: len(v) for k, v in self.arrays.items() if np.ndim(v)}
    if not sizes or len(set(sizes.values())) != 1:
      raise DataError(f"{path}: arrays must share their leading (record) axis, got {sizes}")
    self.n = next(iter(sizes.values()))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {k: str(v[i]) if v.dtype.kind == "U" else v[i] for k, v in self.arrays.items()}


def save_npz_records(path: str | Path, **arrays: np.ndarray) -> Path:
  """Writes stacked record arrays (what :class:`NpzRecords` reads) atomically: a temporary sibling renamed into place."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".partial.npz")
  np.savez(tmp, **arrays)
  tmp.replace(path)
  return path


def npz_dataset(path: str | Path, **kwargs: Any) -> grain.IterDataset:
  """:func:`batched` over the records of an ``.npz`` of stacked arrays (:class:`NpzRecords`); checkpointable
  like the ArrayRecord pipelines. ``kwargs``: the options of :func:`batched`."""
  return batched(NpzRecords(path), name=str(path), **kwargs)


def make_iterator(dataset_dir: str | Path, **kwargs: Any) -> grain.DatasetIterator:
  """``iter(make_dataset(...))``: a checkpointable iterator (``get_state`` / ``set_state``)."""
  return iter(make_dataset(dataset_dir, **kwargs))
