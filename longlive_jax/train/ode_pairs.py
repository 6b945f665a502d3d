"""The teacher's ODE trajectories: many-step sampling with classifier-free guidance, and ODE-init pairs.

CausVid / Self-Forcing initialise the causal few-step generator by regressing the bidirectional
teacher's deterministic sampling trajectories (upstream ``generate_ode_pairs.py``). Here:

  * :func:`sample` runs the teacher's flow ODE with Euler steps on the shift-``s`` grid
    ``sigma_i = s u_i / (1 + (s - 1) u_i)``, ``u_i = 1 - i / N`` (timestep ``1000 sigma_i``), guided as
    ``v = v_uncond + g (v_cond - v_uncond)``, one ``lax.scan`` over the steps;
  * the states at ``u = 1, 3/4, 1/2, 1/4`` (``N`` a multiple of 4) sit exactly at the few-step schedule's
    warped timesteps ``[1000, 937.5, 833.3, 625]`` (shift 5), and with the clean end they are the
    ``trajectory [5, F, H, W, C]`` that the ``ode-init`` stage regresses (:func:`make_pairs`); with
    ``points = P`` the states at ``u = 1 - i / P`` match an evenly spaced P-step schedule
    (``denoising_step_list [1000, 1000 - 1000 / P, ...]``, ``N`` a multiple of P).

The teacher sees timestep ``1000 sigma_i`` on the grid it was trained with; the Euler update uses the same
sigmas (``x <- x + (sigma_{i+1} - sigma_i) v``), ending at sigma 0 (the clean sample).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax.model.wan import WanDiT

Array = jax.Array
RECORD_FRACTIONS = (1.0, 0.75, 0.5, 0.25)  # u of the recorded states: the warped [1000, 750, 500, 250]


def record_fractions(points: int) -> tuple[float, ...]:
  """``u`` of the recorded states for an evenly spaced ``points``-step schedule (4: :data:`RECORD_FRACTIONS`)."""
  if points < 1:
    raise ValueError(f"points must be >= 1, got {points}")
  return tuple(1.0 - i / points for i in range(points))


def euler_sigmas(num_steps: int, *, shift: float) -> np.ndarray:
  """float32 ``[num_steps + 1]``: ``sigma`` from 1 down to 0 on the shifted grid."""
  u = 1.0 - np.arange(num_steps + 1, dtype=np.float64) / num_steps
  return (shift * u / (1.0 + (shift - 1.0) * u)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("num_steps", "shift", "record"))
def sample(
  model: WanDiT,
  noise: Array,
  cond: Array,
  uncond: Array,
  guidance: Array,
  *,
  num_steps: int,
  shift: float = 5.0,
  record: tuple[int, ...] = (),
) -> tuple[Array, Array]:
  """Guided Euler sampling from ``noise [B, F, H, W, C]``: ``(x0, states [B, len(record), F, H, W, C])``.

  ``record`` lists step indices ``i`` whose input state ``x_{sigma_i}`` is returned (0 = the noise).
  ``guidance`` 1 skips nothing but costs the same (both branches always run, batched together).
  """
  sig = jnp.asarray(euler_sigmas(num_steps, shift=shift))
  b = noise.shape[0]
  ctx = jnp.concatenate([cond, uncond], axis=0)  # [2B, L, D]

  def body(x, i):
    t = jnp.full((2 * b,), 1000.0 * sig[i], jnp.float32)
    v = model(jnp.concatenate([x, x], axis=0), t, ctx).astype(jnp.float32)  # [2B, F, H, W, C]
    v = v[b:] + guidance * (v[:b] - v[b:])
    return x + (sig[i + 1] - sig[i]) * v, x

  x0, xs = jax.lax.scan(body, noise.astype(jnp.float32), jnp.arange(num_steps))  # xs [N, B, ...]
  states = jnp.moveaxis(xs[jnp.asarray(record, jnp.int32)], 0, 1) if record else xs[:0]
  return x0, states


def make_pairs(
  model: WanDiT,
  *,
  prompts: Sequence[str],
  encode_text: Callable[[list[str]], np.ndarray],
  negative_prompt: str,
  latent_shape: tuple[int, int, int, int],
  num_steps: int = 48,
  guidance: float = 3.0,
  shift: float = 5.0,
  seed: int = 0,
  batch: int = 8,
  points: int = 4,
  progress: bool = True,
) -> dict[str, np.ndarray]:
  """ODE-init records: ``trajectory [N, points + 1, F, H, W, C]`` (states at :func:`record_fractions`, then x0)
  and ``prompt``.

  ``latent_shape`` is ``(F, H, W, C)``. Sample ``n`` draws its noise from ``fold_in(key(seed), n)``.
  """
  from tqdm.auto import tqdm

  fractions = record_fractions(points)
  if num_steps % points:
    raise ValueError(
      f"num_steps must be a multiple of points = {points} (the recorded states sit at u = 1 - i / {points}), "
      f"got {num_steps}"
    )
  record = tuple(int(round((1.0 - u) * num_steps)) for u in fractions)
  uncond = np.asarray(encode_text([negative_prompt]), np.float32)  # [1, L, D]
  key = jax.random.PRNGKey(seed)
  trajs = []
  for s in tqdm(range(0, len(prompts), batch), desc="teacher ODE", unit="batch", disable=not progress):
    chunk = list(prompts[s : s + batch])
    cond = np.asarray(encode_text(chunk), np.float32)
    noise = jnp.stack([jax.random.normal(jax.random.fold_in(key, s + j), latent_shape) for j in range(len(chunk))])
    x0, states = sample(
      model,
      noise,
      jnp.asarray(cond),
      jnp.broadcast_to(jnp.asarray(uncond), cond.shape),
      jnp.float32(guidance),
      num_steps=num_steps,
      shift=shift,
      record=record,
    )
    trajs.append(np.concatenate([np.asarray(states), np.asarray(x0)[:, None]], axis=1))  # [b, P + 1, F, H, W, C]
  return {"trajectory": np.concatenate(trajs), "prompt": np.asarray(list(prompts))}


def save_pairs(path: str | Path, pairs: dict[str, np.ndarray]) -> Path:
  """Atomic ``.npz`` (the ``ode-init`` stage's ``data.source``)."""
  from longlive_jax.data.pipeline import save_npz_records

  return save_npz_records(path, **pairs)
