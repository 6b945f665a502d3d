"""Golden parity for the ``flow_scheduler`` and ``dmd_loss`` cases (upstream ``utils/scheduler.py``, ``model/dmd.py``).

Both cases are harness-only (no weights): every random draw of the upstream run is an input, and
the score / critic networks are stubs returning fixed tensors, which enter our losses as callables.
Arrays keep upstream's ``[B, F, C, H, W]`` layout here; the losses are layout-agnostic. The
references were evaluated in float64 (e.g. ``add_noise``, float32 upstream, differs from them by
<= 2.4e-7); ours run in float32 at ``highest`` matmul precision.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import schedule
from longlive_jax.train import losses


def _run_flow_scheduler(case_dir: Path, case: dict) -> list:
  from longlive_jax import golden

  cfg = case["config"]
  inp, out = np.load(case_dir / "inputs.npz"), np.load(case_dir / "outputs.npz")
  s5, s8 = float(cfg["shift"]), float(cfg["score_wrapper_shift"])
  q = jnp.asarray(inp["timestep_query"])
  t5, sig5 = schedule.sigma_grid(s5, cfg["num_inference_steps"])
  t8, sig8 = schedule.sigma_grid(s8, cfg["num_inference_steps"])
  warped, _ = schedule.warped_steps(tuple(inp["denoising_step_list_config"].tolist()), shift=s5)
  mm = {"shift": s5, "min_step": cfg["min_step"], "max_step": cfg["max_step"]}
  shift_t = jax.jit(lambda t: schedule.shift_timestep(t, **mm))
  u_t_int = jnp.floor(jnp.asarray(inp["u"]) * 1000.0).astype(jnp.int32)
  jit5 = jax.jit(
    lambda x0, n, f, xt, q: (
      schedule.add_noise(x0, n, q, shift=s5),
      schedule.flow_to_x0(f, xt, q, shift=s5),
      schedule.flow_to_x0(f, xt, q, shift=s8),
      schedule.x0_to_flow(x0, xt, q, shift=s5),
      schedule.lookup_index(q, shift=s5),
      schedule.lookup_index(q, shift=s8),
      schedule.sigma_lookup(q, shift=s5),
      schedule.sigma_lookup(q, shift=s8),
    )
  )
  an, x05, x08, v5, i5, i8, sl5, sl8 = jit5(inp["add_noise_x0"], inp["add_noise_noise"], inp["flow_pred"], inp["xt"], q)
  got = {
    "timesteps": t5,
    "sigmas": sig5,
    "timesteps_shift8": t8,
    "sigmas_shift8": sig8,
    "warped_denoising_step_list": warped,
    "linear_timesteps_weights": schedule.training_weights(s5, cfg["num_inference_steps"]),
    "sigma_index_shift5": i5,
    "sigma_index_shift8": i8,
    "sigma_lookup_shift5": sl5,
    "sigma_lookup_shift8": sl8,
    "add_noise_out": an,
    "x0_from_flow_shift5": x05,
    "x0_from_flow_shift8": x08,
    "flow_from_x0_shift5": v5,
    "dmd_timestep": shift_t(jnp.asarray(out["dmd_t_int"])),
    "u_t_int": u_t_int,
    "u_timestep": shift_t(u_t_int),
  }
  res = [golden.compare(k, np.asarray(v), out[k], golden.tolerance(case, k)) for k, v in got.items()]
  # numpy twins of the traced lookups must agree too
  res.append(
    golden.compare(
      "sigma_index_shift5 (numpy)",
      schedule.grid_index(inp["timestep_query"], shift=s5),
      out["sigma_index_shift5"],
      golden.tolerance(case, "sigma_index_shift5"),
    )
  )
  res.append(
    golden.compare(
      "sigma_lookup_shift8 (numpy)",
      schedule.sigma_at(inp["timestep_query"], shift=s8),
      out["sigma_lookup_shift8"],
      golden.tolerance(case, "sigma_lookup_shift8"),
    )
  )
  return res


def _run_dmd_loss(case_dir: Path, case: dict) -> list:
  from longlive_jax import golden

  cfg = case["config"]
  tol = case["tolerance"]
  inp = {k: jnp.asarray(v) for k, v in np.load(case_dir / "inputs.npz").items()}
  out = np.load(case_dir / "outputs.npz")
  gen_shift, score_shift = float(cfg["generator_scheduler_shift"]), float(cfg["score_wrapper_shift"])
  tmap = {"shift": float(cfg["timestep_shift"]), "min_step": cfg["min_step"], "max_step": cfg["max_step"]}
  g = float(cfg["real_guidance_scale"])

  # Generator loss, driven end to end: the score stubs return the fixed x0 tensors.
  def real_score(x_t, t, cond):
    return inp["real_cond_x0"] if cond == "cond" else inp["real_uncond_x0"]

  def fake_score(x_t, t, cond):
    return inp["fake_x0"]

  def gen(x, mask):
    t = schedule.shift_timestep(inp["t_int"], **tmap)  # [B, F]
    return losses.dmd_loss(
      x=x,
      noise=inp["noise"],
      timestep=t,
      real_score=real_score,
      fake_score=fake_score,
      cond="cond",
      uncond="uncond",
      guidance_scale=g,
      shift=gen_shift,
      fake_guidance_scale=float(cfg["fake_guidance_scale"]),
      gradient_mask=mask,
    )

  (loss, aux), dx = jax.jit(jax.value_and_grad(lambda x: gen(x, None), has_aux=True))(inp["x"])
  (loss_m, _), dx_m = jax.jit(jax.value_and_grad(lambda x: gen(x, inp["gradient_mask"]), has_aux=True))(inp["x"])

  # Critic loss: the REAL wrapper conversions around a stubbed DiT flow; gradient w.r.t. that flow.
  ct = schedule.shift_timestep(inp["critic_t_int"], **tmap)

  def crit(stub_flow):
    return losses.critic_loss(
      critic_flow=lambda x_t, t: stub_flow,
      x=inp["critic_x"],
      noise=inp["critic_noise"],
      timestep=ct,
      generator_shift=gen_shift,
      score_shift=score_shift,
    )

  (closs, caux), dstub = jax.jit(jax.value_and_grad(crit, has_aux=True))(inp["critic_stub_flow"])
  got = {
    "timestep": aux["timestep"],
    "sigma_add_noise": schedule.sigma_lookup(aux["timestep"], shift=gen_shift),
    "noisy": aux["noisy"],
    "kl_grad": aux["kl_grad"],
    "dmdtrain_gradient_norm": aux["dmdtrain_gradient_norm"],
    "loss": loss,
    "dloss_dx": dx,
    "loss_masked": loss_m,
    "dloss_dx_masked": dx_m,
    "critic_timestep": ct,
    "critic_sigma_shift5": schedule.sigma_lookup(ct, shift=gen_shift),
    "critic_sigma_shift8": schedule.sigma_lookup(ct, shift=score_shift),
    "critic_noisy": caux["noisy"],
    "critic_pred_x0": caux["pred_x0"],
    "critic_flow_pred": caux["flow_pred"],
    "critic_loss": closs,
    "dcritic_loss_dstub_flow": dstub,
  }
  return [golden.compare(k, np.asarray(v), out[k], tol) for k, v in got.items()]


RUNNERS = {"flow_scheduler": _run_flow_scheduler, "dmd_loss": _run_dmd_loss}


def run_golden(case_dir: Path, case: dict) -> list:
  """Every reproducible output of a ``flow_scheduler`` or ``dmd_loss`` case, compared at the case's tolerance.

  Not compared: ``dmd_t_int`` (the enumeration 0..999 that indexes ``dmd_timestep``, an input to it).
  """
  kind = case.get("kind")
  if kind not in RUNNERS:
    raise ValueError(f"golden case {Path(case_dir).name}: kind {kind!r} is not one of {sorted(RUNNERS)}")
  with jax.default_matmul_precision("highest"):
    return RUNNERS[kind](Path(case_dir), case)
