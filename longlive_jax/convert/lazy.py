"""Lazily converted parameters: shape and dtype known up front, values computed from the source on demand.

Converters return trees of :class:`LazyLeaf`; :func:`longlive_jax.convert.writer.save` writes them one
layer at a time, :func:`materialize_tree` turns them into numpy arrays one leaf at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from longlive_jax.convert.errors import CheckpointError

Parts = Callable[[], Iterator[tuple[int | None, np.ndarray]]]


@dataclasses.dataclass(frozen=True, eq=False)
class LazyLeaf:
  """One parameter of a converted tree, computed only when it is written or :meth:`materialize`\\ d.

  ``parts()`` yields ``(index, array)`` pairs that fill the leaf: ``index`` is a position along
  axis 0 (one layer of a layer-stacked leaf; ``array`` has shape ``shape[1:]``) or ``None``
  (the whole leaf). Arrays are cast to ``dtype`` (numpy's assignment cast).
  """

  shape: tuple[int, ...]
  dtype: np.dtype
  parts: Parts
  stacked: bool  # parts are layers along axis 0

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def nbytes(self) -> int:
    return self.size * np.dtype(self.dtype).itemsize

  def iter_parts(self) -> Iterator[tuple[int | None, np.ndarray]]:
    """``parts()`` with every array checked against the leaf's shape and cast to its dtype."""
    for index, arr in self.parts():
      want = self.shape if index is None else self.shape[1:]
      if tuple(arr.shape) != tuple(want):
        raise CheckpointError(f"converted part {index} has shape {tuple(arr.shape)}, expected {tuple(want)}")
      yield index, np.ascontiguousarray(arr, dtype=self.dtype)

  def materialize(self) -> np.ndarray:
    out = None
    for index, arr in self.iter_parts():
      if index is None:
        out = arr if arr.flags.writeable else arr.copy()  # e.g. a view of a torch storage's bytes
      else:
        if out is None:
          out = np.empty(self.shape, self.dtype)
        out[index] = arr
    if out is None:
      raise CheckpointError(f"converted leaf of shape {self.shape} produced no data")
    return out


def lazy_leaf(shape, dtype, parts: Parts, *, stacked: bool) -> LazyLeaf:
  return LazyLeaf(tuple(int(s) for s in shape), np.dtype(dtype), parts, stacked)


def materialize_tree(tree, put: Callable[[np.ndarray], Any] | None = None):
  """Computes every :class:`LazyLeaf` of a nested dict, one at a time, keeping the key order.

  ``put`` is applied to each computed leaf (e.g. a device copy, after which the host copy is dropped).
  """
  put = put or (lambda x: x)
  if isinstance(tree, dict):
    return {k: materialize_tree(v, put) for k, v in tree.items()}
  return put(tree.materialize()) if isinstance(tree, LazyLeaf) else tree
