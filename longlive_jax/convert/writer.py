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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from orbax.checkpoint import future

from longlive_jax import checkpoint
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


def save(out_dir: str | Path, **kwargs: Any) -> Path:
  """:func:`longlive_jax.checkpoint.save` for trees that may hold :class:`LazyLeaf` values (written streaming).

  Same keyword arguments, same folder (``params/``, ``lora/``, one folder per component, copied files,
  ``longlive_jax.json``), written to a temporary sibling and renamed into place at the end.
  An error raised while a leaf is computed (e.g. :class:`CheckpointError` for a NaN tensor or a
  corrupt file) is raised here as itself, and nothing is left behind.
  """
  return checkpoint.save(out_dir, write_trees=_write_lazy, **kwargs)


def _write_lazy(folder: Path, trees: Mapping[str, Any]) -> None:
  ckptr, handler = _checkpointer()
  for name, tree in trees.items():
    ckptr.save(folder / name, args=ocp.args.PyTreeSave(tree))
    if handler.failure is not None:
      raise handler.failure
