"""Self-Forcing rollout with stochastic gradient truncation, on the streaming engine's step functions.

Training generates the way inference does (Self-Forcing / LongLive ``inference_with_trajectory``):
block after block, each block denoised from fresh noise through the few-step schedule
``[1000, 937.5, 833.3, 625]`` with the KV cache of the previously committed blocks. To keep the
cost of one backward pass, ONE exit step ``e ~ U{0 .. steps-1}`` is drawn per rollout and shared
by all blocks (upstream ``same_step_across_blocks``):

  * steps ``k < e`` run without gradient (``stop_gradient`` on the parameters and inputs; a
    ``lax.fori_loop`` with a traced bound, so only ``e`` model calls are made);
  * step ``e`` runs WITH gradient; its x0 estimate is the block's output; later steps are skipped;
  * the block is committed without gradient: the engine's :func:`~longlive_jax.stream.engine.commit`
    on ``add_noise(x0, eps, context_t)`` with the nearest-grid sigma, as upstream training does
    (about 0.005 of noise even at ``context_t = 0``; inference commits the clean x0).

Every model call is :func:`engine.denoise` / :func:`engine.commit` (the straight-through mode reads
the exit step's keys/values through :func:`engine.call`); there is no second causal forward.

Gradient into the cached keys/values (``kv_grad``):

  * ``"stop"`` (default, the functional reading of the paper's Algorithm 1): the cache is a
    constant for later blocks; the only differentiable attention is a block's exit step against
    its own fresh keys/values and a detached context.
  * ``"straight_through"``: reproduces PyTorch LongLive / Self-Forcing. Upstream's exit call writes
    its (grad-carrying) K/V into the cache in place; the no-grad commit then overwrites the values
    but not the autograd history, so later blocks' exit steps backpropagate into earlier blocks'
    exit-step K/V. Here every committed slot carries ``k_exit - stop_gradient(k_exit)`` (exactly 0
    in value) on top of the clean ``k``: forward values are unchanged, the backward of later exit
    steps flows into the earlier exit-step K/V (and on into the parameters). The carriers live
    beside the cache for one rollout only; the returned cache is gradient-free (no gradient
    crosses chunks or optimizer steps, as upstream's ``.detach()``).

Text keys/values are computed once per rollout from the trainable parameters: the exit step
differentiates through them (upstream recomputes them under gradient checkpointing), the no-grad
steps use a stopped copy.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longlive_jax.schedule import warped_steps
from longlive_jax.stream import engine
from longlive_jax.stream.cache import KVCache, StreamSpec, ring_slots, write_frames
from longlive_jax.stream.noise import BlockShape, block_draws

Array = jax.Array
sg = jax.lax.stop_gradient
KV_GRAD_MODES = ("stop", "straight_through")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutSpec:
  """Static description of a training rollout (hashable).

  Attributes:
    stream: the cache geometry (block, sink, window, tokens per frame).
    step_list: few-step schedule before warping (LongLive ``denoising_step_list``).
    shift: generator scheduler shift (``timestep_shift``, 5).
    context_t: timestep of the commit pass (``context_noise``, 0).
    renoise_context: commit ``add_noise(x0, eps, context_t)`` (upstream training) instead of x0.
    kv_grad: ``"stop"`` or ``"straight_through"`` (see the module docstring).
    remat: rematerialise the exit step in the backward pass (``jax.checkpoint``): a block keeps only the
      exit call's inputs and recomputes its activations when its gradient is taken, so the rollout's
      training memory is one block's activations instead of every block's (one more forward per block).
  """

  stream: StreamSpec
  step_list: tuple[int, ...] = (1000, 750, 500, 250)
  shift: float = 5.0
  context_t: float = 0.0
  renoise_context: bool = True
  kv_grad: str = "stop"
  remat: bool = False

  def __post_init__(self):
    object.__setattr__(self, "step_list", tuple(int(s) for s in self.step_list))
    if self.kv_grad not in KV_GRAD_MODES:
      raise ValueError(f"kv_grad must be one of {KV_GRAD_MODES}, got {self.kv_grad!r}")
    if not self.step_list:
      raise ValueError("step_list (denoising_step_list) must not be empty")

  @property
  def num_steps(self) -> int:
    return len(self.step_list)

  def schedule(self) -> tuple[np.ndarray, np.ndarray]:
    """``(timesteps, sigmas)`` float32 ``[steps]`` of the warped schedule."""
    return warped_steps(self.step_list, shift=self.shift)


@dataclasses.dataclass(frozen=True)
class Draws:
  """Random inputs of a rollout, stacked over blocks.

  ``noise [nb, B, n, H, W, C]``, ``renoise [nb, steps - 1, B, n, H, W, C]``, ``context_eps [nb, B, n, H, W, C]``.
  """

  noise: Array
  renoise: Array
  context_eps: Array


jax.tree_util.register_dataclass(Draws, data_fields=["noise", "renoise", "context_eps"], meta_fields=[])


def draw_blocks(
  key: Array, *, num_blocks: int, shape: BlockShape, num_steps: int, first_block: int | Array = 0
) -> Draws:
  """Draws of blocks ``first_block .. first_block + num_blocks - 1`` from ``fold_in(key, b)``.

  The same numbers as the streaming engine's :class:`~longlive_jax.stream.noise.KeyNoise` (with ``context_eps=True``)
  for the same key, so a training rollout can be replayed by the inference engine.
  """
  blocks = jnp.asarray(first_block, jnp.int32) + jnp.arange(num_blocks, dtype=jnp.int32)
  draw = functools.partial(block_draws, shape=shape, num_steps=num_steps)
  noise, renoise, ctx = jax.vmap(draw, in_axes=(None, 0))(key, blocks)
  return Draws(noise=noise, renoise=renoise, context_eps=ctx)


def sample_exit_step(key: Array, num_steps: int) -> Array:
  """One exit step ``e ~ U{0 .. num_steps - 1}`` (int32 scalar), shared by all blocks of a rollout."""
  return jax.random.randint(key, (), 0, num_steps, dtype=jnp.int32)


def _exit_step(model, cache, x, *, t, sigma, cross, spec: StreamSpec, carriers):
  """The differentiable step: engine.denoise, or (straight-through) the engine call that also returns K/V."""
  if carriers is None:
    return engine.denoise(model, cache, x, t=t, sigma=sigma, cross=cross, spec=spec), None, None
  dk, dv = carriers
  view = cache.replace(k=cache.k + dk, v=cache.v + dv)  # values unchanged; gradient reaches earlier exit K/V
  flow, k_new, v_new = engine.call(model, view, spec, x, t, cross)
  x0 = (x.astype(jnp.float32) - sigma * flow).astype(x.dtype)  # as engine.denoise
  return x0, k_new, v_new


def make_block_step(graphdef: nnx.GraphDef, params, *, context: Array, exit_step: Array, spec: RolloutSpec):
  """The per-block function ``((cache, carriers), draws_b) -> ((cache, carriers), x0 [B, n, H, W, C])``.

  Shared by the ``lax.scan`` and the Python-loop drivers of :func:`rollout`.
  """
  model = nnx.merge(graphdef, params)
  frozen = nnx.merge(graphdef, sg(params))
  st = spec.stream

  def exit_call(p, cache, x, t, sigma, cross, carriers):
    return _exit_step(nnx.merge(graphdef, p), cache, x, t=t, sigma=sigma, cross=cross, spec=st, carriers=carriers)

  if spec.remat:
    exit_call = jax.checkpoint(exit_call, prevent_cse=False)  # inside scan CSE cannot undo it
  cross = model.cross_kv(context)  # [L, B, T, H, Dh] each, differentiable
  cross_sg = sg(cross)
  ts_np, sig_np = spec.schedule()
  ts, sig = jnp.asarray(ts_np), jnp.asarray(sig_np)
  e = jnp.asarray(exit_step, jnp.int32)

  def block(carry, xs):
    cache, carriers = carry
    noise, renoise, ctx_eps = xs
    const_cache = sg(cache)

    def pre(k, x):  # steps before the exit: no gradient
      x0 = engine.denoise(frozen, const_cache, x, t=ts[k], sigma=sig[k], cross=cross_sg, spec=st)
      return (1.0 - sig[k + 1]) * x0 + sig[k + 1] * renoise[k]

    x = jax.lax.fori_loop(0, e, pre, sg(noise))
    x0, k_e, v_e = exit_call(params, cache, x, ts[e], sig[e], cross, carriers)
    frames = cache.next_frame + jnp.arange(x0.shape[1], dtype=jnp.int32)
    new_cache = engine.commit(
      frozen,
      const_cache,
      sg(x0),
      cross=cross_sg,
      spec=st,
      context_t=spec.context_t,
      context_eps=ctx_eps if spec.renoise_context else None,
      shift=spec.shift,
    )
    if carriers is not None:  # the committed slots now carry this block's exit K/V gradient path
      held = KVCache(k=carriers[0], v=carriers[1], frame=cache.frame, next_frame=cache.next_frame)
      held = write_frames(
        held, st, k_new=k_e - sg(k_e), v_new=v_e - sg(v_e), frames=frames, slots=ring_slots(st, frames)
      )
      carriers = (held.k, held.v)
    return (new_cache, carriers), x0

  return block


def _skippable(block):
  def run(carry, xs):
    *inner, on = xs

    def skip(carry, _):
      return carry, jnp.zeros_like(inner[0])

    return jax.lax.cond(on, block, skip, carry, tuple(inner))

  return run


def rollout(
  graphdef: nnx.GraphDef,
  params,
  cache: KVCache,
  draws: Draws,
  *,
  context: Array,
  exit_step: Array | int,
  spec: RolloutSpec,
  active: Array | None = None,
  use_scan: bool = True,
) -> tuple[Array, KVCache]:
  """Generates ``nb`` blocks from ``cache`` with gradient through the exit steps only.

  Args:
    graphdef, params: the causal generator (``nnx.split``); ``params`` is what gradients flow to.
    cache: the stream's cache (fresh for Stage 1; carried across chunks in Stage 2); treated as a constant.
    draws: :class:`Draws` of the ``nb`` blocks.
    context: text embedding ``[B, text_len, text_dim]`` of the active prompt.
    exit_step: int32 scalar in ``[0, steps)`` (traced or given; see :func:`sample_exit_step`).
    active: optional bool ``[nb]`` (traced): blocks marked False are skipped (no model call, cache unchanged,
      zeros in their place). Lets chunks of different lengths share one compiled program (Stage 2: the first
      chunk generates all its blocks, later ones leave the overlap blocks to the previous chunk).
    use_scan: ``lax.scan`` over blocks (one compiled block), else a Python loop (tests).

  Returns:
    ``(video [B, nb * n, H, W, C], cache)``: each block's exit-step x0 (differentiable), and the cache
    after committing all blocks (gradient-free).
  """
  block = make_block_step(graphdef, params, context=context, exit_step=exit_step, spec=spec)
  cache = sg(cache)
  carriers = None
  if spec.kv_grad == "straight_through":
    carriers = (jnp.zeros_like(cache.k), jnp.zeros_like(cache.v))
  xs = (draws.noise, draws.renoise, draws.context_eps)
  if active is not None:
    xs = (*xs, jnp.asarray(active, bool))
    block = _skippable(block)
  if use_scan:
    (cache, _), out = jax.lax.scan(block, (cache, carriers), xs)  # out [nb, B, n, H, W, C]
  else:
    carry, outs = (cache, carriers), []
    for b in range(draws.noise.shape[0]):
      carry, x0 = block(carry, jax.tree.map(lambda a, b=b: a[b], xs))
      outs.append(x0)
    cache, out = carry[0], jnp.stack(outs)
  nb, b, n = out.shape[:3]
  video = jnp.moveaxis(out, 0, 1).reshape(b, nb * n, *out.shape[3:])  # [B, nb * n, H, W, C]
  return video, sg(cache)
