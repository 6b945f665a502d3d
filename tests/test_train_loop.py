"""Training loop, checkpoints, config and CLI of the teacher stage (tiny config, CPU).

* exact resume: 4 steps in one run == 2 steps, checkpoint, 2 more steps in a NEW PROCESS (train
  state bitwise, metrics bitwise), through ``cmd_train``;
* an Orbax save killed before finalisation never loads as a checkpoint;
* remat and bf16 compute: remat forward / gradients equal the plain ones; bf16 keeps f32 masters;
* config overrides and CLI errors name the key and the valid ones.

The compiled programs go to a JAX persistent compilation cache in the test's temp folder, shared by
the subprocesses, so only the first run compiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from longlive_jax.config import tiny_config
from longlive_jax.train import config as tconfig
from longlive_jax.train import loop
from longlive_jax.train.checkpointing import TrainCheckpointer
from longlive_jax.train.cli import TrainError, add_train, cmd_train
from longlive_jax.train.optim import OptimConfig
from longlive_jax.train.stages.teacher import TeacherStage

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_teacher.yaml"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
  return tmp_path_factory.mktemp("train_loop")


@pytest.fixture(scope="module")
def cache_dir(work):
  """Persistent compilation cache for this module (restored afterwards)."""
  d = work / "jax_cache"
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", str(d))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield d
  jax.config.update("jax_compilation_cache_dir", old[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def _overrides(work: Path, run: str, steps: int) -> list[str]:
  return [
    f"run_dir={work / run}",
    f"steps={steps}",
    "batch_size=2",
    f"data.source={work / 'videos'}",
    f"data.data_dir={work / 'data'}",
    "data.synthetic_videos=6",
    "data.num_frames=5",
    "data.height=32",
    "data.width=32",
    "checkpoint.interval=2",
    "log.progress=false",
    "log.format=both",
  ]


def _cli(argv: list[str]) -> int:
  p = argparse.ArgumentParser()
  add_train(p.add_subparsers(dest="command"))
  return cmd_train(p.parse_args(["train", *argv]))


def _read_state(ckpt_dir: Path, step: int) -> dict:
  tree = ocp.PyTreeCheckpointer().restore((ckpt_dir / str(step) / "state").absolute())
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_exact_resume_in_new_process(work, cache_dir):
  assert _cli([str(TINY), *_overrides(work, "full", 4)]) == 0
  # The 2-step state of that run (saved at step 2 and never touched again) seeds a second run folder.
  shutil.copytree(work / "full" / "checkpoints" / "2", work / "resumed" / "checkpoints" / "2")
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  code = "import sys; from longlive_jax.train.cli import main; sys.exit(main())"
  proc = subprocess.run(
    [sys.executable, "-c", code, str(TINY), *_overrides(work, "resumed", 4)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from step 2" in proc.stderr

  full, resumed = work / "full", work / "resumed"
  assert TrainCheckpointer(full / "checkpoints").all_steps() == [2, 4]
  a, b = _read_state(full / "checkpoints", 4), _read_state(resumed / "checkpoints", 4)
  assert a.keys() == b.keys() and any("ema" in k for k in a) and any("opt_state" in k for k in a)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # The 2-step checkpoints agree too, and training moved the weights.
  a2 = _read_state(full / "checkpoints", 2)
  assert any(not np.array_equal(a2[k], a[k]) for k in a if "params" in k)

  ma, mb = loop.read_metrics(full / "logs"), loop.read_metrics(resumed / "logs")
  assert [m["step"] for m in ma] == [1, 2, 3, 4] and [m["step"] for m in mb] == [3, 4]
  assert ma[2:] == mb, (ma, mb)
  assert all(np.isfinite(m["loss"]) for m in ma)

  # Export: the EMA in the inference checkpoint format, equal in both runs.
  from longlive_jax import checkpoint

  cfg_a, pa, _, info = checkpoint.load(full / "export")
  _, pb, _, _ = checkpoint.load(resumed / "export")
  assert info["meta"]["stage"] == "teacher" and info["meta"]["step"] == 4 and cfg_a.dim == 32
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  ema = {k.split("['ema']", 1)[1]: v for k, v in a.items() if k.startswith("['ema']")}
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(pa)[0]}
  np.testing.assert_array_equal(flat["['blocks']['ffn']['fc1']['kernel']"], ema["['blocks']['ffn']['fc1']['kernel']"])

  # TensorBoard event file with the loss scalars (tensorboardX, no TensorFlow).
  events = list((full / "logs").glob("events.out.tfevents.*"))
  assert events and b"train/loss" in events[0].read_bytes()


def test_interrupted_save_never_loads(work):
  d = work / "interrupted"
  script = textwrap.dedent(
    f"""
    import os
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from longlive_jax.train.checkpointing import TrainCheckpointer
    ck = TrainCheckpointer({str(d)!r}, keep=3)
    ck.save(1, {{"w": jnp.arange(6.0), "step": jnp.int32(1)}}, meta={{"stage": "x"}})
    ck.wait()
    async def killed(self):  # the process dies after the data is written, before the rename
      os._exit(17)
    atomicity.AtomicRenameTemporaryPath.finalize = killed
    ck.save(2, {{"w": jnp.arange(6.0) * 2, "step": jnp.int32(2)}}, meta={{"stage": "x"}})
    ck.wait()
    """
  )
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 17, proc.stderr[-3000:]
  leftovers = [p.name for p in d.iterdir() if p.name.startswith("2")]
  assert leftovers and all("tmp" in n for n in leftovers), leftovers  # step 2 was written, not finalised
  ck = TrainCheckpointer(d)
  assert ck.all_steps() == [1] and ck.latest_step() == 1
  target = {"w": jnp.zeros(6), "step": jnp.int32(0)}
  r = ck.restore(None, target=target)
  np.testing.assert_array_equal(np.asarray(r.state["w"]), np.arange(6.0))
  assert r.step == 1 and r.meta["stage"] == "x"
  ck.close()
  assert not [p for p in d.iterdir() if p.name.startswith("2")]  # the temporary folder was cleaned up


def test_remat_and_bf16(cache_dir):
  cfg = tiny_config()
  stage = TeacherStage(model_config=cfg, optim_config=OptimConfig(lr=1e-3), remat=False)
  state = stage.init(jax.random.PRNGKey(1), mesh=None)
  rng = np.random.default_rng(0)
  records = [
    {"latents": rng.standard_normal((3, 4, 4, 16)), "text_embedding": rng.standard_normal((16, 32))} for _ in range(2)
  ]
  batch = stage.make_batch(records)
  key = jax.random.fold_in(state.key, 0)  # the key of the first step

  vg = jax.jit(jax.value_and_grad(lambda p, s: s.loss(p, batch, key)[0]), static_argnums=1)
  l0, g0 = vg(state.params, stage)
  remat = TeacherStage(model_config=cfg, optim_config=OptimConfig(lr=1e-3), remat=True)
  l1, g1 = vg(state.params, remat)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)

  bf16 = TeacherStage(model_config=cfg.replace(dtype="bfloat16"), optim_config=OptimConfig(lr=1e-3), remat=True)
  new, metrics = jax.jit(bf16.step)(state, batch)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves((new.params, new.opt_state)) if p.ndim)
  assert abs(float(metrics["loss"]) - float(l0)) < 0.02 * float(l0), (float(metrics["loss"]), float(l0))
  assert int(new.step) == 1 and np.isfinite(float(metrics["grad_norm"]))


def test_lr_schedule_scales_the_update_and_keeps_the_optimizer_state():
  """optim.warmup_steps / decay_start / decay_steps: the factor's values; a scheduled step moves the weights by
  exactly the factor times the plain step's move (AdamW + weight decay, as a scheduled lr would); the optimizer
  state has the same structure with or without a schedule (a run can gain one and still resume)."""
  from longlive_jax.train.optim import lr_factor

  o = OptimConfig(warmup_steps=4, decay_start=10, decay_steps=5)
  want = [0.25, 0.5, 0.75] + [1.0] * 8 + [0.8, 0.6, 0.4, 0.2, 0.0, 0.0]
  np.testing.assert_allclose([float(lr_factor(o, s)) for s in range(17)], want, atol=1e-6)

  cfg = tiny_config()
  rng = np.random.default_rng(0)
  records = [
    {"latents": rng.standard_normal((3, 4, 4, 16)), "text_embedding": rng.standard_normal((16, 32))} for _ in range(2)
  ]
  plain = TeacherStage(model_config=cfg, optim_config=OptimConfig(lr=1e-3))
  warm = TeacherStage(model_config=cfg, optim_config=OptimConfig(lr=1e-3, warmup_steps=4))
  state = plain.init(jax.random.PRNGKey(1), mesh=None)
  batch = plain.make_batch(records)
  a, _ = jax.jit(plain.step)(state, batch)
  b, _ = jax.jit(warm.step)(state, batch)  # step 0: factor 1/4
  assert jax.tree.structure(a.opt_state) == jax.tree.structure(b.opt_state)
  leaves = [[np.asarray(x) for x in jax.tree.leaves(s.params)] for s in (state, a, b)]
  for p0, pa, pb in zip(*leaves, strict=True):
    np.testing.assert_allclose(pb - p0, 0.25 * (pa - p0), atol=1e-7)
  assert max(float(np.max(np.abs(pa - p0))) for p0, pa, _ in zip(*leaves, strict=True)) > 1e-5  # the step moved


def test_first_frame_weight_reweights_latent_zero():
  """options.first_frame_weight: the loss is the per-frame flow-matching error weighted [f, 1, ..., 1] / mean
  (times the training weight, or alone with training_weight off), recomputed here from the same draws; f = 1
  is the plain upstream mean."""
  from longlive_jax import schedule
  from longlive_jax.train.stages.teacher import Options, forward

  cfg = tiny_config()
  rng = np.random.default_rng(3)
  records = [
    {"latents": rng.standard_normal((4, 4, 4, 16)), "text_embedding": rng.standard_normal((16, 32))} for _ in range(2)
  ]
  key = jax.random.key(7)

  def loss(f, training_weight=True):
    opts = Options(first_frame_weight=f, training_weight=training_weight)
    stage = TeacherStage(model_config=cfg, optim_config=OptimConfig(lr=1e-3), options=opts)
    state = stage.init(jax.random.PRNGKey(1), mesh=None)
    return stage, state.params, float(stage.loss(state.params, stage.make_batch(records), key)[0])

  stage, params, plain = loss(1.0)
  batch = stage.make_batch(records)
  x0 = jnp.asarray(batch["latents"], jnp.float32)  # [B, F, H, W, C]
  k_t, k_n = jax.random.split(key)
  t = schedule.sample_timestep(k_t, 2, shift=5.0)
  noise = jax.random.normal(k_n, x0.shape, jnp.float32)
  v = forward(stage.model(params), schedule.add_noise(x0, noise, t, shift=5.0), t, batch["text_embedding"])
  unweighted = np.asarray(jnp.mean((v - (noise - x0)) ** 2, axis=(2, 3, 4)))  # [B, F]
  per_frame = unweighted * np.asarray(schedule.training_weight(t, shift=5.0))[:, None]
  np.testing.assert_allclose(plain, per_frame.mean(), rtol=1e-5)
  w = np.array([6.0, 1.0, 1.0, 1.0]) / 2.25  # mean 1 over the 4 frames
  # without the training weight (the frame weights alone, one per frame for the whole batch)
  np.testing.assert_allclose(loss(6.0, training_weight=False)[2], (unweighted * w).mean(), rtol=1e-5)
  weighted = loss(6.0)[2]
  np.testing.assert_allclose(weighted, (per_frame * w).mean(), rtol=1e-5)
  assert abs(weighted - plain) > 1e-3 * plain  # frame 0's error differs from the mean, so the weight shows


def test_frame_timestep_fraction_draws_per_frame():
  """options.frame_timestep_fraction: 0 keeps one timestep per clip (upstream); 1 draws every latent frame's
  timestep from the same shifted grid (they differ across frames); the loss is the flow-matching error at
  exactly those per-frame noise levels, recomputed here; a fraction in between mixes per sample."""
  from longlive_jax import schedule
  from longlive_jax.train.stages.teacher import Options, forward

  cfg = tiny_config()
  rng = np.random.default_rng(4)
  records = [
    {"latents": rng.standard_normal((6, 4, 4, 16)), "text_embedding": rng.standard_normal((16, 32))} for _ in range(2)
  ]
  key = jax.random.key(9)
  k_t, k_n = jax.random.split(key)
  clip_t = schedule.sample_timestep(k_t, 2, shift=5.0)  # [B]
  grid = np.asarray(schedule.shift_timestep(jnp.arange(1000), shift=5.0, min_step=0.0, max_step=1000.0))

  stage = TeacherStage(
    model_config=cfg,
    optim_config=OptimConfig(lr=1e-3),
    options=Options(training_weight=False, frame_timestep_fraction=1.0),
  )
  t = np.asarray(stage._mix_frame_timesteps(clip_t, k_t, num_frames=6))  # [B, F]
  assert t.shape == (2, 6) and all(len(np.unique(row)) > 1 for row in t)  # every clip: frames at different levels
  assert np.all(np.min(np.abs(t[..., None] - grid), axis=-1) < 1e-3)  # all on the shifted grid
  mixed = TeacherStage(
    model_config=cfg, optim_config=OptimConfig(lr=1e-3), options=Options(frame_timestep_fraction=0.5)
  )
  rows = np.asarray(mixed._mix_frame_timesteps(jnp.full((64,), 500.0), k_t, num_frames=6))
  per_clip = np.all(rows == 500.0, axis=1)
  assert 10 < per_clip.sum() < 54  # about half the samples keep their clip draw

  state = stage.init(jax.random.PRNGKey(1), mesh=None)
  batch = stage.make_batch(records)
  x0 = jnp.asarray(batch["latents"], jnp.float32)
  noise = jax.random.normal(k_n, x0.shape, jnp.float32)
  tj = jnp.asarray(t)
  v = forward(stage.model(state.params), schedule.add_noise(x0, noise, tj, shift=5.0), tj, batch["text_embedding"])
  expected = float(jnp.mean((v - (noise - x0)) ** 2))
  np.testing.assert_allclose(float(stage.loss(state.params, batch, key)[0]), expected, rtol=1e-5)
  plain = TeacherStage(model_config=cfg, optim_config=OptimConfig(lr=1e-3), options=Options(training_weight=False))
  assert abs(float(plain.loss(state.params, batch, key)[0]) - expected) > 1e-4 * expected  # the draws matter


def test_attention_key_traces_the_run_with_that_kernel(work, cache_dir, monkeypatch):
  """``attention: chunked`` routes every attention call of the run through the chunked kernel (the tiny
  teacher's calls are small enough for "auto" to take the reference path); the export keeps "auto"."""
  from longlive_jax.model.attention import dispatch

  calls = []

  def spy(*args, **kwargs):
    calls.append(args[0].shape)
    return chunked(*args, **kwargs)

  chunked = dispatch.chunked_attention
  monkeypatch.setattr(dispatch, "chunked_attention", spy)
  assert _cli([str(TINY), *_overrides(work, "attn_auto", 1)]) == 0
  assert calls == []
  assert _cli([str(TINY), *_overrides(work, "attn_chunked", 1), "attention=chunked"]) == 0
  assert len(calls) >= 2  # self- and cross-attention of the scanned block, forward and backward traces
  meta = json.loads((work / "attn_chunked" / "export" / "longlive_jax.json").read_text())
  assert meta["config"]["attention_impl"] == "auto"
  assert dispatch._override is None  # restored after the run


def test_config_overrides_and_errors(tmp_path):
  cfg = tconfig.load_config(TINY, ["optim.lr=1e-5", "mesh.fsdp=2", "data.fps=null", "options.timestep_shift=3"])
  assert cfg.optim.lr == 1e-5 and isinstance(cfg.optim.lr, float) and cfg.mesh.fsdp == 2 and cfg.data.fps is None
  assert cfg.options.timestep_shift == 3.0 and cfg.stage == "teacher" and cfg.ema.start_step == 10
  mc = tconfig.resolve_model_config(tconfig.load_config(TINY, ["model.dtype=bfloat16"]).model)
  assert mc.dtype == "bfloat16" and mc.param_dtype == "float32"

  cases = {
    "optim.lrr=1": ["optim.lrr", "lr, beta1"],
    "steps=abc": ["steps: expected int", "'abc'"],
    "log.format=xml": ["log.format"],
    "options.shift=5": ["options.shift", "timestep_shift"],
    "options.first_frame_weight=0": ["options.first_frame_weight must be > 0", "got 0"],
    "options.frame_timestep_fraction=1.5": ["options.frame_timestep_fraction must be in [0, 1]", "got 1.5"],
    "optim.decay_start=100": ["decay_start and decay_steps go together", "decay_steps=0"],
    "optim.warmup_steps=-1": ["warmup_steps must be >= 0"],
    "stage=nope": ["unknown stage 'nope'", "teacher, ode-init, self-forcing, streaming-long, forced, vae"],
    "bogus=1": ["unknown key bogus", "stage, run_dir"],
    "steps": ["key=value"],
    "attention=fast": ["attention must be one of", "auto, xla, chunked"],
  }
  for override, needles in cases.items():
    with pytest.raises(TrainError) as e:
      _cli([str(TINY), override])
    for n in needles:
      assert n in str(e.value), (override, str(e.value))
  with pytest.raises(TrainError, match="cannot read train config"):
    _cli([str(tmp_path / "missing.yaml")])
  with pytest.raises(TrainError, match="needs 3 devices"):
    _cli([str(TINY), "mesh.data=3", f"run_dir={tmp_path}"])
  out = tmp_path / "printed.json"
  import contextlib
  import io

  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert _cli([str(TINY), "steps=7", "--print-config"]) == 0
  out.write_text(buf.getvalue())
  assert json.loads(out.read_text())["steps"] == 7


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
  """Every config in configs/ (upstream recipes, tiny ones, the toy world's) parses, options included: a typo in
  a key or a value a stage's Options reject fails here, not hours into train_all.sh."""
  cfg = tconfig.load_config(path)
  assert cfg.steps > 0 and cfg.stage in path.read_text()
  assert dataclasses.is_dataclass(cfg.options), type(cfg.options)


def test_missing_stage_module_is_a_clear_error():
  from longlive_jax.train import stages

  with pytest.raises(stages.StageError, match="longlive_jax.train.stages.no_such_stage is not available"):
    stages.lazy("no_such_stage")(None)
  with pytest.raises(stages.StageError, match="unknown training stage 'x'; valid stages: teacher"):
    stages.get_stage("x")


def test_train_all_feeds_each_stage_what_an_earlier_step_made():
  """experiments/toyworld/train_all.sh runs the toy-world configs in order; every checkpoint a config starts from
  (``model.checkpoint``, the DMD stages' teacher and critic) must be the export of a config run before it, or a
  folder an earlier line of the script writes. A config pointing at a stale run would train for hours on it."""
  import re

  import yaml

  script = (REPO / "experiments/toyworld/train_all.sh").read_text()
  made: list[str] = []
  last_teacher = None
  order = [m.group(1) for m in re.finditer(r"configs/toyworld/(\w+)\.yaml", script)]
  assert order[:3] == ["vae", "vae_decoder", "teacher"] and order[-1].startswith("streaming_long"), order
  shipped = re.search(r"assemble --dit \"\$RUN/(\w+)/export\"", script).group(1)
  # The shipped DiT is the last config's export, or the weight average (soup.py) of runs of the last config (its
  # own run folder or one given as run_dir / continue_run's destination on a line that trains it).
  last_run = yaml.safe_load((REPO / f"configs/toyworld/{order[-1]}.yaml").read_text())["run_dir"]
  logical = script.replace("\\\n", " ").splitlines()  # backslash-continued lines joined
  soup = [ln for ln in logical if "soup.py" in ln and f'--out "$RUN/{shipped}/export"' in ln]
  if soup:
    parts = re.findall(r'--(a|b|mix) "\$RUN/(\w+)/export(?:=[\d.]+)?"', soup[0])
    assert len(parts) >= 2, f"train_all.sh's soup line names fewer than two exports: {soup[0]}"
    trains = [i for i, ln in enumerate(logical) if f"configs/toyworld/{order[-1]}.yaml" in ln]
    for _, run in parts:
      makers = [i for i in trains if f'"$RUN/{run}"' in logical[i] or f"runs/toyworld/{run}" == last_run]
      assert makers, f"train_all.sh averages {run}, which no line training {order[-1]}.yaml makes"
      assert max(makers) < logical.index(soup[0]), f"train_all.sh averages {run} before it is trained"
  else:
    assert f"runs/toyworld/{shipped}" == last_run, (
      f"train_all.sh ships {shipped}, not the last stage it trains ({order[-1]})"
    )
  # the shipped model decodes with the fine-tuned decoder, whose encoder (and so every latent) is the vae step's
  vae, decoder = (yaml.safe_load((REPO / f"configs/toyworld/{n}.yaml").read_text()) for n in order[:2])
  shipped_vae = re.search(r"assemble [^\n]*--vae \"\$RUN/(\w+)/export\"", script).group(1)
  assert f"runs/toyworld/{shipped_vae}" == decoder["run_dir"], f"train_all.sh ships the VAE of {shipped_vae}"
  assert decoder["options"]["init"] == vae["run_dir"] + "/export" and decoder["options"]["freeze_encoder"] is True
  for name in order:
    cfg = yaml.safe_load((REPO / f"configs/toyworld/{name}.yaml").read_text())
    wanted = [cfg.get("model", {}).get("checkpoint")]
    wanted += [(cfg.get("options") or {}).get(k, {}).get("checkpoint") for k in ("teacher", "critic")]
    wanted += [(cfg.get("options") or {}).get("init")]
    for path in filter(None, wanted):
      assert (
        path in made or path.replace("runs/toyworld", "$RUN") in script.split(f"configs/toyworld/{name}.yaml")[0]
      ), f"{name}.yaml starts from {path}, which no earlier step of train_all.sh makes"
    if cfg["stage"] == "teacher":
      last_teacher = cfg["run_dir"] + "/export"
    if cfg["stage"] == "ode-init":  # it regresses the newest teacher's trajectories, starting from its weights
      assert wanted[0] == last_teacher, f"{name}.yaml starts from {wanted[0]}, the teacher is {last_teacher}"
    for key in ("teacher", "critic"):  # DMD scores with the teacher's final phase, not an earlier one
      path = (cfg.get("options") or {}).get(key, {}).get("checkpoint")
      assert path in (None, last_teacher), f"{name}.yaml: options.{key} is {path}, the teacher is {last_teacher}"
    made.append(cfg["run_dir"] + "/export")
  ode = re.search(r"ode-pairs --teacher \"([^\"]+)\"", script)
  before = [m.group(1) for m in re.finditer(r"configs/toyworld/(\w+)\.yaml", script[: ode.start()])]
  teachers = [yaml.safe_load((REPO / f"configs/toyworld/{n}.yaml").read_text()) for n in before]
  teacher = [c["run_dir"] for c in teachers if c["stage"] == "teacher"][-1] + "/export"
  assert ode.group(1) == teacher.replace("runs/toyworld", "$RUN"), (ode.group(1), teacher)  # the newest teacher
  # Every teacher call scores windows as long as the clips it was trained on (a bidirectional teacher trained on
  # 9 latents and asked about 21 draws worse motion and shape): the data, the ODE trajectories and the DMD windows.
  frames = {
    f"latents {i}": m
    for i, m in enumerate(re.finditer(r"toyworld latents [^\n]*\n?[^\n]*--latent-frames (\d+)", script))
  }
  frames["ode-pairs"] = re.search(r"ode-pairs [^\n]*\n?[^\n]*--latent-frames (\d+)", script)
  assert all(frames.values()), f"train_all.sh must pass --latent-frames to latents and ode-pairs: {frames}"
  n = {k: int(m.group(1)) for k, m in frames.items()}
  opts = {
    name: yaml.safe_load((REPO / f"configs/toyworld/{name}.yaml").read_text()).get("options") or {}
    for name in order[3:]
  }
  n["self_forcing"] = opts["self_forcing"]["num_training_frames"]
  n.update({k: o["streaming_chunk_size"] for k, o in opts.items() if "streaming_chunk_size" in o})
  assert len(set(n.values())) == 1, f"latent lengths differ: {n}"
