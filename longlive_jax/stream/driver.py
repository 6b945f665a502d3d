"""Loops over blocks: a Python-driven streamer (interactive) and a ``lax.scan`` generator (offline).

Both call the same compiled block step; parameters are passed as an argument
(``nnx.split`` once), the cache is donated so XLA updates it in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from longlive_jax.model.wan import WanDiT
from longlive_jax.schedule import warped_steps
from longlive_jax.stream import engine
from longlive_jax.stream.cache import KVCache, StreamSpec, init_cache

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Switch:
  """Prompt ``prompt`` becomes active at the first block starting at or after latent frame ``frame``."""

  frame: int
  prompt: int


class Streamer:
  """Compiled block step, recache and text encoding for one model and stream shape."""

  def __init__(
    self,
    model: WanDiT,
    spec: StreamSpec,
    *,
    step_list: Sequence[int] = (1000, 750, 500, 250),
    shift: float = 5.0,
    context_t: float = 0.0,
    global_sink: bool = True,
  ):
    self.graphdef, self.params = nnx.split(model)
    self.cfg = model.cfg
    self.spec = spec
    ts, sig = warped_steps(step_list, shift=shift)
    self.timesteps, self.sigmas = jnp.asarray(ts), jnp.asarray(sig)
    self.context_t = float(context_t)
    self.global_sink = global_sink
    graphdef = self.graphdef

    def block(params, cache, noise, renoise, ck, cv, timesteps, sigmas):
      m = nnx.merge(graphdef, params)
      return engine.generate_block(
        m, cache, noise, renoise, cross=(ck, cv), timesteps=timesteps, sigmas=sigmas, spec=spec, context_t=context_t
      )

    def cross(params, context):
      return nnx.merge(graphdef, params).cross_kv(context)

    def rec(params, cache, latents, ck, cv, *, switch_frame, global_sink):
      m = nnx.merge(graphdef, params)
      return engine.recache(
        m, cache, latents, cross=(ck, cv), spec=spec, switch_frame=switch_frame, global_sink=global_sink
      )

    def scan_blocks(params, cache, noise_blocks, renoise_blocks, ck, cv, timesteps, sigmas):
      def body(c, xs):
        x0, c, _ = block(params, c, xs[0], xs[1], ck, cv, timesteps, sigmas)
        return c, x0

      cache, out = jax.lax.scan(body, cache, (noise_blocks, renoise_blocks))
      return out, cache

    self._block = jax.jit(block, donate_argnums=(1,))
    self._cross = jax.jit(cross)
    self._recache = jax.jit(rec, donate_argnums=(1,), static_argnames=("switch_frame", "global_sink"))
    self._scan = jax.jit(scan_blocks, donate_argnums=(1,))

  def init_cache(self, *, batch: int, dtype=None) -> KVCache:
    cfg = self.cfg
    return init_cache(
      self.spec,
      num_layers=cfg.num_layers,
      batch=batch,
      num_heads=cfg.num_heads,
      head_dim=cfg.head_dim,
      dtype=dtype or jnp.dtype(cfg.dtype),
    )

  def encode(self, context: Array):
    """Text K/V ``(k, v)`` for a prompt embedding ``[B, text_len, text_dim]``."""
    return self._cross(self.params, jnp.asarray(context))

  def block(self, cache: KVCache, noise: Array, renoise: Array, cross) -> tuple[Array, KVCache, Array]:
    return self._block(self.params, cache, noise, renoise, cross[0], cross[1], self.timesteps, self.sigmas)

  def recache(self, cache: KVCache, latents: Array, cross, *, switch_frame: int) -> KVCache:
    return self._recache(
      self.params, cache, latents, cross[0], cross[1], switch_frame=int(switch_frame), global_sink=self.global_sink
    )

  def generate_scan(self, cache: KVCache, noise_blocks: Array, renoise_blocks: Array, cross) -> tuple[Array, KVCache]:
    """Offline: all blocks in one ``lax.scan``. ``noise_blocks [nb, B, n, H, W, C]``; returns ``[nb, B, n, ...]``."""
    return self._scan(self.params, cache, noise_blocks, renoise_blocks, cross[0], cross[1], self.timesteps, self.sigmas)

  def stream(
    self, noise: Array, renoise: Array, contexts: Sequence[Array], switches: Sequence[Switch] = (), *, cache=None
  ):
    """Python-driven generation with prompt switches. Yields ``(block_index, x0 [B, n, H, W, C], info)``.

    Args:
      noise: ``[B, T, H, W, C]`` initial noise (block b uses frames 3b..3b+2).
      renoise: ``[nb, steps - 1, B, n, H, W, C]`` re-noise draws.
      contexts: prompt embeddings ``[B, text_len, text_dim]``; prompt 0 starts.
      switches: increasing switch frames with the prompt they activate.
    """
    n = self.spec.block_frames
    b, t = noise.shape[:2]
    if t % n:
      raise ValueError(f"number of frames {t} is not a multiple of the block size {n}")
    cache = cache if cache is not None else self.init_cache(batch=b)
    crosses = {0: self.encode(contexts[0])}
    cross = crosses[0]
    pending = list(switches)
    out = []
    for blk in range(t // n):
      s = blk * n
      info = {"switched_to": None}
      if pending and s >= pending[0].frame:
        sw = pending.pop(0)
        if sw.prompt not in crosses:
          crosses[sw.prompt] = self.encode(contexts[sw.prompt])
        cross = crosses[sw.prompt]
        if s > 0:
          m = min(self.spec.window_frames, s)
          need = -(-m // n)  # only the blocks that hold the last m frames
          prev = jnp.concatenate(out[-need:], axis=1)[:, -m:]
          cache = self.recache(cache, prev, cross, switch_frame=s)
        info["switched_to"] = sw.prompt
      x0, cache, steps = self.block(cache, noise[:, s : s + n], renoise[blk], cross)
      info["x0_steps"] = steps
      out.append(x0)
      yield blk, x0, info
