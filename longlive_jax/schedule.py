"""Flow-matching timestep grid (LongLive / Self-Forcing ``FlowMatchScheduler``) and the warped few-step list.

``sigma_i = s * u_i / (1 + (s - 1) u_i)`` with ``u = linspace(1, 0, 1001)[:-1]`` (float32, as
torch builds it) and ``t_i = 1000 sigma_i``. The few-step list ``[1000, 750, 500, 250]`` is
"warped" onto this grid: ``t_k = cat(t, [0])[1000 - step_k]``, which for shift 5 gives
``[1000, 937.5, 833.33, 625]``. Sigma for a timestep is looked up at the nearest grid point.
"""

from __future__ import annotations

import numpy as np


def sigma_grid(shift: float, num_steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """``(timesteps, sigmas)``, float32 ``[num_steps]``, from 1000 down."""
  u = np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float32)[:-1]
  s = np.float32(shift)
  sig = (s * u / (np.float32(1.0) + (s - np.float32(1.0)) * u)).astype(np.float32)
  return (sig * np.float32(1000.0)).astype(np.float32), sig


def warped_steps(step_list=(1000, 750, 500, 250), *, shift: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
  """``(timesteps, sigmas)`` float32 ``[len(step_list)]`` of the warped few-step schedule."""
  t, sig = sigma_grid(shift)
  t_ext = np.concatenate([t, np.zeros(1, np.float32)])
  idx = 1000 - np.asarray(step_list)
  ts = t_ext[idx]
  return ts, sigma_at(ts, shift=shift)


def sigma_at(t, *, shift: float) -> np.ndarray:
  """Sigma of the nearest grid point to each timestep (upstream's lookup)."""
  grid_t, grid_s = sigma_grid(shift)
  t = np.atleast_1d(np.asarray(t, np.float32))
  idx = np.argmin(np.abs(grid_t[None, :] - t[:, None]), axis=1)
  return grid_s[idx]
