"""Device mesh, logical axis rules and the shardings of train state, KV caches and batches.

One mesh, three named axes (always all three; unused ones have size 1, so every rule is valid):

  * ``data``: pure data parallelism (parameters replicated);
  * ``fsdp``: data parallelism whose parameters, optimizer state and EMA are split across devices
    (ZeRO-3 / FSDP; XLA inserts the all-gathers and reduce-scatters);
  * ``sequence``: optional sequence (token) parallelism of activations and KV caches.

Sizes come from :class:`MeshConfig`; ``-1`` means "the rest of the devices" (at most one axis).
The mesh uses ``AxisType.Auto`` (jax >= 0.8 makes ``Explicit`` the default of ``jax.make_mesh``):
arrays carry ``NamedSharding`` s, ``jax.jit`` gets ``in_shardings`` / ``out_shardings`` and the
compiler propagates shardings through the model, which needs no sharding annotations.

Logical axes. Arrays are described with logical names (:data:`BATCH`, :data:`FRAMES`, ...) and ONE
table, :data:`RULES`, maps each name to mesh axes, so a new layout is a new table, not new code.
Parameters (and everything shaped like them: AdamW moments, EMA) follow the FSDP rule of
:func:`param_logical_axes`: the leading layer axis of the stacked blocks is :data:`LAYERS`
(never split: it is scanned), the largest remaining dimension divisible by the ``fsdp`` size is
:data:`EMBED` (-> ``fsdp``), and arrays smaller than ``min_shard_size`` elements are replicated.

Multi-host (TPU pods, GPU clusters). Every host runs the same command; before any other JAX call
the CLI runs :func:`initialize_distributed`, i.e. ``jax.distributed.initialize()``:

  * TPU pods (Cloud TPU VMs) and SLURM / Open MPI GPU clusters: no arguments, the coordinator,
    process count and id are detected from the environment (``train distributed.initialize=true``).
  * elsewhere: ``distributed.coordinator_address=host0:1234 distributed.num_processes=N
    distributed.process_id=i`` (or the ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
    ``JAX_PROCESS_ID`` environment variables, which also switch initialisation on).

After it, ``jax.devices()`` lists every device of every host and the mesh spans them; each process
reads its own shard of the data (:mod:`longlive_jax.data.pipeline` shards by process) and
:func:`shard_batch` assembles the global batch with ``jax.make_array_from_process_local_data``.
Put ``data`` across hosts (DCN) and ``fsdp`` within a host (ICI / NVLink) where possible:
``jax.make_mesh`` orders devices for that.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "sequence")

# Logical axis names.
BATCH = "batch"
FRAMES = "frames"
TOKENS = "tokens"
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
KV = "kv"  # head_dim of keys / values
LAYERS = "layers"
VOCAB = "vocab"
CACHE_BATCH = "cache_batch"
CACHE_TOKENS = "cache_tokens"

# The one rules table: logical name -> mesh axis, tuple of mesh axes, or None (replicated).
# ``embed`` is the FSDP-split dimension of a parameter; ``mlp`` / ``heads`` / ``vocab`` stay
# replicated until a tensor-parallel axis is added.
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
  (BATCH, ("data", "fsdp")),
  (CACHE_BATCH, ("data", "fsdp")),
  (FRAMES, None),
  (TOKENS, "sequence"),
  (CACHE_TOKENS, "sequence"),
  (EMBED, "fsdp"),
  (MLP, None),
  (HEADS, None),
  (KV, None),
  (LAYERS, None),
  (VOCAB, None),
)


class MeshError(ValueError):
  """A mesh configuration that does not fit the devices; the message names the axis sizes."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
  """Mesh axis sizes (``-1``: the remaining devices) and the parameter replication threshold.

  Attributes:
    data: size of the ``data`` axis.
    fsdp: size of the ``fsdp`` axis (parameters / optimizer state split across it).
    sequence: size of the ``sequence`` axis (tokens of activations and KV caches).
    min_shard_size: parameters with fewer elements are replicated (FSDP of tiny arrays only costs
      collectives).
  """

  data: int = -1
  fsdp: int = 1
  sequence: int = 1
  min_shard_size: int = 1024

  def sizes(self) -> tuple[int, int, int]:
    return (self.data, self.fsdp, self.sequence)


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
  """The concrete ``(data, fsdp, sequence)`` sizes for ``num_devices`` devices (``-1`` filled in)."""
  sizes = list(cfg.sizes())
  rest = [i for i, s in enumerate(sizes) if s == -1]
  bad = [f"{n}={s}" for n, s in zip(MESH_AXES, sizes, strict=True) if s == 0 or s < -1]
  if bad or len(rest) > 1:
    raise MeshError(f"mesh sizes must be positive or -1 (at most one -1), got {', '.join(bad) or cfg.sizes()}")
  known = math.prod(s for s in sizes if s != -1)
  if rest:
    if num_devices % known:
      raise MeshError(
        f"mesh {dict(zip(MESH_AXES, sizes, strict=True))}: {num_devices} devices not divisible by {known}"
      )
    sizes[rest[0]] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise MeshError(
      f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, there are {num_devices}"
    )
  return tuple(sizes)


