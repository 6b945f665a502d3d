"""Pure step functions of block-autoregressive generation, shared by inference and training.

  * :func:`call`: one model call on a block against the cache -> flow and the block's keys/values.
  * :func:`denoise` reads the cache: one model call on a noisy block -> x0 estimate.
  * :func:`commit` writes the cache: one call on the clean block at ``t = context_t``
    (0 at inference) whose keys/values are stored; ``next_frame`` advances.
  * :func:`generate_block`: LongLive's per-block loop, 4 denoising steps (x0 ->
    re-noise with a fresh draw to the next sigma) then commit.
  * :func:`recache`: KV-recache on a prompt switch (LongLive v1.0 semantics, both
    ``global_sink`` modes).

All take the model (an NNX module, a pytree) and the :class:`KVCache` explicitly and
return new values; nothing is mutated. Frame positions are traced int32 values read
from the cache, so block 1 and block 1000 run the same compiled program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from longlive_jax.model.wan import WanDiT
from longlive_jax.schedule import sigma_at
from longlive_jax.stream.cache import KVCache, StreamSpec, horizon_positions, ring_slots, view, write_frames

Array = jax.Array


def _query_pos(cache: KVCache, spec: StreamSpec, n: int, num_valid: Array) -> Array:
  frames = cache.next_frame + jnp.arange(n, dtype=jnp.int32)
  if spec.relative_rope and spec.rope_horizon:
    return horizon_positions(spec, frames, cache.next_frame)
  if spec.relative_rope:
    return (num_valid + jnp.arange(n, dtype=jnp.int32)).astype(jnp.int32)
  return frames.astype(jnp.int32)


def call(
  model: WanDiT, cache: KVCache, spec: StreamSpec, x: Array, t: Array, cross, *, slot_mask=None, frame_pos=None
) -> tuple[Array, Array, Array]:
  """One model call on the block ``x [B, n, H, W, C]`` at timestep ``t`` attending to the cache.

  Returns ``(flow, k_new, v_new)``: the flow prediction and the block's own keys/values
  ``[L, B, n * tpf, H, Dh]`` (not written; :func:`commit` writes them). ``slot_mask`` restricts
  the cached frames attended to; ``frame_pos`` overrides the block's positions (default: after
  the cache). :func:`denoise`, :func:`commit` and :func:`recache` are built on it.
  """
  _, ph, pw = model.cfg.patch_size
  tpf = (x.shape[2] // ph) * (x.shape[3] // pw)  # tokens per latent frame of this block
  if tpf != spec.tokens_per_frame:  # static: a mismatched spec would write nothing (or garbage) into the cache
    raise ValueError(
      f"block {tuple(x.shape)} has {tpf} tokens per frame (patch {ph}x{pw}) but the StreamSpec says "
      f"{spec.tokens_per_frame}: build the spec from the latent size and the model's patch size"
    )
  k, v, valid, pos, num_valid = view(cache, spec, slot_mask=slot_mask)
  n = x.shape[1]
  if frame_pos is None:
    frame_pos = _query_pos(cache, spec, n, num_valid)
  return model.forward_tokens(
    x,
    jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:2]),
    cross_k=cross[0],
    cross_v=cross[1],
    frame_pos=frame_pos,
    extra_kv=(k, v, valid),
    extra_frame_pos=pos,
  )


def denoise(model: WanDiT, cache: KVCache, x_t: Array, *, t: Array, sigma: Array, cross, spec: StreamSpec) -> Array:
  """x0 estimate of the block ``x_t [B, n, H, W, C]`` at timestep ``t`` (sigma = its grid sigma)."""
  flow, _, _ = call(model, cache, spec, x_t, t, cross)
  return (x_t.astype(jnp.float32) - sigma * flow).astype(x_t.dtype)


def commit(
  model: WanDiT,
  cache: KVCache,
  x0: Array,
  *,
  cross,
  spec: StreamSpec,
  context_t: float = 0.0,
  context_eps: Array | None = None,
  shift: float = 5.0,
) -> KVCache:
  """Runs the block at timestep ``context_t`` and stores its keys/values; advances ``next_frame``.

  Inference (LongLive's ``context_noise: 0``) passes the clean ``x0`` as is. Training-style
  streams pass ``context_eps``: the input is then ``add_noise(x0, eps, context_t)`` with the
  nearest-grid sigma (upstream training: about 0.005 even at ``context_t = 0``).
  """
  x = x0
  if context_eps is not None:
    sig = float(sigma_at(context_t, shift=shift)[0])
    x = ((1.0 - sig) * x0.astype(jnp.float32) + sig * context_eps.astype(jnp.float32)).astype(x0.dtype)
  _, k_new, v_new = call(model, cache, spec, x, context_t, cross)
  n = x0.shape[1]
  frames = cache.next_frame + jnp.arange(n, dtype=jnp.int32)
  cache = write_frames(cache, spec, k_new=k_new, v_new=v_new, frames=frames, slots=ring_slots(spec, frames))
  return cache.replace(next_frame=cache.next_frame + n)


def generate_block(
  model: WanDiT,
  cache: KVCache,
  noise: Array,
  renoise: Array,
  *,
  cross,
  timesteps: Array,
  sigmas: Array,
  spec: StreamSpec,
  context_t: float = 0.0,
  context_eps: Array | None = None,
  shift: float = 5.0,
) -> tuple[Array, KVCache, Array]:
  """One block: ``len(timesteps)`` denoising steps then commit.

  Args:
    noise: ``[B, n, H, W, C]`` initial noise of the block.
    renoise: ``[steps - 1, B, n, H, W, C]`` fresh draws used to re-noise x0 to the next sigma.
    timesteps, sigmas: float32 ``[steps]`` (see :func:`longlive_jax.schedule.warped_steps`).
    context_eps: optional draw that noises the committed block (see :func:`commit`).

  Returns:
    ``(x0 [B, n, H, W, C], cache, x0_steps [steps, B, n, H, W, C])`` (x0 estimate of every step).
  """
  steps = timesteps.shape[0]
  sig_next = jnp.concatenate([sigmas[1:], jnp.zeros((1,), sigmas.dtype)])
  eps = jnp.concatenate([renoise, jnp.zeros_like(noise)[None]], axis=0)  # [steps, B, n, H, W, C]
  last = jnp.arange(steps) == steps - 1

  def step(x, xs):
    t, s, sn, e, is_last = xs
    x0 = denoise(model, cache, x, t=t, sigma=s, cross=cross, spec=spec)
    x_next = jnp.where(is_last, x0, (1.0 - sn) * x0 + sn * e)
    return x_next, x0

  x0, x0_steps = jax.lax.scan(step, noise, (timesteps, sigmas, sig_next, eps, last))
  cache = commit(model, cache, x0, cross=cross, spec=spec, context_t=context_t, context_eps=context_eps, shift=shift)
  return x0, cache, x0_steps


def recache(
  model: WanDiT,
  cache: KVCache,
  latents: Array,
  *,
  cross,
  spec: StreamSpec,
  switch_frame: int | Array,
  global_sink: bool = True,
) -> KVCache:
  """KV-recache after a prompt switch at frame ``S = switch_frame`` (LongLive v1.0).

  Args:
    latents: the last ``m = min(window, S)`` clean latents ``[B, m, H, W, C]`` (frames S-m..S-1).
    cross: text K/V of the NEW prompt.
    switch_frame: ``S``. A Python int, or a traced int32 when ``S > window`` (the caller checks): past
      the window every switch rewrites the same number of frames and keeps the sink, so one compiled
      program serves every later switch; up to the window the shapes depend on ``S`` (a few programs).
    global_sink: keep the sink (upstream default). If ``S <= window`` the recache starts at
      frame 0 and rewrites the sink anyway (upstream quirk, reproduced). False: clear the
      cache and rebuild all of it, sink included, from the last m frames.

  The pass is one unmasked forward at t=0 over the frames whose K/V get written, with the
  protected sink as extra keys when it is kept (upstream: recache queries whose K/V are
  discarded cannot influence anything, so they are not computed).
  """
  m = latents.shape[1]
  if isinstance(switch_frame, int):
    if m != min(spec.window_frames, switch_frame):
      raise ValueError(
        f"recache at frame {switch_frame} needs the last {min(spec.window_frames, switch_frame)} latents, got {m}"
      )
    past_window = switch_frame > m
  else:  # traced: S > window, so m == window and r0 > 0
    if m != spec.window_frames:
      raise ValueError(
        f"a traced switch frame is past the window: needs the last {spec.window_frames} latents, got {m}"
      )
    past_window = True
  r0 = switch_frame - m
  ns = spec.sink_frames
  keep_sink = global_sink and past_window
  if not global_sink:
    cache = cache.replace(k=jnp.zeros_like(cache.k), v=jnp.zeros_like(cache.v), frame=jnp.full_like(cache.frame, -1))
  first = ns if keep_sink else 0
  lat = latents[:, first:]  # [B, m - first, H, W, C]
  frames = jnp.asarray(r0 + first + jnp.arange(m - first), jnp.int32)
  slot_mask = (jnp.arange(spec.num_slots) < ns) if keep_sink else jnp.zeros((spec.num_slots,), bool)
  if spec.relative_rope and spec.rope_horizon:  # cache.next_frame is still S: the shift of S's block
    pos = horizon_positions(spec, frames, cache.next_frame)
  elif spec.relative_rope:
    pos = jnp.arange(first, m, dtype=jnp.int32)
  else:
    pos = frames
  _, k_new, v_new = call(model, cache, spec, lat, 0.0, cross, slot_mask=slot_mask, frame_pos=pos)
  idx = jnp.arange(first, m)
  slots = ring_slots(spec, frames) if keep_sink else jnp.where(idx < ns, idx, ring_slots(spec, frames))
  cache = write_frames(cache, spec, k_new=k_new, v_new=v_new, frames=frames, slots=slots.astype(jnp.int32))
  return cache.replace(next_frame=jnp.asarray(switch_frame, jnp.int32))
