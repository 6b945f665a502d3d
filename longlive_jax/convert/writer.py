"""Streaming writes of converted checkpoints: each parameter is computed while it is written.

The converters return trees of :class:`LazyLeaf` (shape and dtype known, values computed on
demand from the lazily read upstream tensors). :func:`save` hands them to Orbax through a
type handler that writes one leaf at a time, a layer-stacked leaf one layer (one zarr chunk)
at a time (at most ``IN_FLIGHT`` layers or ``IN_FLIGHT_BYTES`` queued), so peak memory is about
one upstream tensor plus a few converted layers, whatever the size of the model. The folder has exactly the layout and metadata of
:func:`longlive_jax.checkpoint.save` (whose ``StandardCheckpointer`` path copies every array
before writing it: about twice the model in memory) and loads with
:func:`longlive_jax.checkpoint.load` / ``load_component``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from orbax.checkpoint import future

from longlive_jax import checkpoint
from longlive_jax.config import WanConfig
from longlive_jax.convert.errors import CheckpointError
from longlive_jax.convert.lazy import LazyLeaf

# Layers of one leaf written concurrently: OCDBT commits the writes that queue up together (one
# commit per layer costs ~4 ms of CPU each). Pending writes hold their arrays, so they are also
# capped in bytes (a single layer above the cap is still written, alone).
IN_FLIGHT = 4
IN_FLIGHT_BYTES = 256 << 20


class _LazyLeafHandler(ocp.type_handlers.NumpyHandler):
  """Writes :class:`LazyLeaf` values as ``np.ndarray`` parameters (restored by Orbax's own numpy handler).

  Leaves are written one after another; a stacked leaf gets one zarr chunk per layer and is
  written layer by layer, so at most ``IN_FLIGHT + 1`` layers (and about ``IN_FLIGHT_BYTES``), plus the
  tensor being read, are in memory.
  An error raised while a leaf is computed (a corrupt or non-finite tensor) stops the writes and
  is kept in ``failure``: :func:`save` re-raises it in the calling thread (raised in Orbax's
  write thread, it would be logged with a traceback first).
  """

  def __init__(self):
    super().__init__(deepcopy_host_arrays=False)
    self.failure: BaseException | None = None

  def typestr(self) -> str:
    return "np.ndarray"  # the same record as a numpy leaf: restoring needs nothing of ours

  async def serialize(self, values, infos, args=None):
    args = args or [ocp.SaveArgs()] * len(values)
    return [future.CommitFutureAwaitingContractedSignals(self._write(values, infos, args), name="lazy_leaf")]

  async def _write(self, values, infos, args):
    for leaf, info, arg in zip(values, infos, args, strict=True):
      if self.failure is not None:
        return
      await info.await_path_creation()
      if leaf.stacked and leaf.ndim > 0:
        arg = dataclasses.replace(arg, shard_axes=(0,))  # chunk shape (1, *shape[1:]): one chunk per layer
      use_ocdbt = info.is_ocdbt_checkpoint
      spec = ocp.type_handlers.get_json_tspec_write(
        info,
        use_ocdbt,
        leaf.shape,
        leaf.shape,
        leaf.dtype,
        process_index=jax.process_index() if use_ocdbt else None,
        arg=arg,
      )
      store = await ts.open(ts.Spec(spec), create=True, open=True, context=info.ts_context)
      pending: collections.deque = collections.deque()  # writes in flight (they hold their arrays)
      parts = leaf.iter_parts()
      while True:
        try:
          index, arr = next(parts)
        except StopIteration:
          break
        except Exception as e:  # handed to the caller's thread by save()
          self.failure = e
          await asyncio.gather(*(w for w, _ in pending), return_exceptions=True)
          return
        target = store if index is None else store[index]
        pending.append((target.write(arr, can_reference_source_data_indefinitely=True), arr.nbytes))
        del arr
        while len(pending) > IN_FLIGHT or (len(pending) > 1 and sum(n for _, n in pending) > IN_FLIGHT_BYTES):
          await pending.popleft()[0]
      await asyncio.gather(*(w for w, _ in pending))


def _checkpointer() -> tuple[ocp.Checkpointer, _LazyLeafHandler]:
  """A checkpointer whose own registry (Orbax's global one is left alone) adds :class:`LazyLeaf`."""
  th = ocp.type_handlers
  handler = _LazyLeafHandler()
  registry = th.create_type_handler_registry(
    (LazyLeaf, handler),
    (int, th.ScalarHandler()),
    (float, th.ScalarHandler()),
    (np.number, th.ScalarHandler()),
    (np.ndarray, th.NumpyHandler()),  # after LazyLeaf: the "np.ndarray" record stays Orbax's own
    (jax.Array, th.ArrayHandler()),
    (str, th.StringHandler()),
  )
  return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=True, type_handler_registry=registry)), handler


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
) -> Path:
  """:func:`longlive_jax.checkpoint.save` for trees that may hold :class:`LazyLeaf` values (written streaming).

  Same arguments, same folder (``params/``, ``lora/``, one folder per component, copied files,
  ``longlive_jax.json``), written to a temporary sibling and renamed into place at the end.
  An error raised while a leaf is computed (e.g. :class:`CheckpointError` for a NaN tensor or a
  corrupt file) is raised here as itself, and nothing is left behind.
  """
  if (cfg is None) != (params is None):
    raise ValueError("writer.save: give the DiT's cfg and params together (or neither)")
  out = Path(out_dir).absolute()
  if out.exists() and not overwrite:
    raise CheckpointError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
  try:
    ckptr, handler = _checkpointer()
    trees = {"params": params, "lora": adapter}
    trees.update({name: p for name, (p, _) in (components or {}).items()})
    for name, tree in trees.items():
      if tree is None:
        continue
      ckptr.save(tmp / name, args=ocp.args.PyTreeSave(tree))
      if handler.failure is not None:
        raise handler.failure
    for name, src in (files or {}).items():
      src = Path(src)
      if src.is_dir():
        shutil.copytree(src, tmp / name)
      else:
        shutil.copy2(src, tmp / name)
    info = {
      "format_version": checkpoint.FORMAT_VERSION,
      "model": "wan_dit" if cfg is not None else None,
      "config": cfg.to_dict() if cfg is not None else None,
      "lora": adapter_meta,
      "has_adapter": adapter is not None,
      "meta": meta or {},
      "components": {name: {"config": c} for name, (_, c) in (components or {}).items()},
      "files": {name: name for name in (files or {})},
    }
    (tmp / checkpoint.META_FILE).write_text(json.dumps(info, indent=2, default=str))
    if out.exists():
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out