def make_mesh(cfg: MeshConfig | None = None, *, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``(data, fsdp, sequence)`` mesh over ``devices`` (default: all devices of all processes)."""
  cfg = cfg or MeshConfig()
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(cfg, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def initialize_distributed(
  *,
  enabled: bool = False,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """``jax.distributed.initialize`` when asked (flag or ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES``).

  Must run before anything touches a JAX backend. Returns whether it initialised. With no explicit
  arguments JAX detects the cluster (Cloud TPU, SLURM, Open MPI). See the module docstring.
  """
  env_on = bool(os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("JAX_NUM_PROCESSES"))
  if not (enabled or coordinator_address or env_on):
    return False
  kw: dict[str, Any] = {}
  if coordinator_address is not None:
    kw["coordinator_address"] = coordinator_address
  if num_processes is not None:
    kw["num_processes"] = num_processes
  if process_id is not None:
    kw["process_id"] = process_id
  jax.distributed.initialize(**kw)
  return True


# ------------------------------------------------------------------------------------- logical -> mesh


def logical_to_spec(
  logical: Sequence[str | None], *, rules: Sequence[tuple[str, Any]] = RULES, mesh: Mesh | None = None
) -> PartitionSpec:
  """``PartitionSpec`` of an array whose dimensions have these logical names.

  A mesh axis already used by an earlier dimension, or (with ``mesh``) of size 1, is dropped, so a
  spec never names an axis twice and never asks for a pointless split.
  """
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name in logical:
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
    axes = table.get(name) if name is not None else None
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    keep = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape[a] > 1))
    used.update(keep)
    out.append(None if not keep else keep[0] if len(keep) == 1 else keep)
  return PartitionSpec(*out)


def _axis_size(mesh: Mesh, axes) -> int:
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return math.prod(mesh.shape[a] for a in axes)


def _fit(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drops the split of any dimension its mesh axes do not divide (that dimension is replicated)."""
  return PartitionSpec(*(a if d % _axis_size(mesh, a) == 0 else None for a, d in zip(spec, shape, strict=False)))


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


_STACKED = re.compile(r"(^|/)blocks/")  # WanDiT (and umT5) stacked blocks: leading layer axis


def param_logical_axes(path: str, shape: Sequence[int], *, fsdp_size: int, min_size: int) -> tuple[str | None, ...]:
  """Logical axes of a parameter-shaped array: ``layers`` for a stacked-block leading axis, ``embed``
  (the FSDP split) on the largest other dimension divisible by ``fsdp_size``, None elsewhere.

  Arrays with fewer than ``min_size`` elements, scalars and arrays without such a dimension are
  replicated. ``path`` is the ``/``-joined pytree path (for optimizer moments it contains the
  parameter's path too, so they get the same layout as their parameter).
  """
  names: list[str | None] = [None] * len(shape)
  start = 0
  if _STACKED.search(path) and len(shape) >= 2:
    names[0], start = LAYERS, 1
  if fsdp_size <= 1 or math.prod(shape) < min_size:
    return tuple(names)
  cands = [i for i in range(start, len(shape)) if shape[i] % fsdp_size == 0]
  if cands:
    names[max(cands, key=lambda i: (shape[i], -i))] = EMBED  # largest; the first on ties
  return tuple(names)


def param_sharding(path: str, shape: Sequence[int], mesh: Mesh, *, min_size: int = 1024, rules=RULES) -> NamedSharding:
  """FSDP ``NamedSharding`` of one parameter-shaped array (see :func:`param_logical_axes`)."""
  logical = param_logical_axes(path, shape, fsdp_size=_axis_size(mesh, dict(rules)[EMBED]), min_size=min_size)
  return NamedSharding(mesh, _fit(logical_to_spec(logical, rules=rules, mesh=mesh), shape, mesh))


def state_shardings(tree: Any, mesh: Mesh, *, min_size: int = 1024, rules=RULES) -> Any:
  """Shardings for a train-state pytree (params, optimizer state, EMA, counters, keys): the FSDP
  parameter rule applied to every leaf by path and shape. Leaves may be arrays or ``ShapeDtypeStruct``."""

  def one(path, x):
    return param_sharding(_path_str(path), np.shape(x), mesh, min_size=min_size, rules=rules)

  return jax.tree_util.tree_map_with_path(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(shape: Sequence[int], mesh: Mesh, *, logical: Sequence[str | None] | None = None) -> NamedSharding:
  """Sharding of a batch array: leading axis :data:`BATCH` (``data`` x ``fsdp``) unless ``logical`` says otherwise.

  A dimension the mesh axes do not divide is replicated (e.g. a batch of 1 on 8 devices).
  """
  logical = tuple(logical) if logical is not None else (BATCH,) + (None,) * (len(shape) - 1) if len(shape) else ()
  return NamedSharding(mesh, _fit(logical_to_spec(logical, mesh=mesh), shape, mesh))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Host arrays (this process's part of the global batch) -> global ``jax.Array`` s sharded per
  :func:`batch_sharding`. On one process the local batch is the global batch."""

  def put(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:] if x.ndim else x.shape
    sh = batch_sharding(global_shape, mesh)
    return jax.make_array_from_process_local_data(sh, x, global_shape)

  return jax.tree.map(put, dict(batch))


# Logical axes of :class:`longlive_jax.stream.cache.KVCache` fields (k/v ``[L, B, slots * tpf, H, Dh]``).
KV_CACHE_AXES = {
  "k": (LAYERS, CACHE_BATCH, CACHE_TOKENS, HEADS, KV),
  "v": (LAYERS, CACHE_BATCH, CACHE_TOKENS, HEADS, KV),
}


def kv_cache_shardings(cache: Any, mesh: Mesh, *, rules=RULES) -> Any:
  """Shardings for a KV-cache pytree: ``k`` / ``v`` by :data:`KV_CACHE_AXES`, bookkeeping replicated."""

  def one(path, x):
    name = _path_str(path).rsplit("/", 1)[-1]
    logical = KV_CACHE_AXES.get(name)
    if logical is None or len(logical) != np.ndim(x):
      return replicated(mesh)
    return NamedSharding(mesh, _fit(logical_to_spec(logical, rules=rules, mesh=mesh), np.shape(x), mesh))

  return jax.tree_util.tree_map_with_path(one, cache)


def init_sharded(
  fn: Callable[..., Any], mesh: Mesh, *args: Any, shardings: Any = None, min_size: int = 1024, **kwargs: Any
) -> Any:
  """``fn(*args, **kwargs)`` evaluated under ``jax.jit`` with ``out_shardings``: the state is created
  directly in its sharded layout (no device ever holds the whole of it).

  ``shardings`` defaults to :func:`state_shardings` of ``jax.eval_shape(fn, ...)``; pass a pytree of
  shardings (or a function of the abstract state returning one) to override, e.g. for a KV cache.
  ``args`` must be arrays (a PRNG key); close over static options.
  """
  abstract = jax.eval_shape(lambda *a: fn(*a, **kwargs), *args)
  if shardings is None:
    shardings = state_shardings(abstract, mesh, min_size=min_size)
  elif callable(shardings):
    shardings = shardings(abstract)
  return jax.jit(lambda *a: fn(*a, **kwargs), out_shardings=shardings)(*args)
