"""Does the training loop learn? A tiny teacher trained by flow matching on synthetic videos (CPU).

1. writes ``--videos`` synthetic captioned videos (a coloured square moving on a plain background,
   :func:`longlive_jax.data.write_synthetic_videos`), 9 frames of 64x64;
2. builds the ``video_latents`` dataset once with a fixed cheap encoder (``data.video_encoder:
   pool``: Wan's latent geometry, 9x64x64 -> 3x8x8, and a fixed random 3 -> 16 channel projection;
   captions -> a fixed random embedding per caption);
3. trains ``configs/tiny_teacher.yaml`` (the tiny DiT) for ``--steps`` steps through the real loop
   (grain pipeline, jit + donation, checkpoints, jsonl metrics, export);
4. reports the training-loss curve (mean of the first / last 20 steps) and a held-fixed evaluation:
   the flow-matching loss of the initial, final and EMA weights on every clip at 8 fixed timesteps
   with fixed noise (the training loss is noisy because each step draws its own timesteps).

  python experiments/train_tiny_teacher.py --steps 400 --out experiments/results/train_tiny_teacher_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def eval_loss(stage, params, batch, *, timesteps, seed: int = 1234) -> float:
  """Flow-matching loss (unweighted) of ``params`` on ``batch`` at fixed timesteps and noise."""
  from longlive_jax import schedule
  from longlive_jax.train.losses import flow_matching_loss
  from longlive_jax.train.stages.teacher import forward

  @jax.jit
  def one(params, t, key):
    x0 = jnp.asarray(batch["latents"])
    noise = jax.random.normal(key, x0.shape, jnp.float32)
    tt = jnp.full((x0.shape[0],), t, jnp.float32)
    x_t = schedule.add_noise(x0, noise, tt, shift=5.0)
    v = forward(stage.model(params), x_t, tt, jnp.asarray(batch["text_embedding"]))
    return flow_matching_loss(flow_pred=v, x0=x0, noise=noise)

  keys = jax.random.split(jax.random.PRNGKey(seed), len(timesteps))
  return float(np.mean([float(one(params, t, k)) for t, k in zip(timesteps, keys, strict=True)]))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--steps", type=int, default=400)
  ap.add_argument("--videos", type=int, default=32)
  ap.add_argument("--batch-size", type=int, default=8)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--work", default=str(REPO / "runs" / "train_tiny_teacher"), help="scratch folder (recreated)")
  ap.add_argument("--out", default=None, help="JSON result file (default: <work>/result.json)")
  a = ap.parse_args(argv)

  from longlive_jax.data import make_iterator
  from longlive_jax.train import inputs, loop, stages
  from longlive_jax.train.config import load_config

  work = Path(a.work)
  shutil.rmtree(work, ignore_errors=True)
  overrides = [
    f"run_dir={work / 'run'}",
    f"steps={a.steps}",
    f"batch_size={a.batch_size}",
    f"optim.lr={a.lr}",
    f"data.source={work / 'videos'}",
    f"data.data_dir={work / 'data'}",
    f"data.synthetic_videos={a.videos}",
    "checkpoint.interval=100",
    "log.format=jsonl",
    "log.progress=false",
    "ema.start_step=50",
    f"compile_cache_dir={work / 'jax_cache'}",
  ]
  cfg = load_config(REPO / "configs" / "tiny_teacher.yaml", overrides)
  stage = stages.get_stage("teacher")(cfg)
  t0 = time.perf_counter()
  ds_dir = inputs.dataset_dir(cfg, "video_latents")
  build_s = time.perf_counter() - t0

  init = stage.init(jax.random.PRNGKey(cfg.seed), mesh=None)
  init_params = jax.device_get(init.params)
  t0 = time.perf_counter()
  result = loop.train(cfg, stage=stage, return_state=True)
  train_s = time.perf_counter() - t0

  # Every clip once, in a fixed order, for the evaluation.
  it = make_iterator(ds_dir, batch_size=a.videos, seed=0, shuffle=False, num_epochs=1)
  batch = stage.make_batch(inputs.split_records(next(it)))
  ts = [50.0, 150.0, 300.0, 450.0, 600.0, 750.0, 850.0, 950.0]
  final = result.state
  ev = {
    "init": eval_loss(stage, init_params, batch, timesteps=ts),
    "final": eval_loss(stage, final.params, batch, timesteps=ts),
    "ema": eval_loss(stage, final.ema, batch, timesteps=ts),
  }
  losses = [m["loss"] for m in loop.read_metrics(cfg.log_dir)]
  first, last = float(np.mean(losses[:20])), float(np.mean(losses[-20:]))
  out = {
    "what": "tiny teacher (WanDiT dim 32, 2 layers) flow matching on synthetic moving-square videos, CPU",
    "steps": a.steps,
    "batch_size": a.batch_size,
    "lr": a.lr,
    "videos": a.videos,
    "latent_shape": list(batch["latents"].shape[1:]),
    "train_loss_first20_mean": first,
    "train_loss_last20_mean": last,
    "train_loss_ratio_last_over_first": last / first,
    "eval_loss_fixed_t_and_noise": ev,
    "eval_timesteps": ts,
    "loss_curve_mean_per_20_steps": [float(np.mean(losses[i : i + 20])) for i in range(0, len(losses), 20)],
    "loss_curve": losses,
    "dataset_build_s": round(build_s, 2),
    "train_wall_s_incl_compile": round(train_s, 2),
    "backend": jax.default_backend(),
    "machine": platform.machine(),
    "jax": jax.__version__,
  }
  path = Path(a.out) if a.out else work / "result.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=1) + "\n")
  summary = {k: v for k, v in out.items() if k not in ("loss_curve", "loss_curve_mean_per_20_steps")}
  print(json.dumps(summary, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
