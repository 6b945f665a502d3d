"""The self-attention KV cache as an immutable pytree: frame sink + rolling window.

Frames, not tokens, are the unit of bookkeeping. The cache has ``num_slots = sink +
ring`` frame slots, each holding the keys/values of one latent frame
(``tokens_per_frame`` tokens) for every layer:

  * sink slots ``[0, sink)`` hold the first ``sink`` frames and are never evicted;
  * ring slots hold the most recent ``ring = window - sink - block`` committed frames
    (``window`` = LongLive's ``local_attn_size``, which counts the sink and the block
    being generated). Frame ``f >= sink`` lives in slot ``sink + (f - sink) % ring``.

So a block attends to ``sink + ring`` cached frames plus its own ``block`` frames:
exactly ``window`` frames, as in upstream's left-shift buffer (which we reproduce
without shifting: with absolute RoPE keys are stored rotated and attention does not
depend on slot order; in relative mode positions come from frame order, not slots).

``frame[slot]`` is the absolute frame index stored in a slot (-1: empty); positions
and validity are int32 arrays so every block runs the same compiled program.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamSpec:
  """Static shape of the stream (hashable: used as a jit static argument).

  Attributes:
    block_frames: latent frames per block (LongLive: 3).
    sink_frames: frames kept forever at the start of the cache (LongLive: 3).
    window_frames: ``local_attn_size``: frames a block attends to, incl. sink and itself (12).
    tokens_per_frame: (H / 2) * (W / 2) (1560 at 480x832).
    relative_rope: "infinity" mode: raw keys in the cache, positions re-applied per call.
    rope_horizon: with ``relative_rope``, ``P > 0`` replaces the window-relative positions: every frame keeps
      its absolute position until a call starts past frame ``P``; from then on the frames after the sink are
      shifted back by ``next_frame - P`` (the call's block always sits at ``P``) while the sink frames keep
      theirs. Why: with absolute RoPE the sink's distance grows without end, and a DiT with few frame
      frequencies (the toy world's head size 32: 6 of them, periods 6.3 and 29 frames) sees the sink
      alias as recent frames at some distances (latents 25-32 there). The horizon freezes the geometry
      of one block the model was trained on, where infinity mode freezes that of the third block.
  """

  block_frames: int = 3
  sink_frames: int = 3
  window_frames: int = 12
  tokens_per_frame: int = 1560
  relative_rope: bool = False
  rope_horizon: int = 0

  def __post_init__(self):
    if self.block_frames < 1 or self.sink_frames < 0:
      raise ValueError(f"block_frames must be >= 1 and sink_frames >= 0, got {self.block_frames}, {self.sink_frames}")
    if self.ring_frames < 1:
      raise ValueError(
        f"window_frames ({self.window_frames}) must exceed sink_frames + block_frames "
        f"({self.sink_frames} + {self.block_frames}) so that at least one past frame is attended"
      )
    if self.rope_horizon and (not self.relative_rope or self.rope_horizon < self.window_frames):
      raise ValueError(
        f"rope_horizon {self.rope_horizon} needs relative_rope (raw cached keys) and at least window_frames "
        f"({self.window_frames}); 0 turns it off"
      )

  @property
  def ring_frames(self) -> int:
    return self.window_frames - self.sink_frames - self.block_frames

  @property
  def num_slots(self) -> int:
    return self.sink_frames + self.ring_frames


@struct.dataclass
class KVCache:
  """Keys/values of committed frames for all layers. Donate it at jit boundaries."""

  k: Array  # [L, B, slots * tokens_per_frame, H, Dh]
  v: Array  # [L, B, slots * tokens_per_frame, H, Dh]
  frame: Array  # int32 [slots]: absolute frame index held by each slot, -1 = empty
  next_frame: Array  # int32 []: absolute index of the next frame to generate

  @property
  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in (self.k, self.v, self.frame, self.next_frame))


def init_cache(spec: StreamSpec, *, num_layers: int, batch: int, num_heads: int, head_dim: int, dtype=jnp.float32):
  shape = (num_layers, batch, spec.num_slots * spec.tokens_per_frame, num_heads, head_dim)
  return KVCache(
    k=jnp.zeros(shape, dtype),
    v=jnp.zeros(shape, dtype),
    frame=jnp.full((spec.num_slots,), -1, jnp.int32),
    next_frame=jnp.zeros((), jnp.int32),
  )


def ring_slots(spec: StreamSpec, frames: Array) -> Array:
  """Slot of each absolute frame index under the normal layout (sink first, then the ring)."""
  frames = jnp.asarray(frames, jnp.int32)
  ring = spec.sink_frames + jnp.mod(frames - spec.sink_frames, spec.ring_frames)
  return jnp.where(frames < spec.sink_frames, frames, ring).astype(jnp.int32)


def write_frames(
  cache: KVCache, spec: StreamSpec, *, k_new: Array, v_new: Array, frames: Array, slots: Array
) -> KVCache:
  """Stores frame ``i`` of ``k_new/v_new [L, B, n * tpf, H, Dh]`` in ``slots[i]`` (in order: later wins)."""
  tpf = spec.tokens_per_frame
  n = k_new.shape[2] // tpf
  k, v, fr = cache.k, cache.v, cache.frame
  zero = jnp.zeros((), jnp.int32)
  for i in range(n):  # static, small: keeps "later write wins" when two frames share a slot
    start = slots[i] * tpf
    ki = k_new[:, :, i * tpf : (i + 1) * tpf].astype(k.dtype)  # [L, B, tpf, H, Dh]
    vi = v_new[:, :, i * tpf : (i + 1) * tpf].astype(v.dtype)
    k = jax.lax.dynamic_update_slice(k, ki, (zero, zero, start, zero, zero))
    v = jax.lax.dynamic_update_slice(v, vi, (zero, zero, start, zero, zero))
    fr = fr.at[slots[i]].set(frames[i])
  return cache.replace(k=k, v=v, frame=fr)


def horizon_positions(spec: StreamSpec, frames: Array, next_frame: Array) -> Array:
  """RoPE positions of absolute ``frames`` in a call starting at ``next_frame`` under :attr:`StreamSpec.rope_horizon`:
  the sink's frames keep theirs, later ones move back by ``max(0, next_frame - P)``."""
  frames = jnp.asarray(frames, jnp.int32)
  shift = jnp.maximum(jnp.asarray(next_frame, jnp.int32) - spec.rope_horizon, 0)
  return jnp.where(frames >= spec.sink_frames, frames - shift, frames)


def view(cache: KVCache, spec: StreamSpec, *, slot_mask: Array | None = None):
  """What a call attends to: ``(k, v, valid [B, slots*tpf], frame_pos [slots] | None, num_valid)``.

  ``frame_pos`` (relative mode only) is each slot's rank among valid frames in time order,
  i.e. upstream's window-relative position (with ``rope_horizon``: see :class:`StreamSpec`). ``slot_mask``
  restricts the view further.
  """
  valid_slot = cache.frame >= 0
  if slot_mask is not None:
    valid_slot = valid_slot & slot_mask
  b = cache.k.shape[1]
  valid = jnp.broadcast_to(
    jnp.repeat(valid_slot, spec.tokens_per_frame)[None], (b, spec.num_slots * spec.tokens_per_frame)
  )
  num_valid = jnp.sum(valid_slot.astype(jnp.int32))
  pos = None
  if spec.relative_rope and spec.rope_horizon:
    pos = jnp.where(valid_slot, horizon_positions(spec, cache.frame, cache.next_frame), 0)
  elif spec.relative_rope:
    earlier = (cache.frame[None, :] < cache.frame[:, None]) & valid_slot[None, :]  # [slots, slots]
    pos = jnp.where(valid_slot, jnp.sum(earlier.astype(jnp.int32), axis=1), 0)
  return cache.k, cache.v, valid, pos, num_valid
