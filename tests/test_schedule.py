"""Flow-matching grid, nearest-grid lookups, conversions and DMD timestep mapping (longlive_jax.schedule)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax import schedule as S
from longlive_jax.train.golden_cases import run_golden


def _case(root, name):
  d = root / name
  return d, json.loads((d / "case.json").read_text())


def test_golden_flow_scheduler(golden_root):
  res = run_golden(*_case(golden_root, "flow_scheduler"))
  for r in res:
    print(f"{r.name:32s} max abs err {r.max_abs_err:.3g} (atol {r.atol:g})")
  assert len(res) >= 19
  assert all(r.passed for r in res), [r for r in res if not r.passed]
  # stricter than the case's tolerance: the grid is bit-exact with torch's (FMA linspace)
  out = np.load(golden_root / "flow_scheduler" / "outputs.npz")
  for shift, kt, ks in ((5.0, "timesteps", "sigmas"), (8.0, "timesteps_shift8", "sigmas_shift8")):
    t, s = S.sigma_grid(shift)
    np.testing.assert_array_equal(t, out[kt])
    np.testing.assert_array_equal(s, out[ks])


def _ref_index(t, grid_t):
  """Independent reference: float64 argmin (upstream's conversions), first minimum."""
  d = np.abs(grid_t.astype(np.float64)[None, :] - np.asarray(t, np.float32).astype(np.float64)[:, None])
  return np.argmin(d, axis=1)


@pytest.mark.parametrize("shift", [5.0, 8.0, 3.0])
def test_lookup_matches_float64_argmin_on_grid_midpoints_and_random(shift):
  grid_t, grid_s = S.sigma_grid(shift)
  mids = ((grid_t[:-1].astype(np.float64) + grid_t[1:]) / 2).astype(np.float32)  # near-ties
  rng = np.random.default_rng(0)
  t = np.concatenate([grid_t, mids, rng.uniform(0, 1000, 500).astype(np.float32), [0.0, 1e-3, 2.0, 1000.0, 1200.0]])
  t = t.astype(np.float32)
  want = _ref_index(t, grid_t)
  np.testing.assert_array_equal(np.asarray(jax.jit(lambda x: S.lookup_index(x, shift=shift))(t)), want)
  np.testing.assert_array_equal(S.grid_index(t, shift=shift), want)
  np.testing.assert_array_equal(np.asarray(S.sigma_lookup(t, shift=shift)), grid_s[want])
  # every grid point maps to itself
  np.testing.assert_array_equal(want[:1000], np.arange(1000))


def test_grid_shape_values_and_warp():
  t, s = S.sigma_grid(5.0)
  assert t.dtype == np.float32 and t.shape == (1000,) and t[0] == 1000.0
  assert np.all(np.diff(t) < 0)
  np.testing.assert_allclose(s[-1], 5 * 0.001 / (1 + 4 * 0.001), rtol=1e-6)
  ts, sig = S.warped_steps()
  np.testing.assert_allclose(ts, [1000.0, 937.5, 833.3333, 625.0], rtol=1e-6)
  np.testing.assert_allclose(sig, ts / 1000.0, rtol=1e-6)
  # t = 0 is the last grid point: training's add_noise(x, t=0) adds ~0.5% noise
  assert S.grid_index(0.0, shift=5.0)[0] == 999
  np.testing.assert_allclose(float(S.sigma_lookup(jnp.float32(0.0), shift=5.0)), 0.00498008, rtol=1e-5)


def test_add_noise_on_grid_and_per_frame_broadcast():
  rng = np.random.default_rng(1)
  x0 = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)  # [B, F, H, W, C]
  eps = rng.standard_normal(x0.shape).astype(np.float32)
  grid_t, grid_s = S.sigma_grid(5.0)
  idx = np.array([[10, 250, 999], [0, 500, 731]])
  t = grid_t[idx]  # [B, F]
  got = np.asarray(jax.jit(lambda a, b, c: S.add_noise(a, b, c, shift=5.0))(x0, eps, t))
  sig = grid_s[idx][..., None, None, None].astype(np.float64)
  np.testing.assert_allclose(got, (1 - sig) * x0 + sig * eps, atol=5e-7)
  # per-sample timesteps broadcast over frames; output dtype follows the noise
  got_b = S.add_noise(x0, eps.astype(jnp.bfloat16), t[:, 1], shift=5.0)
  assert got_b.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="leading prefix"):
    S.add_noise(x0, eps, t.T, shift=5.0)


