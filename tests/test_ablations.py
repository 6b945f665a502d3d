"""experiments/toyworld/ablations.py: the variants it trains itself are a controlled pair, and its row plan."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "toyworld"))
import ablations  # noqa: E402

from longlive_jax.train.config import load_config  # noqa: E402


def _config(name: str, *, run: Path, quick: bool = False):
  argv = ablations.train_command(name, run=run, out_dir=run / "out" / name, quick=quick)
  assert argv[:2] == ["longlive-jax", "train"]
  return load_config(ROOT / argv[2], argv[3:])


def test_training_recache_pair_differs_only_in_recache_mode(tmp_path):
  """The trained-with / trained-without recache rows must compare like with like: same start, teacher, critic,
  data, seed, steps, optimiser and EMA; only options.recache_mode (and the run folder) differ."""
  with_rc = _config("streaming_long_300", run=tmp_path)
  without = _config("streaming_long_norecache", run=tmp_path)
  assert with_rc.stage == without.stage == "streaming-long"
  assert with_rc.options.recache_mode != "none" and without.options.recache_mode == "none"
  assert with_rc.steps == without.steps == 300
  assert with_rc.model.checkpoint == str(tmp_path / "self_forcing/export")
  recipe = load_config(ROOT / "configs/toyworld/streaming_long.yaml")  # train_all.sh's Stage 2: same teacher
  teacher = str(tmp_path / Path(recipe.options.teacher.checkpoint).relative_to("runs/toyworld"))
  assert with_rc.options.teacher.checkpoint == with_rc.options.critic.checkpoint == teacher
  assert with_rc.data.source == str(tmp_path / "data/prompt_pairs.npz")
  assert not with_rc.optim.scheduled  # constant lr: 300 steps are the first 300 of the 3000-step Stage 2
  a = dataclasses.replace(with_rc, run_dir="", options=dataclasses.replace(with_rc.options, recache_mode="none"))
  b = dataclasses.replace(without, run_dir="")
  assert a == b


def test_quick_mode_trains_short_copies_outside_the_run_folder(tmp_path):
  cfg = _config("streaming_long_norecache", run=tmp_path, quick=True)
  assert cfg.steps == ablations.QUICK_TRAIN_STEPS < 300
  ctx = ablations.Context(plan=ablations.ar.QUICK, run=tmp_path / "run", model=None, cache=tmp_path / "cache")
  assert ctx.train_dir("streaming_long_norecache").is_relative_to(tmp_path / "cache")
  full = ablations.Context(plan=ablations.ar.FULL, run=tmp_path / "run", model=None, cache=tmp_path / "cache")
  assert full.train_dir("streaming_long_norecache") == tmp_path / "run" / "streaming_long_norecache"


def test_every_row_names_a_known_model_and_the_issue_rows_are_there():
  specs = ablations.row_specs(ablations.ar.FULL)
  known = set(ablations.MODELS) | set(ablations.TRAINED_HERE) | {"shipped", None}
  assert {s["model"] for s in specs} <= known
  keys = {s["key"] for s in specs}
  for k in (
    "long/ode_init",
    "long/self_forcing",
    "long/streaming_long",
    "switch/recache",
    "switch/recache_local_sink",
    "switch/keep",
    "switch/clear",
    "switch/recache_trained_300",
    "switch/norecache_trained_300",
    "attention/w9_nosink",
    "attention/full",
    "steps/student",
  ):
    assert k in keys
  assert {f"steps/teacher_{n}" for n in (4, 8, 16, 50)} <= keys
  assert len(keys) == len(specs)


def _split(*, first=0.8, last=0.8, adh2=0.8, cont=0.9, jump=1.0, acc=0.8, background=1.0):
  bins = [dict(start_s=0.0, end_s=2.0, all=first, background=1.0, shape=1.0)]
  bins.append(dict(start_s=2.0, end_s=4.0, all=last, background=background, shape=1.0))
  return {
    "over_time": bins,
    "accuracy": {"all": acc},
    "adherence": {"2": {"all": adh2, "changed": adh2}},
    "switches": [{"continuous": cont, "jump_px": jump}],
  }


def _res(**over):
  """Rows on which every claim holds; ``over`` replaces a row's split (both splits alike)."""
  splits = {
    "long/self_forcing": _split(first=0.8, last=0.4),
    "long/streaming_long": _split(first=0.8, last=0.7),
    "switch/recache": _split(adh2=0.8, cont=0.9, jump=1.0),
    "switch/keep": _split(adh2=0.5),
    "switch/clear": _split(cont=0.5, jump=8.0),
    "switch/recache_trained_300": _split(adh2=0.7, jump=1.0),
    "switch/norecache_trained_300": _split(adh2=0.6, jump=1.5),
    "attention/w9_sink3": _split(last=0.7),
    "attention/w9_nosink": _split(last=0.5),
    "attention/full": _split(last=0.72),
    "steps/student": _split(acc=0.7),
    "steps/teacher_50": _split(acc=0.75),
  } | over
  rows = {k: {"splits": {"seen": v, "held_out": v}} for k, v in splits.items()}
  rows["attention/w9_sink3"]["cost"] = {"gflop_per_block": 1.9}
  rows["attention/full"]["cost"] = {"gflop_per_block": 3.2}
  rows["steps/student"]["speed"] = {"video_fps": 100.0}
  rows["steps/teacher_50"]["speed"] = {"video_fps": 5.0}
  return {"rows": rows, "plan": {}}


