"""DMD generator loss, critic flow loss, flow matching and ODE regression (longlive_jax.train.losses)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax import schedule as S
from longlive_jax.train import losses as L
from longlive_jax.train.golden_cases import run_golden

SHAPE = (2, 4, 3, 5, 8)  # [B, F, H, W, C]


def _rand(seed, n, shape=SHAPE):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def test_golden_dmd_loss(golden_root):
  d = golden_root / "dmd_loss"
  res = run_golden(d, json.loads((d / "case.json").read_text()))
  for r in res:
    print(f"{r.name:26s} max abs err {r.max_abs_err:.3g} (atol {r.atol:g})")
  assert {r.name for r in res} >= {"loss", "dloss_dx", "dloss_dx_masked", "critic_loss", "dcritic_loss_dstub_flow"}
  assert all(r.passed for r in res), [r for r in res if not r.passed]


def _np_kl_grad(x, rc, ru, fake, g):
  """Independent float64 reference of upstream's _compute_kl_grad."""
  x, rc, ru, fake = (a.astype(np.float64) for a in (x, rc, ru, fake))
  real = rc + g * (rc - ru)
  norm = np.abs(x - real).mean(axis=tuple(range(1, x.ndim)), keepdims=True)
  return np.nan_to_num((fake - real) / norm)


def test_dmd_generator_loss_value_grad_mask_and_jit():
  x, rc, ru, fake = _rand(0, 4)
  mask = np.zeros(SHAPE, bool)
  mask[:, 2:] = True  # later frames only (Stage-2 overlap frames left out)
  want = _np_kl_grad(x, rc, ru, fake, 3.0)

  def f(x, m):
    return L.dmd_generator_loss(
      x=x, real_cond_x0=rc, real_uncond_x0=ru, fake_x0=fake, guidance_scale=3.0, gradient_mask=m
    )

  for m in (None, mask):
    (loss, aux), dx = jax.value_and_grad(f, has_aux=True)(jnp.asarray(x), m)
    (loss_j, _), dx_j = jax.jit(jax.value_and_grad(f, has_aux=True))(jnp.asarray(x), m)
    sel = np.ones(SHAPE, bool) if m is None else m
    np.testing.assert_allclose(np.asarray(aux["kl_grad"]), want, rtol=2e-6, atol=2e-6)  # normaliser uses all frames
    np.testing.assert_allclose(float(loss), 0.5 * np.mean(want[sel] ** 2), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(dx), np.where(sel, want, 0) / sel.sum(), rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(float(loss_j), float(loss), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dx_j), np.asarray(dx), rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(float(aux["dmdtrain_gradient_norm"]), np.abs(want).mean(), rtol=2e-6)


def test_kl_grad_per_sample_normaliser_and_nan_to_num():
  x, rc, ru, fake = _rand(1, 4)
  x[1] = (rc + 3.0 * (rc - ru))[1]  # sample 1: x == real, normaliser 0 -> inf / nan -> finite
  grad, _ = L.kl_grad(x=x, real_cond_x0=rc, real_uncond_x0=ru, fake_x0=fake, guidance_scale=3.0)
  grad = np.asarray(grad)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad[0], _np_kl_grad(x, rc, ru, fake, 3.0)[0], rtol=2e-6, atol=2e-6)
  # the fake CFG branch: fake = fc + s (fc - fu)
  fu = _rand(2, 1)[0]
  g2, _ = L.kl_grad(
    x=x,
    real_cond_x0=rc,
    real_uncond_x0=rc,
    fake_x0=fake,
    fake_uncond_x0=fu,
    fake_guidance_scale=2.0,
    guidance_scale=0.0,
  )
  real = rc.astype(np.float64)
  fk = fake + 2.0 * (fake - fu.astype(np.float64))
  np.testing.assert_allclose(
    np.asarray(g2)[0], ((fk - real) / np.abs(x - real).mean(axis=(1, 2, 3, 4), keepdims=True))[0], rtol=1e-5
  )
  with pytest.raises(ValueError, match="fake_uncond_x0"):
    L.kl_grad(x=x, real_cond_x0=rc, real_uncond_x0=ru, fake_x0=fake, guidance_scale=3.0, fake_guidance_scale=1.0)
  with pytest.raises(ValueError, match="shape"):
    L.kl_grad(x=x, real_cond_x0=rc[:1], real_uncond_x0=ru, fake_x0=fake, guidance_scale=3.0)


def test_dmd_loss_end_to_end_with_flow_score_wrappers():
  """Scores built from a toy flow 'DiT' through score_x0 (shift 8) equal the hand-composed pipeline."""
  x, eps = _rand(3, 2)
  w = {"cond": 0.7, "uncond": -0.4, "fake": 0.2}

  def flow_real(x_t, t, cond):
    return w[cond] * x_t + 1e-3 * t[:, :, None, None, None]

  def flow_fake(x_t, t, cond):
    return w["fake"] * x_t

  t = S.shift_timestep(np.array([[530] * 4, [101] * 4]), shift=5.0)  # [B, F]
  mask = np.ones(SHAPE, bool)
  mask[:, 0] = False

  def f(x):
    return L.dmd_loss(
      x=x,
      noise=eps,
      timestep=t,
      real_score=L.score_x0(flow_real, shift=8.0),
      fake_score=L.score_x0(flow_fake, shift=8.0),
      cond="cond",
      uncond="uncond",
      guidance_scale=3.0,
      gradient_mask=mask,
    )

  (loss, aux), dx = jax.jit(jax.value_and_grad(f, has_aux=True))(jnp.asarray(x))
  xt = np.asarray(S.add_noise(x, eps, t, shift=5.0)).astype(np.float64)
  s8 = np.asarray(S.sigma_lookup(t, shift=8.0), np.float64)[..., None, None, None]
  tt = np.asarray(t, np.float64)[..., None, None, None]
  rc = xt - s8 * (0.7 * xt + 1e-3 * tt)
  ru = xt - s8 * (-0.4 * xt + 1e-3 * tt)
  fk = xt - s8 * (0.2 * xt)
  want = _np_kl_grad(x, rc, ru, fk, 3.0)
  np.testing.assert_allclose(np.asarray(aux["noisy"]), xt, atol=1e-6)
  np.testing.assert_allclose(float(loss), 0.5 * np.mean(want[mask] ** 2), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(dx), np.where(mask, want, 0) / mask.sum(), rtol=1e-4, atol=1e-10)


