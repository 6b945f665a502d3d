"""Training losses of LongLive / Self-Forcing: DMD generator loss, critic flow loss, flow matching, ODE regression.

Pure functions, no model code: networks enter as callables (``score(x_t, t, cond) -> x0``,
``critic_flow(x_t, t) -> v``, conditioning closed over or passed through) or as precomputed
predictions, so stubs drive them in tests and our DiT drives them in training. Every function is
jittable and differentiable; all reductions are over whole arrays or over the non-batch axes of each
sample, so they are layout-agnostic (ours is ``[B, F, H, W, C]``, upstream's ``[B, F, C, H, W]``).

Timesteps are float ``[B]`` (per sample) or ``[B, F]`` (per frame, a leading prefix of the sample
shape). DMD and the critic draw one integer per sample and map it with
:func:`longlive_jax.schedule.shift_timestep` (shift 5, clamp [20, 980]).

Upstream quirks reproduced (defaults) with the fix as an option:
- Two grids. The generator scheduler (add_noise, the critic's x0 -> flow) has shift 5; the real and
  fake score wrappers keep upstream's default ``timestep_shift=8`` for their flow -> x0. Since
  sigma = t/1000 only up to grid quantisation, the critic's flow is ``(sigma8/sigma5) v`` instead of
  ``v`` (ratio within ~1e-3 of 1). ``score_shift=generator_shift`` removes the mismatch.
- Upstream computes the DMD loss in float64 and the conversions in float64; here float32 unless
  x64 is on (see :mod:`longlive_jax.schedule` for the bound). Against the golden float64 reference:
  kl_grad <= 1.9e-6 abs (|grad| <= 4.5), losses <= 4.8e-7, gradients <= 1.2e-9 (values ~1e-4).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from longlive_jax import schedule

Array = jax.Array
sg = jax.lax.stop_gradient


def masked_mean(values: Array, mask: Array | None = None) -> Array:
  """``mean(values)``, or the mean over the elements where ``mask`` is true (``values[mask].mean()``).

  ``mask`` is broadcast to ``values``' shape. An all-false mask gives NaN, like upstream's empty mean.
  """
  if mask is None:
    return jnp.mean(values)
  m = jnp.broadcast_to(jnp.asarray(mask, bool), values.shape)
  return jnp.sum(jnp.where(m, values, 0.0)) / jnp.sum(m).astype(values.dtype)


def _check_same(name: str, a: Array, ref: Array) -> None:
  if a.shape != ref.shape:
    raise ValueError(f"{name} has shape {a.shape}, expected {ref.shape} (the shape of x)")


# ------------------------------------------------------------------------------------------- DMD


def kl_grad(
  *,
  x: Array,
  real_cond_x0: Array,
  real_uncond_x0: Array,
  fake_x0: Array,
  guidance_scale: float,
  fake_uncond_x0: Array | None = None,
  fake_guidance_scale: float = 0.0,
  normalize: bool = True,
) -> tuple[Array, dict]:
  """DMD's score difference (``_compute_kl_grad``), no gradient.

  ``real = rc + g (rc - ru)`` (``g = 3`` is CFG weight 4 in the usual notation), likewise the fake
  when ``fake_guidance_scale != 0``; ``grad = (fake - real) / mean|x - real|`` with the mean over each
  sample's non-batch axes (``x`` is the generator output, not ``x_t``), then ``nan_to_num``.
  Returns ``(grad, {"dmdtrain_gradient_norm": mean|grad|})``.
  """
  x, rc, ru, fake = (sg(jnp.asarray(a)) for a in (x, real_cond_x0, real_uncond_x0, fake_x0))
  for name, a in (("real_cond_x0", rc), ("real_uncond_x0", ru), ("fake_x0", fake)):
    _check_same(name, a, x)
  real = rc + (rc - ru) * guidance_scale
  if fake_guidance_scale != 0.0:
    if fake_uncond_x0 is None:
      raise ValueError("fake_guidance_scale != 0 needs fake_uncond_x0")
    fu = sg(jnp.asarray(fake_uncond_x0))
    fake = fake + (fake - fu) * fake_guidance_scale
  grad = fake - real
  if normalize:
    axes = tuple(range(1, x.ndim))
    grad = grad / jnp.mean(jnp.abs(x - real), axis=axes, keepdims=True)  # [B, 1, ...]
  grad = jnp.nan_to_num(grad)
  return grad, {"dmdtrain_gradient_norm": jnp.mean(jnp.abs(grad))}


def dmd_generator_loss(
  *,
  x: Array,
  real_cond_x0: Array,
  real_uncond_x0: Array,
  fake_x0: Array,
  guidance_scale: float,
  gradient_mask: Array | None = None,
  fake_uncond_x0: Array | None = None,
  fake_guidance_scale: float = 0.0,
) -> tuple[Array, dict]:
  """DMD generator loss ``0.5 * mse(x, stop_gradient(x - grad))`` (``compute_distribution_matching_loss``).

  Differentiable in ``x`` only (the score predictions are stopped): ``d loss / d x = grad / N`` with
  ``N`` the element count, or the number of masked elements with ``gradient_mask`` (true = counted;
  ``grad`` and its normaliser still use every frame). Returns ``(loss, aux)`` with aux ``kl_grad``
  and ``dmdtrain_gradient_norm``. Upstream evaluates the MSE in float64; here in float32 (float64
  under x64), exact in the gradient up to the rounding of ``x - grad``.
  """
  x = jnp.asarray(x)
  grad, aux = kl_grad(
    x=x,
    real_cond_x0=real_cond_x0,
    real_uncond_x0=real_uncond_x0,
    fake_x0=fake_x0,
    guidance_scale=guidance_scale,
    fake_uncond_x0=fake_uncond_x0,
    fake_guidance_scale=fake_guidance_scale,
  )
  cd = schedule.compute_dtype(x)
  xc = x.astype(cd)
  target = sg(xc - grad.astype(cd))
  if gradient_mask is not None:
    _check_same("gradient_mask", jnp.asarray(gradient_mask), x)
  loss = 0.5 * masked_mean((xc - target) ** 2, gradient_mask)
  return loss, {**aux, "kl_grad": grad}


ScoreFn = Callable[[Array, Array, object], Array]


def score_x0(flow_fn: Callable[[Array, Array, object], Array], *, shift: float = 8.0) -> ScoreFn:
  """Wrap a flow-predicting DiT ``flow_fn(x_t, t, cond) -> v`` into an x0 predictor, like upstream's score wrapper.

  Upstream's real / fake score ``WanDiffusionWrapper`` is built with the default ``timestep_shift=8``,
  so its ``x0 = x_t - sigma8(t) v`` uses the shift-8 grid; pass ``shift=5`` for the consistent variant.
  """

  def fn(x_t, t, cond):
    return schedule.flow_to_x0(flow_fn(x_t, t, cond), x_t, t, shift=shift)

  return fn


def dmd_loss(
  *,
  x: Array,
  noise: Array,
  timestep: Array,
  real_score: ScoreFn,
  fake_score: ScoreFn,
  cond,
  uncond,
  guidance_scale: float,
  shift: float = 5.0,
  fake_guidance_scale: float = 0.0,
  gradient_mask: Array | None = None,
) -> tuple[Array, dict]:
  """The whole DMD generator objective for one draw: ``x_t = add_noise(x, noise, t)``, scores, the loss.

  ``x_t`` is on the shift-``shift`` grid; ``timestep`` comes from :func:`longlive_jax.schedule.sample_timestep`
  (or :func:`~longlive_jax.schedule.shift_timestep` on given draws); ``noise`` ~ N(0, I) like ``x``.
  ``real_score`` / ``fake_score``: ``(x_t, t, cond) -> x0`` (see :func:`score_x0`). The real score is
  evaluated with ``cond`` and ``uncond`` (the negative prompt); the fake with ``cond`` and, only when
  ``fake_guidance_scale != 0``, ``uncond``. The scores are under ``stop_gradient`` (upstream: no_grad).
  Returns ``(loss, aux)``: :func:`dmd_generator_loss`'s aux plus ``noisy`` (``x_t``) and ``timestep``.
  """
  x_t = sg(schedule.add_noise(sg(x), noise, timestep, shift=shift))
  fake_uncond_x0 = fake_score(x_t, timestep, uncond) if fake_guidance_scale != 0.0 else None
  loss, aux = dmd_generator_loss(  # kl_grad stops the gradient of every score
    x=x,
    real_cond_x0=real_score(x_t, timestep, cond),
    real_uncond_x0=real_score(x_t, timestep, uncond),
    fake_x0=fake_score(x_t, timestep, cond),
    fake_uncond_x0=fake_uncond_x0,
    guidance_scale=guidance_scale,
    fake_guidance_scale=fake_guidance_scale,
    gradient_mask=gradient_mask,
  )
  return loss, {**aux, "noisy": x_t, "timestep": timestep}


# ------------------------------------------------------------------------------- flow matching / critic


def flow_matching_loss(
  *,
  flow_pred: Array,
  x0: Array,
  noise: Array,
  weights: Array | None = None,
  mask: Array | None = None,
) -> Array:
  """Flow-matching MSE ``mean((flow_pred - (noise - x0))^2)`` (upstream ``FlowPredLoss``, target ``noise - x0``).

  ``weights``: optional per-sample ``[B]`` or per-frame ``[B, F]`` factors (e.g.
  :func:`longlive_jax.schedule.training_weight` of the timesteps: a bell of mean 1 over the grid),
  multiplied into the squared error before the (masked) mean. ``mask``: mean over true elements.
  """
  flow_pred, x0, noise = (jnp.asarray(a) for a in (flow_pred, x0, noise))
  _check_same("flow_pred", flow_pred, x0)
  _check_same("noise", noise, x0)
  cd = schedule.compute_dtype(flow_pred, x0, noise)
  err = (flow_pred.astype(cd) - (noise.astype(cd) - x0.astype(cd))) ** 2
  if weights is not None:
    err = err * schedule.expand_leading(jnp.asarray(weights, cd), err, name="weights")
  return masked_mean(err, mask)


def critic_loss(
  *,
  critic_flow: Callable[[Array, Array], Array],
  x: Array,
  noise: Array,
  timestep: Array,
  generator_shift: float = 5.0,
  score_shift: float = 8.0,
  gradient_mask: Array | None = None,
) -> tuple[Array, dict]:
  """The critic's (fake score's) denoising loss on a generated sample (``DMD.critic_loss``, ``denoising_loss_type: flow``).

  ``x_t = add_noise(x, noise, t)`` on the generator grid; the critic DiT predicts ``v =
  critic_flow(x_t, t)``; its wrapper turns it into ``x0 = x_t - sigma_score(t) v``; the critic loss turns
  that back with the GENERATOR scheduler, ``flow = (x_t - x0) / sigma_gen(t)``, and takes
  :func:`flow_matching_loss` against ``noise - x``. Differentiable through ``critic_flow`` (its
  parameters are closed over); ``x`` and ``noise`` are constants. Returns ``(loss, aux)`` with
  ``noisy``, ``pred_x0``, ``flow_pred``.
  """
  x, noise = sg(jnp.asarray(x)), jnp.asarray(noise)
  x_t = sg(schedule.add_noise(x, noise, timestep, shift=generator_shift))
  v = critic_flow(x_t, timestep)
  _check_same("critic_flow output", jnp.asarray(v), x)
  pred_x0 = schedule.flow_to_x0(v, x_t, timestep, shift=score_shift)
  flow = schedule.x0_to_flow(pred_x0, x_t, timestep, shift=generator_shift)
  loss = flow_matching_loss(flow_pred=flow, x0=x, noise=noise, mask=gradient_mask)
  return loss, {"noisy": x_t, "pred_x0": pred_x0, "flow_pred": flow}


# ------------------------------------------------------------------------------------- ODE regression


def ode_regression_inputs(trajectory: Array, index: Array, step_timesteps: Array) -> tuple[Array, Array, Array]:
  """Pick each frame's point of an ODE trajectory (``ODERegression._prepare_generator_input``).

  ``trajectory``: ``[B, K, F, ...]`` states from most noisy to clean (the last is the target);
  ``index``: int ``[B, F]`` into the first ``K`` entries (upstream draws one per block of frames and
  repeats it over the block); ``step_timesteps``: float ``[K]`` timestep of each state (``0`` for a
  clean one). Returns ``(x_t [B, F, ...], t [B, F], target [B, F, ...])``.
  """
  trajectory = jnp.asarray(trajectory)
  index = jnp.asarray(index, jnp.int32)
  b, _, f = trajectory.shape[:3]
  if index.shape != (b, f):
    raise ValueError(f"index shape {index.shape} != (batch, frames) {(b, f)} of trajectory {trajectory.shape}")
  idx = index.reshape(b, 1, f, *(1,) * (trajectory.ndim - 3))  # [B, 1, F, 1...]
  x_t = jnp.take_along_axis(trajectory, idx, axis=1)[:, 0]  # [B, F, ...]
  t = jnp.asarray(step_timesteps, jnp.float32)[index]  # [B, F]
  return x_t, t, trajectory[:, -1]


def ode_regression_loss(*, x0_pred: Array, target: Array, timestep: Array | None = None) -> Array:
  """ODE-regression (CausVid / Self-Forcing initialisation) loss: ``mse(x0_pred, target)`` over frames with ``t != 0``.

  ``x0_pred``: the generator's x0 from the trajectory point (see :func:`ode_regression_inputs`);
  ``target``: the trajectory's clean end; ``timestep``: ``[B, F]`` per-frame timestep (frames at
  ``t == 0`` were already clean and are left out, upstream's ``pred[t != 0]``), or None for all.
  """
  x0_pred, target = jnp.asarray(x0_pred), jnp.asarray(target)
  _check_same("target", target, x0_pred)
  cd = schedule.compute_dtype(x0_pred, target)
  err = (x0_pred.astype(cd) - target.astype(cd)) ** 2
  mask = None
  if timestep is not None:
    mask = schedule.expand_leading(jnp.asarray(timestep) != 0, err)
  return masked_mean(err, mask)