def test_claim_verdicts_follow_the_figures():
  """Each claim is reproduced on rows built to satisfy its criterion, and not reproduced when one figure breaks
  it; a missing row is "not measured", never a verdict."""
  verdicts = [c["verdict"] for c in ablations.ar.claims(_res())]
  assert verdicts == ["reproduced"] * len(ablations.ar.CLAIMS)
  breaks = [
    {"long/streaming_long": _split(first=0.8, last=0.35)},  # Stage 2 decays more than Stage 1
    {"switch/keep": _split(adh2=0.78)},  # keeping the cache obeys as well as recache
    {"switch/norecache_trained_300": _split(adh2=0.7, jump=1.5)},  # training recache brings nothing
    {"attention/w9_nosink": _split(last=0.7)},  # the sink brings nothing
    {"steps/teacher_50": _split(acc=0.95)},  # the student is far below the teacher
  ]
  for i, over in enumerate(breaks):
    verdicts = [c["verdict"] for c in ablations.ar.claims(_res(**over))]
    assert verdicts[i] == "not reproduced", (i, verdicts)
    assert verdicts[:i] + verdicts[i + 1 :] == ["reproduced"] * (len(verdicts) - 1)
  res = _res()
  del res["rows"]["switch/clear"]
  assert ablations.ar.claims(res)[1]["verdict"] == "not measured"
  assert "not measured" in ablations.ar.claims_markdown(res)


def test_cached_rows_are_stale_when_their_plan_fields_or_model_files_change(tmp_path):
  """A cached row is reused only when the plan fields its kind depends on, its settings and its model's files
  are the same (a changed switch frame must not reuse the switch rows, and may reuse the long-video rows)."""
  model = tmp_path / "m"
  (model / "params").mkdir(parents=True)
  (model / "params" / "w").write_bytes(b"1")

  class Ctx:
    def __init__(self, plan):
      self.plan = plan

    def paths(self, name):
      return str(model), str(model)

  full = ablations.ar.FULL
  moved = dataclasses.replace(full, switch_frame=full.switch_frame - 3)
  specs = {s["key"]: s for s in ablations.row_specs(full)}
  sw, long = specs["switch/recache"], specs["long/self_forcing"]
  stamp = ablations.row_stamp
  assert stamp(sw, Ctx(full)) != stamp(sw, Ctx(moved))
  assert stamp(specs["switch/ground_truth"], Ctx(full)) != stamp(specs["switch/ground_truth"], Ctx(moved))
  assert stamp(long, Ctx(full)) == stamp(long, Ctx(moved))
  assert stamp(sw, Ctx(full)) != stamp(specs["switch/keep"], Ctx(full))  # settings are part of it
  before = stamp(long, Ctx(full))
  (model / "params" / "w").write_bytes(b"2")
  assert stamp(long, Ctx(full)) != before


def test_adherence_to_the_changed_attributes_sees_an_ignored_switch():
  """The world's own switch is obeyed on the changed and the kept attributes; a video that ignores the switch
  (the old prompt rendered throughout) gets the changed attributes wrong and the kept ones right."""
  from longlive_jax.toyworld.render import Scene, latent_to_video_frame, num_video_frames, render

  ar = ablations.ar
  scripts = [
    ["a red circle moves right on a blue background", "a green circle moves right on a blue background"],
    ["a white square moves up on a green background", "a white square moves down on a purple background"],
  ]
  sf, n = 6, 18
  t, vf = num_video_frames(n), latent_to_video_frame(sf)
  truth = np.stack([render(Scene.from_prompts(s, seed=i, switch_frames=[vf]), t) for i, s in enumerate(scripts)])
  ignored = np.stack([render(Scene.from_prompts(s[:1], seed=i), t) for i, s in enumerate(scripts)])
  good = ar.adherence(truth, scripts, switch_frame=sf, blocks=(2,))["2"]
  bad = ar.adherence(ignored, scripts, switch_frame=sf, blocks=(2,))["2"]
  assert good["changed"] == 1.0 and good["kept"] == 1.0
  assert bad["changed"] == 0.0 and bad["kept"] == 1.0