def test_critic_loss_shift_quirk_and_gradient():
  x, eps, v = _rand(4, 3)
  t = S.shift_timestep(np.array([363, 812]), shift=5.0)  # [B]

  def crit(v, score_shift):
    return L.critic_loss(critic_flow=lambda x_t, tt: v, x=x, noise=eps, timestep=t, score_shift=score_shift)

  # consistent grids: the critic's flow is the DiT's v, and the loss is plain flow matching
  (loss5, aux5), g5 = jax.value_and_grad(crit, has_aux=True)(jnp.asarray(v), 5.0)
  np.testing.assert_allclose(np.asarray(aux5["flow_pred"]), v, atol=2e-6)
  fm = float(L.flow_matching_loss(flow_pred=v, x0=x, noise=eps))
  np.testing.assert_allclose(float(loss5), fm, rtol=1e-5)
  np.testing.assert_allclose(float(loss5), np.mean((v - (eps - x)) ** 2), rtol=1e-5)
  # upstream default (score shift 8): flow = (sigma8/sigma5) v and the gradient carries the ratio
  (loss8, aux8), g8 = jax.jit(jax.value_and_grad(crit, has_aux=True), static_argnums=1)(jnp.asarray(v), 8.0)
  r = np.asarray(S.sigma_lookup(t, shift=8.0) / S.sigma_lookup(t, shift=5.0), np.float64)[:, None, None, None, None]
  assert np.all(r != 1.0)
  np.testing.assert_allclose(np.asarray(aux8["flow_pred"]), r * v, rtol=1e-5, atol=2e-6)
  target = eps.astype(np.float64) - x
  np.testing.assert_allclose(np.asarray(g8), 2 * (r * v - target) * r / v.size, rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(np.asarray(g5), 2 * (v - target) / v.size, rtol=1e-4, atol=1e-9)
  # (jit may fuse add_noise's multiply-add into an FMA: 1 ulp)
  np.testing.assert_allclose(np.asarray(aux8["noisy"]), np.asarray(S.add_noise(x, eps, t, shift=5.0)), atol=2.4e-7)


def test_flow_matching_weights_and_mask():
  f, x0, eps = _rand(5, 3)
  err = (f.astype(np.float64) - (eps - x0)) ** 2
  np.testing.assert_allclose(float(L.flow_matching_loss(flow_pred=f, x0=x0, noise=eps)), err.mean(), rtol=1e-6)
  wts = np.array([0.5, 2.0], np.float32)
  got = L.flow_matching_loss(flow_pred=f, x0=x0, noise=eps, weights=wts)
  np.testing.assert_allclose(float(got), (err * wts[:, None, None, None, None]).mean(), rtol=1e-6)
  t = np.array([[900.0, 500.0, 100.0, 30.0], [20.0, 980.0, 640.0, 333.0]], np.float32)
  wt = S.training_weight(t, shift=5.0)  # per-frame [B, F]
  got = L.flow_matching_loss(flow_pred=f, x0=x0, noise=eps, weights=wt)
  np.testing.assert_allclose(float(got), (err * np.asarray(wt)[..., None, None, None]).mean(), rtol=1e-6)
  m = np.zeros(SHAPE, bool)
  m[0, 1:3] = True
  np.testing.assert_allclose(
    float(L.flow_matching_loss(flow_pred=f, x0=x0, noise=eps, mask=m)), err[m].mean(), rtol=1e-6
  )
  with pytest.raises(ValueError, match="weights shape"):
    L.flow_matching_loss(flow_pred=f, x0=x0, noise=eps, weights=np.ones(3))


def test_ode_regression_inputs_and_loss():
  rng = np.random.default_rng(6)
  traj = rng.standard_normal((2, 5, 6, 2, 3, 4)).astype(np.float32)  # [B, K, F, H, W, C]
  steps = np.array([1000.0, 960.0, 888.9, 727.3, 0.0], np.float32)
  index = np.array([[0, 0, 0, 3, 3, 3], [4, 4, 4, 1, 1, 1]])  # one draw per block of 3 frames
  x_t, t, target = L.ode_regression_inputs(traj, index, steps)
  want = np.stack([np.stack([traj[b, index[b, f], f] for f in range(6)]) for b in range(2)])
  np.testing.assert_array_equal(np.asarray(x_t), want)
  np.testing.assert_array_equal(np.asarray(t), steps[index])
  np.testing.assert_array_equal(np.asarray(target), traj[:, -1])
  pred = rng.standard_normal(want.shape).astype(np.float32)
  keep = steps[index] != 0  # frames already clean are left out
  err = ((pred.astype(np.float64) - traj[:, -1]) ** 2)[keep]
  got = jax.jit(lambda p, tg, tt: L.ode_regression_loss(x0_pred=p, target=tg, timestep=tt))(pred, target, t)
  np.testing.assert_allclose(float(got), err.mean(), rtol=1e-6)
  with pytest.raises(ValueError, match="index shape"):
    L.ode_regression_inputs(traj, index[:, :3], steps)
