"""Loops over blocks: a Python-driven session (streaming, interactive) and a ``lax.scan`` generator (offline).

Both call the same compiled block step; parameters are passed as an argument
(``nnx.split`` once), the cache is donated so XLA updates it in place. Block positions
live in the cache as traced int32 values: block 1 and block 1000 run one executable.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from longlive_jax.model.wan import WanDiT
from longlive_jax.schedule import warped_steps
from longlive_jax.stream import engine
from longlive_jax.stream.cache import KVCache, StreamSpec, init_cache
from longlive_jax.stream.noise import BlockShape, GivenNoise, block_draws

Array = jax.Array
SWITCH_MODES = ("recache", "keep", "clear")


@dataclasses.dataclass(frozen=True)
class Switch:
  """Prompt ``prompt`` becomes active at the first block starting at or after latent frame ``frame``."""

  frame: int
  prompt: int


def check_switches(switches: Sequence[Switch], *, num_frames: int | None, num_prompts: int) -> None:
  """Switch frames must increase strictly, lie in ``(0, num_frames)`` and name an existing prompt."""
  prev = 0
  for i, sw in enumerate(switches):
    if sw.frame <= prev:
      raise ValueError(
        f"switch {i}: frame {sw.frame} must be greater than {'0' if i == 0 else f'the previous switch ({prev})'}; "
        "switch frame indices are latent frames and must increase"
      )
    if num_frames is not None and sw.frame >= num_frames:
      raise ValueError(f"switch {i}: frame {sw.frame} is out of range for a video of {num_frames} latent frames")
    if not 0 <= sw.prompt < num_prompts:
      raise ValueError(f"switch {i}: prompt {sw.prompt} does not exist ({num_prompts} prompts given)")
    prev = sw.frame


class Streamer:
  """Compiled block step, recache and text encoding for one model and stream shape.

  Args:
    step_list, shift: the few-step schedule before warping (LongLive: [1000, 750, 500, 250], 5).
    context_t: timestep of the commit pass (LongLive's ``context_noise``, 0 at inference).
    renoise_context: noise the committed block to ``context_t`` with a fresh draw (training-style);
      off at inference, as upstream.
    global_sink: recache mode of LongLive v1.0 (see :func:`engine.recache`).
    switch_mode: what a prompt switch does to the cache: "recache" (LongLive), "keep" (switch the
      text only) or "clear" (drop all history; positions continue).
  """

  def __init__(
    self,
    model: WanDiT,
    spec: StreamSpec,
    *,
    step_list: Sequence[int] = (1000, 750, 500, 250),
    shift: float = 5.0,
    context_t: float = 0.0,
    renoise_context: bool = False,
    global_sink: bool = True,
    switch_mode: str = "recache",
  ):
    if switch_mode not in SWITCH_MODES:
      raise ValueError(f"switch_mode must be one of {SWITCH_MODES}, got {switch_mode!r}")
    self.graphdef, self.params = nnx.split(model)
    self.cfg = model.cfg
    self.spec = spec
    ts, sig = warped_steps(step_list, shift=shift)
    self.timesteps, self.sigmas = jnp.asarray(ts), jnp.asarray(sig)
    self.num_steps = len(step_list)
    self.context_t = float(context_t)
    self.renoise_context = renoise_context
    self.global_sink = global_sink
    self.switch_mode = switch_mode
    graphdef = self.graphdef

    def block(params, cache, noise, renoise, ctx_eps, ck, cv, timesteps, sigmas):
      m = nnx.merge(graphdef, params)
      return engine.generate_block(
        m,
        cache,
        noise,
        renoise,
        cross=(ck, cv),
        timesteps=timesteps,
        sigmas=sigmas,
        spec=spec,
        context_t=context_t,
        context_eps=ctx_eps,
        shift=shift,
      )

    def cross(params, context):
      return nnx.merge(graphdef, params).cross_kv(context)

    def rec(params, cache, latents, ck, cv, *, switch_frame, global_sink):
      m = nnx.merge(graphdef, params)
      return engine.recache(
        m, cache, latents, cross=(ck, cv), spec=spec, switch_frame=switch_frame, global_sink=global_sink
      )

    def scan_blocks(params, cache, noise_blocks, renoise_blocks, ctx_blocks, ck, cv, timesteps, sigmas):
      def body(c, xs):
        x0, c, _ = block(params, c, *xs, ck, cv, timesteps, sigmas)
        return c, x0

      cache, out = jax.lax.scan(body, cache, (noise_blocks, renoise_blocks, ctx_blocks))
      return out, cache

    def scan_keyed(params, cache, key, first_block, ck, cv, timesteps, sigmas, *, shape, num_blocks):
      draw = functools.partial(
        block_draws, shape=shape, num_steps=timesteps.shape[0], dtype=jnp.float32, context_eps=renoise_context
      )

      def body(c, blk):
        noise, renoise, ctx_eps = draw(key, blk)
        x0, c, _ = block(params, c, noise, renoise, ctx_eps, ck, cv, timesteps, sigmas)
        return c, x0

      blocks = first_block + jnp.arange(num_blocks, dtype=jnp.int32)
      cache, out = jax.lax.scan(body, cache, blocks)
      return out, cache

    self._block = jax.jit(block, donate_argnums=(1,))
    self._cross = jax.jit(cross)
    self._recache = jax.jit(rec, donate_argnums=(1,), static_argnames=("switch_frame", "global_sink"))

    def rec_past_window(params, cache, latents, ck, cv, switch_frame, *, global_sink):
      return rec(params, cache, latents, ck, cv, switch_frame=switch_frame, global_sink=global_sink)

    self._recache_past_window = jax.jit(rec_past_window, donate_argnums=(1,), static_argnames=("global_sink",))
    self._scan = jax.jit(scan_blocks, donate_argnums=(1,))
    self._scan_keyed = jax.jit(scan_keyed, donate_argnums=(1,), static_argnames=("shape", "num_blocks"))

  # ---------------------------------------------------------------------------------------------
  # Single calls.

  @property
  def max_frames(self) -> int | None:
    """Longest video the RoPE tables allow: ``rope_max_len`` frames with absolute RoPE, unbounded in relative mode
    and with a RoPE horizon inside the table (positions then never pass the horizon's block)."""
    spec = self.spec
    if spec.relative_rope and spec.rope_horizon + spec.block_frames <= self.cfg.rope_max_len:
      return None
    return self.cfg.rope_max_len

  def check_length(self, num_frames: int) -> None:
    if self.max_frames is not None and num_frames > self.max_frames:
      raise ValueError(
        f"{num_frames} latent frames exceed the {self.max_frames}-frame RoPE table of absolute positions "
        "(rope_max_len); use relative RoPE (infinity mode, StreamSpec(relative_rope=True)) for longer videos"
      )

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
    context = jnp.asarray(context)
    want = (self.cfg.text_len, self.cfg.text_dim)
    if context.ndim != 3 or context.shape[1:] != want:
      raise ValueError(
        f"prompt embedding has shape {tuple(context.shape)}; this model expects [batch, {want[0]}, {want[1]}] "
        "(text_len x text_dim of its config)"
      )
    return self._cross(self.params, context)

  def _context_eps(self, context_eps):
    """The context draw a block step takes: required with ``renoise_context``, else unused (None)."""
    if not self.renoise_context:
      return None
    if context_eps is None:
      raise ValueError("renoise_context needs a context noise draw (KeyNoise(..., context_eps=True))")
    return context_eps

  def block(self, cache: KVCache, noise: Array, renoise: Array, cross, context_eps: Array | None = None):
    """One block: ``(x0 [B, n, H, W, C], cache, x0_steps [steps, B, n, H, W, C])``."""
    ctx = self._context_eps(context_eps)
    return self._block(self.params, cache, noise, renoise, ctx, cross[0], cross[1], self.timesteps, self.sigmas)

  def recache(self, cache: KVCache, latents: Array, cross, *, switch_frame: int) -> KVCache:
    """KV-recache at ``switch_frame``: past the window the frame is traced (one program for every later switch)."""
    s = int(switch_frame)
    if s > self.spec.window_frames:
      return self._recache_past_window(
        self.params, cache, latents, cross[0], cross[1], jnp.int32(s), global_sink=self.global_sink
      )
    return self._recache(self.params, cache, latents, cross[0], cross[1], switch_frame=s, global_sink=self.global_sink)

  # ---------------------------------------------------------------------------------------------
  # Offline: lax.scan over blocks.

  def generate_scan(self, cache: KVCache, noise_blocks: Array, renoise_blocks: Array, cross, context_eps=None):
    """All blocks in one ``lax.scan`` from given draws. ``noise_blocks [nb, B, n, H, W, C]`` -> ``[nb, B, n, ...]``."""
    self.check_length(int(noise_blocks.shape[0]) * self.spec.block_frames)
    ctx = self._context_eps(context_eps)
    return self._scan(
      self.params, cache, noise_blocks, renoise_blocks, ctx, cross[0], cross[1], self.timesteps, self.sigmas
    )

  def generate_keyed(self, cache: KVCache, key: Array, cross, *, num_blocks: int, shape: BlockShape, first_block=0):
    """All blocks in one ``lax.scan``, drawing block ``b``'s noise from ``fold_in(key, b)`` (as :class:`KeyNoise`)."""
    self.check_length((first_block + num_blocks) * self.spec.block_frames)
    return self._scan_keyed(
      self.params,
      cache,
      key,
      jnp.asarray(first_block, jnp.int32),
      cross[0],
      cross[1],
      self.timesteps,
      self.sigmas,
      shape=shape,
      num_blocks=num_blocks,
    )

  # ---------------------------------------------------------------------------------------------
  # Streaming: Python-driven blocks.

  def session(self, draws: Callable[[int], tuple], context: Array, *, batch: int) -> StreamSession:
    return StreamSession(self, draws, context, batch=batch)

  def stream(
    self,
    noise,
    renoise=None,
    contexts: Sequence[Array] = (),
    switches: Sequence[Switch] = (),
    *,
    num_blocks: int | None = None,
  ) -> Iterator[tuple[int, Array, dict]]:
    """Generation with scheduled prompt switches. Yields ``(block_index, x0 [B, n, H, W, C], info)``.

    Args:
      noise: a draw source (:class:`~longlive_jax.stream.noise.KeyNoise` / ``GivenNoise``), or the
        arrays ``noise [B, T, H, W, C]`` and ``renoise [T / n, steps - 1, B, n, H, W, C]`` to replay.
      contexts: prompt embeddings ``[B, text_len, text_dim]``; prompt 0 starts.
      switches: increasing switch frames with the prompt they activate.
      num_blocks: blocks to generate (default: all of the given noise; required for a key source).
    """
    draws = noise if callable(noise) else GivenNoise(noise, renoise, block_frames=self.spec.block_frames)
    nb = num_blocks if num_blocks is not None else draws.num_blocks
    if nb is None:
      raise ValueError("num_blocks is required when noise comes from a PRNG key")
    check_switches(switches, num_frames=nb * self.spec.block_frames, num_prompts=len(contexts))
    self.check_length(nb * self.spec.block_frames)
    sess = self.session(draws, contexts[0], batch=draws.shape.batch)
    pending = deque(switches)
    for _ in range(nb):
      if pending and sess.frame >= pending[0].frame:
        sw = pending.popleft()
        sess.switch(contexts[sw.prompt], prompt=sw.prompt)
      yield sess.next_block()


class StreamSession:
  """The state of one live stream: cache, active prompt and the latest clean blocks (for recache).

  ``switch`` takes effect at the start of the next block (LongLive: a switch fires at the first
  block starting at or after its frame).
  """

  def __init__(self, streamer: Streamer, draws: Callable[[int], tuple], context: Array, *, batch: int):
    self.st = streamer
    self.draws = draws
    self.cache = streamer.init_cache(batch=batch)
    self.cross = streamer.encode(context)
    spec = streamer.spec
    self.history: deque[Array] = deque(maxlen=-(-spec.window_frames // spec.block_frames))
    self.block_index = 0
    self._pending: tuple[Array, object] | None = None

  @property
  def frame(self) -> int:
    return self.block_index * self.st.spec.block_frames

  def switch(self, context: Array, *, prompt: object = None) -> None:
    """Make ``context`` (a prompt embedding ``[B, text_len, text_dim]``) the prompt from the next block on."""
    self._pending = (self.st.encode(context), prompt)

  def _apply_switch(self) -> object:
    cross, prompt = self._pending
    self._pending = None
    self.cross = cross
    s, st = self.frame, self.st
    if s > 0 and st.switch_mode == "recache":
      m = min(st.spec.window_frames, s)
      prev = jnp.concatenate(list(self.history), axis=1)[:, -m:]  # [B, m, H, W, C]
      self.cache = st.recache(self.cache, prev, cross, switch_frame=s)
    elif s > 0 and st.switch_mode == "clear":
      self.cache = st.init_cache(batch=self.cache.k.shape[1], dtype=self.cache.k.dtype).replace(
        next_frame=jnp.asarray(s, jnp.int32)
      )
    return prompt

  def next_block(self) -> tuple[int, Array, dict]:
    """Generates the next block: ``(block_index, x0 [B, n, H, W, C], info)``."""
    self.st.check_length(self.frame + self.st.spec.block_frames)
    info: dict = {"switched_to": None}
    if self._pending is not None:
      info["switched_to"] = self._apply_switch()
    noise, renoise, ctx_eps = self.draws(self.block_index)
    x0, self.cache, steps = self.st.block(self.cache, noise, renoise, self.cross, ctx_eps)
    info["x0_steps"] = steps
    self.history.append(x0)
    blk = self.block_index
    self.block_index += 1
    return blk, x0, info
