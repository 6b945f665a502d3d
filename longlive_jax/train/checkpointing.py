"""Train-state checkpoints: an Orbax ``CheckpointManager`` saving the state pytree and the data iterator.

Each checkpoint ``<dir>/<step>/`` holds three items of one ``ocp.args.Composite``:

  * ``state``: the whole train state pytree (params, optimizer state, EMA, step, PRNG key and any
    stage-specific carried state such as a streaming KV cache), ``StandardSave``: sharded arrays are
    written by their owners, and restored straight into the target's shardings;
  * ``data``: the grain iterator position (``grain.checkpoint.CheckpointSave``, one small JSON file
    per process), so a resumed run sees exactly the batches the uninterrupted run would have seen;
  * ``meta``: JSON (stage name, step, the train config) to check a resume is the same run.

Atomicity (preemption safety): Orbax writes a step into ``<step>.orbax-checkpoint-tmp-*`` and only
renames it to ``<step>`` after every item is on disk (and ``commit_success.txt`` is written), so a
save interrupted at any point leaves no folder that :meth:`TrainCheckpointer.latest_step` lists;
leftover temporary folders are deleted when a manager opens the directory.

Async saves: ``save`` returns once the arrays are copied to host memory and writes in a background
thread; the caller may then donate / overwrite the state. The next ``save``, ``wait`` and ``close``
wait for the previous write. ``keep`` newest steps are kept.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """A checkpoint that does not belong to this run (other stage / shapes); the message says which."""


@dataclasses.dataclass
class Restored:
  step: int
  state: Any
  meta: dict


class TrainCheckpointer:
  """Save / restore ``(state, data iterator, meta)`` per step under ``directory``."""

  def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
    self.directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=True,
      cleanup_tmp_directories=True,
      enable_async_checkpointing=async_save,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    """Finalised checkpoints only (an interrupted save is never listed)."""
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, *, data_iter: Any = None, meta: dict | None = None) -> bool:
    """Starts saving ``state`` (and the iterator position) as ``step``; returns whether it saves."""
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave({"step": int(step), **(meta or {})})}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int | None, *, target: Any, data_iter: Any = None) -> Restored:
    """Restores ``step`` (default: the latest) into ``target``'s structure, dtypes and shardings.

    ``target`` is a pytree of arrays or ``jax.ShapeDtypeStruct`` s with shardings. ``data_iter`` (a
    fresh iterator of the same pipeline) is moved to the saved position in place.
    """
    step = self.latest_step() if step is None else int(step)
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no finalised checkpoint to restore")
    abstract = abstract_state(target)
    items = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
    has_data = (self.directory / str(step) / "data").exists()
    if data_iter is not None:
      if not has_data:
        raise CheckpointMismatchError(f"{self.directory}/{step}: holds no data-iterator state, but the run reads data")
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, FileNotFoundError) as e:
      raise CheckpointMismatchError(f"{self.directory}/{step}: cannot restore into this run's state: {e}") from e
    _check_shapes(abstract, out["state"], where=f"{self.directory}/{step}")
    return Restored(step=step, state=out["state"], meta=dict(out["meta"]))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_state(tree: Any) -> Any:
  """``tree`` with every array replaced by its ``jax.ShapeDtypeStruct`` (shape, dtype, sharding): a restore target."""

  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

  return jax.tree.map(one, tree)


def _check_shapes(want: Any, got: Any, *, where: str) -> None:
  """Orbax restores stored shapes whatever the target says: compare them leaf by leaf."""
  w = dict(jax.tree_util.tree_flatten_with_path(want)[0])
  g = dict(jax.tree_util.tree_flatten_with_path(got)[0])
  if set(w) != set(g):
    extra = sorted(jax.tree_util.keystr(k) for k in set(g) ^ set(w))
    raise CheckpointMismatchError(f"{where}: state structure differs from this run's at {extra[:4]}")
  for k, spec in w.items():
    if tuple(g[k].shape) != tuple(spec.shape):
      raise CheckpointMismatchError(
        f"{where}: {jax.tree_util.keystr(k)} has shape {tuple(g[k].shape)}, this run expects {tuple(spec.shape)}"
      )
