"""Flow-matching timestep grid (LongLive / Self-Forcing ``FlowMatchScheduler``), its lookups and conversions.

Conventions (rectified flow, as upstream): ``x_t = (1 - sigma) x0 + sigma eps``, the networks predict the
flow ``v = eps - x0``, so ``x0 = x_t - sigma v`` and ``v = (x_t - x0) / sigma``; timesteps are floats in
``[0, 1000]``.

The grid: ``sigma_i = s u_i / (1 + (s - 1) u_i)`` with ``u = linspace(1, 0, 1001)[:-1]`` and
``t_i = 1000 sigma_i``, all float32 as torch builds them (torch's CPU ``linspace`` evaluates
``start + step * i`` with a fused multiply-add in the first half and ``end - step * (n - 1 - i)`` in
the second; :func:`sigma_grid` reproduces it bit for bit). The few-step list ``[1000, 750, 500, 250]``
is "warped" onto this grid: ``t_k = cat(t, [0])[1000 - step_k]``, which for shift 5 gives
``[1000, 937.5, 833.33, 625]``.

Every sigma upstream uses (``add_noise``, ``step`` and both conversions) is the sigma of the grid
point NEAREST to the timestep, ``argmin |t_i - t|`` with the first minimum on ties (the larger t).
So an off-grid t gets a grid sigma, not ``t / 1000``, and ``t = 0`` maps to the last grid point
(t = 4.98, sigma = 0.00498 for shift 5): training's ``add_noise(x0, t=0)`` really adds ~0.5% noise.
The lookup in float32 equals upstream's float64 lookup of the conversions: the grid points that
bracket a query ``t >= t_999`` lie within a factor 2 of it, so their float32 differences are exact
(Sterbenz), and below ``t_999`` the last point wins either way.

Two grids matter in training: the generator scheduler has shift 5 (``timestep_shift``), but the
real / fake score wrappers are built with upstream's default shift 8; see :mod:`longlive_jax.train.losses`.

Precision of the JAX conversions. Upstream computes :func:`flow_to_x0` / :func:`x0_to_flow` in
float64 and casts the result back to float32. Without ``jax_enable_x64`` they run here in float32:
two roundings instead of one, i.e. ``x0`` within ~1 ulp of ``|x_t| + |sigma v|`` and ``v`` within
~2 ulp of ``(|x_t| + |x0|) / sigma`` (measured on the golden case: x0 <= 2.4e-7 abs, v <= 1.5e-7
relative, 6.1e-5 abs at |v| = 913 for sigma = 0.005). With x64 enabled, float64 inputs are
computed in float64. Under jit, XLA may also fuse a multiply-add (``add_noise``) into an FMA: 1 ulp.
The numpy functions here (grid, warped steps, lookups) are exact.

Numpy functions (host side, exact): :func:`sigma_grid`, :func:`warped_steps`, :func:`sigma_at`,
:func:`grid_index`, :func:`training_weights`, :func:`shift_timestep_np`. JAX functions (jittable,
traced timesteps): :func:`lookup_index`, :func:`sigma_lookup`, :func:`add_noise`, :func:`flow_to_x0`,
:func:`x0_to_flow`, :func:`shift_timestep`, :func:`sample_timestep`, :func:`training_weight`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

NUM_TRAIN_TIMESTEPS = 1000

# --------------------------------------------------------------------------------------- numpy (exact)


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
  """``torch.linspace(start, end, steps)`` in float32, bit-exact with torch's CPU kernel (FMA per element)."""
  f = np.float32
  step = f((f(end) - f(start)) / f(steps - 1))
  i = np.arange(steps, dtype=np.float64)
  # A float32 step times i <= 2^24 and the add are exact in float64: one rounding, like an FMA.
  head = (np.float64(f(start)) + np.float64(step) * i).astype(f)
  tail = (np.float64(f(end)) - np.float64(step) * (steps - 1 - i)).astype(f)
  return np.where(np.arange(steps) < steps // 2, head, tail)


@functools.lru_cache(maxsize=16)
def _grid(shift: float, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
  u = _torch_linspace_f32(1.0, 0.0, num_steps + 1)[:-1]
  s = np.float32(shift)
  sig = (s * u / (np.float32(1.0) + (s - np.float32(1.0)) * u)).astype(np.float32)
  t = (sig * np.float32(NUM_TRAIN_TIMESTEPS)).astype(np.float32)
  t.setflags(write=False)
  sig.setflags(write=False)
  return t, sig


def sigma_grid(shift: float, num_steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """``(timesteps, sigmas)``, float32 ``[num_steps]``, from 1000 down (``set_timesteps(num_steps, training=True)``)."""
  t, sig = _grid(float(shift), int(num_steps))
  return t.copy(), sig.copy()


def warped_steps(step_list=(1000, 750, 500, 250), *, shift: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
  """``(timesteps, sigmas)`` float32 ``[len(step_list)]`` of the warped few-step schedule."""
  t, sig = sigma_grid(shift)
  t_ext = np.concatenate([t, np.zeros(1, np.float32)])
  idx = 1000 - np.asarray(step_list)
  ts = t_ext[idx]
  return ts, sigma_at(ts, shift=shift)


def grid_index(t, *, shift: float) -> np.ndarray:
  """Index of the nearest grid point to each timestep (first minimum on ties), int64, ``t``'s shape (1-D at least)."""
  grid_t, _ = _grid(float(shift), 1000)
  t = np.atleast_1d(np.asarray(t, np.float32))
  d = np.abs(grid_t[None, :] - t.reshape(-1)[:, None])  # [N, 1000]
  return np.argmin(d, axis=1).reshape(t.shape)


def sigma_at(t, *, shift: float) -> np.ndarray:
  """Sigma of the nearest grid point to each timestep (upstream's lookup)."""
  _, grid_s = _grid(float(shift), 1000)
  return grid_s[grid_index(t, shift=shift)]


def training_weights(shift: float, num_steps: int = 1000) -> np.ndarray:
  """``linear_timesteps_weights`` of ``set_timesteps(training=True)``, float32 ``[num_steps]``.

  A bell ``y = exp(-2 ((t - n/2) / n)^2)`` over the grid's timesteps, shifted to a zero minimum and
  scaled to mean 1. Upstream's DMD and critic losses do not use it; :func:`training_weight` looks it up.
  """
  return _weights(float(shift), int(num_steps)).copy()


@functools.lru_cache(maxsize=16)
def _weights(shift: float, num_steps: int) -> np.ndarray:
  # float64 then cast: within 1e-6 of upstream's float32 evaluation (its float32 sum rounds differently).
  t = _grid(shift, num_steps)[0].astype(np.float64)
  y = np.exp(-2.0 * ((t - num_steps / 2) / num_steps) ** 2)
  y = y - y.min()
  w = (y * (num_steps / y.sum())).astype(np.float32)
  w.setflags(write=False)
  return w


def shift_timestep_np(t_int, *, shift: float, min_step: float = 20, max_step: float = 980) -> np.ndarray:
  """Numpy twin of :func:`shift_timestep` (float32, same rounding as upstream)."""
  u = np.asarray(t_int).astype(np.float32) / np.float32(NUM_TRAIN_TIMESTEPS)
  if shift > 1:
    s = np.float32(shift)
    t = s * u / (np.float32(1.0) + (s - np.float32(1.0)) * u) * np.float32(NUM_TRAIN_TIMESTEPS)
  else:
    t = np.asarray(t_int).astype(np.float32)
  return np.clip(t, np.float32(min_step), np.float32(max_step)).astype(np.float32)


# ------------------------------------------------------------------------------------------ JAX (jittable)


def lookup_index(t, *, shift: float) -> jax.Array:
  """Nearest-grid index of traced timesteps (any shape), int32; ``jnp.argmin`` keeps the first minimum."""
  grid_t, _ = _grid(float(shift), 1000)
  t = jax.lax.stop_gradient(jnp.asarray(t, jnp.float32))
  d = jnp.abs(jnp.asarray(grid_t) - t[..., None])  # [..., 1000]
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


def sigma_lookup(t, *, shift: float) -> jax.Array:
  """Sigma (float32) of the nearest grid point, ``t``'s shape; no gradient flows to ``t``."""
  _, grid_s = _grid(float(shift), 1000)
  return jnp.asarray(grid_s)[lookup_index(t, shift=shift)]


def expand_leading(a, x, *, name: str = "timestep") -> jax.Array:
  """``a [*lead]`` -> ``[*lead, 1, ...]`` broadcastable over ``x [*lead, ...]`` (a value per sample or per frame).

  Raises ValueError naming ``name`` when ``a``'s shape is not a leading prefix of ``x``'s.
  """
  a = jnp.asarray(a)
  if a.shape != x.shape[: a.ndim]:
    raise ValueError(f"{name} shape {a.shape} is not a leading prefix of the sample shape {x.shape}")
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def compute_dtype(*xs) -> jnp.dtype:
  """float64 when x64 is on and an input is float64, else float32 (upstream: float64, see module doc)."""
  dt = jnp.result_type(*xs)
  return jnp.float64 if dt == jnp.float64 else jnp.float32


def add_noise(x0, noise, t, *, shift: float) -> jax.Array:
  """``(1 - sigma) x0 + sigma noise`` with the float32 grid sigma, cast to ``noise``'s dtype (``type_as(noise)``).

  ``t``: ``[B]`` (per sample) or ``[B, F]`` (per frame), a leading prefix of ``x0``'s shape.
  """
  x0, noise = jnp.asarray(x0), jnp.asarray(noise)
  sig = expand_leading(sigma_lookup(t, shift=shift), x0)
  out = (1.0 - sig) * x0.astype(jnp.float32) + sig * noise.astype(jnp.float32)
  return out.astype(noise.dtype)


def flow_to_x0(flow, xt, t, *, shift: float) -> jax.Array:
  """``x0 = x_t - sigma(t) v`` (``_convert_flow_pred_to_x0``), in ``flow``'s dtype; see precision note above."""
  flow, xt = jnp.asarray(flow), jnp.asarray(xt)
  cd = compute_dtype(flow, xt)
  sig = expand_leading(sigma_lookup(t, shift=shift), flow).astype(cd)
  return (xt.astype(cd) - sig * flow.astype(cd)).astype(flow.dtype)


def x0_to_flow(x0, xt, t, *, shift: float) -> jax.Array:
  """``v = (x_t - x0) / sigma(t)`` (``_convert_x0_to_flow_pred``), in ``x0``'s dtype; see precision note above."""
  x0, xt = jnp.asarray(x0), jnp.asarray(xt)
  cd = compute_dtype(x0, xt)
  sig = expand_leading(sigma_lookup(t, shift=shift), x0).astype(cd)
  return ((xt.astype(cd) - x0.astype(cd)) / sig).astype(x0.dtype)


def shift_timestep(t_int, *, shift: float, min_step: float = 20, max_step: float = 980) -> jax.Array:
  """DMD / critic timestep from an integer draw: ``clamp(1000 * s u / (1 + (s-1) u), min_step, max_step)``.

  ``u = t_int / 1000`` and every operation in float32, in upstream's order (``dmd.py``); the shift
  only applies when ``shift > 1``; the result is a float timestep, not rounded. Evaluated as a lookup
  in a host-built table of all 1001 draws (:func:`shift_timestep_np`): under jit XLA rewrites
  ``x / 1000`` as ``x * 0.001``, which is off by one float32 ulp for some draws. Draws are clipped to
  ``[0, 1000]``.
  """
  table = jnp.asarray(_shift_table(float(shift), float(min_step), float(max_step)))
  idx = jnp.clip(jnp.asarray(t_int).astype(jnp.int32), 0, NUM_TRAIN_TIMESTEPS)
  return table[idx]


@functools.lru_cache(maxsize=16)
def _shift_table(shift: float, min_step: float, max_step: float) -> np.ndarray:
  return shift_timestep_np(np.arange(NUM_TRAIN_TIMESTEPS + 1), shift=shift, min_step=min_step, max_step=max_step)


def sample_timestep(
  key,
  batch: int,
  *,
  shift: float,
  min_step: float = 20,
  max_step: float = 980,
  min_timestep: int = 0,
  max_timestep: int = NUM_TRAIN_TIMESTEPS,
  num_frames: int | None = None,
) -> jax.Array:
  """One DMD / critic timestep per sample: ``t_int ~ U{min_timestep .. max_timestep - 1}`` then :func:`shift_timestep`.

  Returns float32 ``[batch]``, or ``[batch, num_frames]`` repeated over frames (upstream's
  ``uniform_timestep=True``). Upstream draws with ``torch.randint``; to replay given draws use
  :func:`shift_timestep` on them.
  """
  t_int = jax.random.randint(key, (batch,), min_timestep, max_timestep, dtype=jnp.int32)
  t = shift_timestep(t_int, shift=shift, min_step=min_step, max_step=max_step)
  if num_frames is not None:
    t = jnp.broadcast_to(t[:, None], (batch, num_frames))  # [B, F]
  return t


def training_weight(t, *, shift: float) -> jax.Array:
  """:func:`training_weights` at the nearest grid point of each timestep (``training_weight``), ``t``'s shape."""
  return jnp.asarray(_weights(float(shift), 1000))[lookup_index(t, shift=shift)]