def test_conversions_round_trip_and_gradients():
  rng = np.random.default_rng(2)
  x0 = rng.standard_normal((3, 2, 4, 4, 16)).astype(np.float32)
  eps = rng.standard_normal(x0.shape).astype(np.float32)
  t = np.array([980.0, 500.25, 20.0], np.float32)
  xt = S.add_noise(x0, eps, t, shift=5.0)
  v = S.x0_to_flow(x0, xt, t, shift=5.0)
  np.testing.assert_allclose(np.asarray(v), eps - x0, atol=5e-5)  # add_noise and x0_to_flow share the grid
  back = S.flow_to_x0(v, xt, t, shift=5.0)
  np.testing.assert_allclose(np.asarray(back), x0, atol=2e-6)
  # on a different grid the round trip scales by sigma8/sigma5 (the critic's quirk)
  x0_8 = S.flow_to_x0(v, xt, t, shift=8.0)
  v_5 = S.x0_to_flow(x0_8, xt, t, shift=5.0)
  ratio = np.asarray(S.sigma_lookup(t, shift=8.0) / S.sigma_lookup(t, shift=5.0))
  np.testing.assert_allclose(np.asarray(v_5), ratio[:, None, None, None, None] * np.asarray(v), rtol=2e-5, atol=2e-5)
  # d x0 / d flow = -sigma; no gradient reaches t
  g_v, g_t = jax.grad(lambda f, tt: S.flow_to_x0(f, xt, tt, shift=5.0).sum(), argnums=(0, 1))(v, jnp.asarray(t))
  sig = np.asarray(S.sigma_lookup(t, shift=5.0))
  np.testing.assert_allclose(np.asarray(g_v), -np.broadcast_to(sig[:, None, None, None, None], v.shape), rtol=1e-6)
  assert np.all(np.asarray(g_t) == 0)


def test_shift_timestep_table_bounds_and_sampling():
  draws = np.arange(1001)
  table = np.asarray(jax.jit(lambda d: S.shift_timestep(d, shift=5.0))(draws))
  np.testing.assert_array_equal(table, S.shift_timestep_np(draws, shift=5.0))
  u = draws / 1000.0
  np.testing.assert_allclose(table, np.clip(5000 * u / (1 + 4 * u), 20, 980), rtol=2e-7, atol=1e-4)
  assert table.min() == 20.0 and table.max() == 980.0 and np.all(np.diff(table) >= 0)
  # shift <= 1: the draw itself, clamped
  np.testing.assert_array_equal(np.asarray(S.shift_timestep(draws, shift=1.0)), np.clip(draws, 20, 980))
  t = S.sample_timestep(jax.random.key(0), 4096, shift=5.0, min_step=20, max_step=980)
  t = np.asarray(t)
  assert t.shape == (4096,) and t.min() >= 20.0 and t.max() <= 980.0
  assert np.isin(t, table).all()
  # draws 908..999 clamp to 980 (9.2%), draws 0..4 to 20 (0.5%): the sampled frequencies follow
  assert np.sum(table[:1000] == 980.0) == 92 and np.sum(table[:1000] == 20.0) == 5
  assert 0.075 < np.mean(t == 980.0) < 0.11
  tf = np.asarray(S.sample_timestep(jax.random.key(1), 3, shift=5.0, num_frames=6))
  assert tf.shape == (3, 6) and np.all(tf == tf[:, :1])


def test_training_weight_lookup():
  w = S.training_weights(5.0)
  np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)
  assert w.min() == 0.0
  grid_t, _ = S.sigma_grid(5.0)
  got = np.asarray(S.training_weight(grid_t[[0, 400, 999]] + 0.01, shift=5.0))
  np.testing.assert_array_equal(got, w[[0, 400, 999]])
