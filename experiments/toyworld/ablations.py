"""Ablations of LongLive's claims on the toy world, judged from pixels (issue 10).

  python experiments/toyworld/ablations.py [--run runs/toyworld] [--out experiments/results/toyworld_ablations.json]
      [--plots docs/ablations] [--rows long,switch,attention,steps] [--quick]
  python experiments/toyworld/ablations.py --table experiments/results/toyworld_ablations.json  # README tables

Prompts (:mod:`ablation_rows`): ``seen``, 100 training combinations with noise seeds never used in training, and
``held_out``, the 54 combinations of ``grammar.split_combinations("held_out")``, always reported separately. Rows:

1. ``long/*``: long videos (10x the 9-frame training length = 90 latent frames, ~22 s) from the ODE init (the
   cheap stand-in for a teacher-forcing baseline: block-causal regression on the teacher's trajectories, never
   conditioned on its own rollouts), Stage 1 (Self-Forcing DMD), Stage 2 (streaming long tuning) and the shipped
   model if present: accuracy per time bin (one training length each) and quality (1 - artefact fraction) of
   the first / last 10 s. TODO: a teacher-forcing baseline proper (the causal generator trained on CLEAN context
   frames, Self-Forcing's "TF" row) has no training stage here; the ODE init's context blocks are noised
   (diffusion-forcing style), so it is only the nearest existing one.
2. ``switch/*``: one prompt switch at latent frame 18 (videos of 30) with the shipped model: KV-recache with the
   global sink, recache without it (``global_sink`` only changes the recache, so keep and clear run once), keep
   cache, clear cache. The switch comes after the 9-frame window has rolled: up to the window the recache
   rewrites the sink whatever ``global_sink`` says (upstream's behaviour), so a switch at frame 9 measured the
   two modes identical. The training-time recache is a controlled pair: Stage 2 for 300 steps from the same Stage
   1 export, trained with it (``streaming_long.yaml steps=300``) and without it
   (``configs/toyworld/streaming_long_norecache.yaml``), both switching with recache at inference.
   Adherence: accuracy against the new prompt within 1, 2 and 4 blocks after the switch (one-block judge
   windows from the switch frame); smoothness: ``score()``'s switch entry (continuity, median jump px, median
   spike relative to the world's own change). ``switch/ground_truth`` is the world's render of the same
   scripts, judged the same way: the reference for all of them.
3. ``attention/*``: the shipped model with window 9 + sink 3 (the toy recipe's, trained with; LongLive: 12 + 3
   of its 21-frame windows; the videos of ``long/shipped``), window 9 without sink, window 18 + sink 3, and full
   causal attention (window = the video's 90 frames, 1440 keys: it fits). Consistency over the long video
   (accuracy per bin; background and shape first -> last bin) and cost per block: measured ms at batch 1
   (median of warm blocks) and analytic matmul FLOPs (``longlive_jax.stream.flops.block_flops``; unfilled slots
   are masked, not skipped, so counted).
4. ``steps/*``: the shipped 4-step student against the bidirectional teacher at 4, 8, 16 and 50 guided steps
   (CFG 3), 9 latent frames: accuracy and warm video frames/s at batch 1 (VAE decode included).

Exports under ``--run``: ``teacher_windows_2/`` (the students' teacher), ``ode_init/``, ``self_forcing/``, ``streaming_long/``,
and ``vae/export``; the shipped model is ``--model`` or ``longlive_jax.toyworld.model.default_checkpoint()``.
The two 300-step variants (:data:`TRAINED_HERE`) are trained by this script into ``--run`` when missing
(resumable; ``--no-train`` skips them). Each finished row is cached as JSON in
``--cache`` (a ``full`` / ``quick`` subfolder), so an interrupted run resumes; ``--rows`` takes row names or
their prefixes. ``--quick`` (2 + 1 prompts, 24-frame long videos, a switch at 12 of 24 frames, 4 timed blocks, teacher
at 4 and 8 steps)
checks the pipeline end to end in minutes on a CPU. Plots (matplotlib: ``pip install -e '.[experiments]'``;
imported only when plotting, so without it the plots are skipped with a note) go to ``--plots``: ``long_videos.png``,
``attention.png`` (accuracy against time per variant) and ``switch_strip.png`` (frames around the switch,
ground truth / recache / keep / clear).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablation_rows as ar  # noqa: E402

RUN = Path("runs/toyworld")
_TRAIN = "`longlive-jax train configs/toyworld/{}.yaml` (a step of experiments/toyworld/train_all.sh)"
MODELS = {  # name: (export under --run, producer)
  # the teacher every student stage learned from (step 2d: fine-tuned on windows of longer videos)
  "teacher": ("teacher_windows_2/export", _TRAIN.format("teacher_windows_2")),
  "ode_init": ("ode_init/export", _TRAIN.format("ode_init")),
  "self_forcing": ("self_forcing/export", _TRAIN.format("self_forcing")),
  "streaming_long": ("streaming_long/export", _TRAIN.format("streaming_long")),
  "vae": ("vae/export", _TRAIN.format("vae")),
}
# Variants only the ablation needs: trained here (``longlive-jax train``, resumable) when their export is
# missing. name: (config, overrides). Both are Stage 2 at 300 steps from the same Stage 1 export with the same
# teacher, data and seed; they differ only in options.recache_mode (the constant learning rate makes the
# 300-step run the first 300 steps of streaming_long.yaml's 3000).
TRAINED_HERE = {
  "streaming_long_300": ("configs/toyworld/streaming_long.yaml", {"steps": "300"}),
  "streaming_long_norecache": ("configs/toyworld/streaming_long_norecache.yaml", {"steps": "300"}),
}
QUICK_TRAIN_STEPS = 10  # --quick trains its own short copies of TRAINED_HERE (under the cache folder)
STAGE2 = "shipped"  # the model of the switch, attention and steps rows: the product (both Stage 2 phases)
OPTIONAL = ("shipped",)  # evaluated when present, else "not assembled"


def train_command(name: str, *, run: Path, out_dir: Path, quick: bool) -> list[str]:
  """``longlive-jax train`` argv of a :data:`TRAINED_HERE` variant into ``out_dir`` from the exports under
  ``run`` (Stage 1, teacher as DMD teacher and critic, the prompt pairs)."""
  config, over = TRAINED_HERE[name]
  over = {
    **over,
    "run_dir": str(out_dir),
    "model.checkpoint": str(run / MODELS["self_forcing"][0]),
    "options.teacher.checkpoint": str(run / MODELS["teacher"][0]),
    "options.critic.checkpoint": str(run / MODELS["teacher"][0]),
    "data.source": str(run / "data/prompt_pairs.npz"),
  }
  if quick:
    over |= {"steps": str(QUICK_TRAIN_STEPS), "checkpoint.interval": str(QUICK_TRAIN_STEPS)}
  return ["longlive-jax", "train", config, *(f"{k}={v}" for k, v in over.items())]


def row_specs(plan: ar.Plan) -> list[dict]:
  """Every row: ``key``, ``label``, ``kind``, ``model`` and the stream settings (``StreamSettings`` fields)."""
  rows = [
    dict(key="long/ode_init", label="ODE init (no self-rollout)", kind="long", model="ode_init"),
    dict(key="long/self_forcing", label="Stage 1: Self-Forcing DMD", kind="long", model="self_forcing"),
    dict(key="long/streaming_long", label="Stage 2: streaming long tuning", kind="long", model="streaming_long"),
    dict(key="long/shipped", label="shipped: Stage 2 + its second phase", kind="long", model="shipped"),
    dict(key="switch/ground_truth", label="the world (ground truth)", kind="switch_gt", model=None),
  ]
  for mode, gs, label in (
    ("recache", True, "KV-recache, global sink (LongLive)"),
    ("recache", False, "KV-recache, no global sink"),
    ("keep", True, "keep cache"),
    ("clear", True, "clear cache"),
  ):
    key = f"switch/{mode}" + ("" if gs else "_local_sink")
    rows.append(dict(key=key, label=label, kind="switch", model=STAGE2, switch_mode=mode, global_sink=gs))
  for key, label, model in (
    (
      "switch/recache_trained_300",
      "Stage 2, 300 steps trained WITH recache (inference: recache)",
      "streaming_long_300",
    ),
    (
      "switch/norecache_trained_300",
      "Stage 2, 300 steps trained WITHOUT recache (inference: recache)",
      "streaming_long_norecache",
    ),
  ):
    rows.append(dict(key=key, label=label, kind="switch", model=model))
  for key, label, window, sink in (
    ("w9_sink3", "window 9 + sink 3 (trained with)", 9, 3),
    ("w9_nosink", "window 9, no sink", 9, 0),
    ("w18_sink3", "window 18 + sink 3", 18, 3),
    ("full", f"full causal (window {plan.long_frames})", plan.long_frames, 3),
  ):
    rows.append(
      dict(key=f"attention/{key}", label=label, kind="attention", model=STAGE2, window_frames=window, sink_frames=sink)
    )
  rows.append(dict(key="steps/student", label="shipped student, 4 steps", kind="steps", model=STAGE2))
  for n in plan.teacher_steps:
    rows.append(dict(key=f"steps/teacher_{n}", label=f"teacher, {n} steps", kind="teacher", model="teacher", steps=n))
  return rows


class Context:
  """What every row needs: the plan, prompts, where the models are, and loaded models (once each)."""

  def __init__(self, *, plan: ar.Plan, run: Path, model: str | None, cache: Path):
    self.plan, self.run, self.cache = plan, run, cache
    self.prompts = ar.prompt_sets(plan)
    self.scripts = ar.switch_scripts(plan)
    self.shipped = model
    self._loaded = {}

  def paths(self, name: str) -> tuple[str, str] | None:
    """``(dit, vae)`` checkpoint paths of a model; None for a missing optional one, else :class:`ar.MissingExport`."""
    if name == "shipped":
      from longlive_jax.convert.errors import CheckpointError
      from longlive_jax.toyworld.model import default_checkpoint

      try:
        p = self.shipped or str(default_checkpoint())
        return ar.require(Path(p), "`longlive-jax toyworld assemble` (the last step of train_all.sh)"), p
      except (CheckpointError, ar.MissingExport):
        return None
    if name in TRAINED_HERE:
      producer = "this script (" + " ".join(self.train_argv(name)) + ")"
      dit = ar.require(self.train_dir(name) / "export", producer)
    else:
      sub, producer = MODELS[name]
      try:
        dit = ar.require(self.run / sub, producer)
      except ar.MissingExport:
        if name in OPTIONAL:
          return None
        raise
    return dit, ar.require(self.run / MODELS["vae"][0], MODELS["vae"][1])

  def train_dir(self, name: str) -> Path:
    """Run folder of a :data:`TRAINED_HERE` variant: ``--run/<name>``, or the cache's ``train/<name>`` with
    ``--quick`` (its 10-step copies never stand in for the real ones)."""
    return self.cache / "train" / name if self.plan is ar.QUICK else self.run / name

  def train_argv(self, name: str) -> list[str]:
    return train_command(name, run=self.run, out_dir=self.train_dir(name), quick=self.plan is ar.QUICK)

  def train_missing(self, names) -> None:
    """Trains each :data:`TRAINED_HERE` variant of ``names`` whose export is missing (``longlive-jax train``
    resumes from its newest checkpoint, so an interrupted training goes on where it stopped)."""
    for name in sorted(set(names) & set(TRAINED_HERE)):
      if (self.train_dir(name) / "export" / "longlive_jax.json").is_file():
        continue
      argv = self.train_argv(name)
      print(f"== training {name}: {' '.join(argv)}", flush=True)
      subprocess.run(argv, check=True)

  def models(self, name: str):
    if name not in self._loaded:
      from longlive_jax.toyworld import evaluate as ev

      self._loaded[name] = ev.load_models(*self.paths(name))
    return self._loaded[name]


# The plan fields each kind of row depends on (``batch``: each chunk of a batch draws its own noise seed).
PLAN_FIELDS = {
  "long": ("n_seen", "n_held_out", "long_frames", "bin_s", "batch"),
  "attention": ("n_seen", "n_held_out", "long_frames", "bin_s", "batch", "timing_blocks"),
  "switch": ("n_seen", "n_held_out", "switch_frame", "switch_len", "bin_s", "adherence_blocks", "batch"),
  "switch_gt": ("n_seen", "n_held_out", "switch_frame", "switch_len", "bin_s", "adherence_blocks"),
  "steps": ("n_seen", "n_held_out", "bin_s", "batch", "timing_blocks"),
  "teacher": ("n_seen", "n_held_out", "bin_s", "batch"),
}


# Version of what a kind of row measures: raised when its measurement changes, so cached rows of it go stale
# (switch rows 2: adherence on the changed / kept attributes).
MEASURES = {"switch": 2, "switch_gt": 2}


def fingerprint(path: str | Path) -> str:
  """sha256 (first 16 hex digits) of every file under a checkpoint folder, names included."""
  import hashlib

  h = hashlib.sha256()
  for f in sorted(q for q in Path(path).rglob("*") if q.is_file()):
    h.update(str(f.relative_to(path)).encode())
    h.update(f.read_bytes())
  return h.hexdigest()[:16]


def row_stamp(spec: dict, ctx: Context) -> dict:
  """What a cached row was computed from: the plan fields its kind depends on, its settings and its model's
  checkpoint files. A cached row whose stamp differs is computed again."""
  plan = dataclasses.asdict(ctx.plan)
  stamp = {"plan": {k: plan[k] for k in PLAN_FIELDS[spec["kind"]]}, "settings": dataclasses.asdict(settings_of(spec))}
  if spec["kind"] in MEASURES:
    stamp["measures"] = MEASURES[spec["kind"]]
  if spec.get("steps"):
    stamp["steps"] = spec["steps"]
  if spec["model"]:
    stamp["model"] = sorted({fingerprint(p) for p in ctx.paths(spec["model"])})
  return json.loads(json.dumps(stamp))  # tuples -> lists, as read back from the cache


def settings_of(spec: dict):
  from longlive_jax.toyworld.evaluate import StreamSettings

  fields = {f.name for f in dataclasses.fields(StreamSettings)}
  return StreamSettings(**{k: v for k, v in spec.items() if k in fields})


def run_row(spec: dict, ctx: Context, done: dict) -> dict:
  """One row's result: ``label``, ``splits`` (per prompt split: ``score()`` output, + ``adherence`` for switches)
  and ``cost`` / ``speed`` where measured. ``done`` holds finished rows (row 3's default reuses row 1's videos)."""
  plan, kind, t0 = ctx.plan, spec["kind"], time.perf_counter()
  out = {"label": spec["label"]}
  if kind == "switch_gt":
    scripts, where = ar.flat(ctx.scripts)
    videos = ar.ground_truth(scripts, switch_frame=plan.switch_frame, latent_frames=plan.switch_len)
    sw = [plan.switch_frame]
    out["splits"] = ar.split_scores(videos, scripts, where, switch_frames=sw, bin_s=plan.bin_s, plan=plan)
    save_strip(ctx, spec["key"], videos[0])
    return out
  models = ctx.models(spec["model"])
  settings = settings_of(spec)
  out["settings"] = dataclasses.asdict(settings)
  if kind == "teacher":
    from longlive_jax.toyworld import evaluate as ev

    prompts, where = ar.flat(ctx.prompts)
    videos, _ = ev.teacher_videos(
      *models, prompts, latent_frames=ar.TRAIN_LEN, seed=ar.NOISE_SEED, num_steps=spec["steps"], batch=plan.batch
    )
    out["splits"] = ar.split_scores(videos, [[p] for p in prompts], where, bin_s=plan.bin_s)
    out["speed"] = ar.teacher_speed(models, num_steps=spec["steps"], prompt=prompts[0])
  elif kind == "switch":
    scripts, where = ar.flat(ctx.scripts)
    sw = [plan.switch_frame]
    videos, _ = ar.causal(
      models, scripts, latent_frames=plan.switch_len, switch_frames=sw, settings=settings, batch=plan.batch
    )
    out["splits"] = ar.split_scores(videos, scripts, where, switch_frames=sw, bin_s=plan.bin_s, plan=plan)
    save_strip(ctx, spec["key"], videos[0])
  else:  # long, attention, steps: one prompt per video, no switch
    prompts, where = ar.flat(ctx.prompts)
    reuse = done.get(f"long/{STAGE2}") if spec["key"] == "attention/w9_sink3" else None
    if reuse is not None and "splits" in reuse:
      out["splits"] = reuse["splits"]
    else:
      length = ar.TRAIN_LEN if kind == "steps" else plan.long_frames
      scripts = [[p] for p in prompts]
      videos, _ = ar.causal(models, scripts, latent_frames=length, settings=settings, batch=plan.batch)
      out["splits"] = ar.split_scores(videos, scripts, where, bin_s=plan.bin_s)
    if kind in ("attention", "steps"):
      cost = ar.block_cost(models, settings=settings, blocks=plan.timing_blocks, prompt=prompts[0])
      out["cost" if kind == "attention" else "speed"] = cost
  out["seconds"] = time.perf_counter() - t0
  return out


def save_strip(ctx: Context, key: str, video: np.ndarray) -> None:
  """Keeps video frames ``[switch - 24, switch + 48)`` of the first seen script for the strip plot."""
  from longlive_jax.toyworld.render import latent_to_video_frame

  vf = latent_to_video_frame(ctx.plan.switch_frame)
  lo = max(0, vf - 24)
  np.savez_compressed(ctx.cache / (key.replace("/", "__") + ".npz"), frames=video[lo : vf + 48], first=lo, switch=vf)


# ----------------------------------------------------------------------------------------------------------
# Plots


def _pyplot():
  try:
    import matplotlib
  except ImportError:
    return None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot_over_time(plt, rows: dict, prefix: str, path: Path, *, title: str) -> None:
  """Accuracy (all attributes) per time bin of every ``prefix`` row: seen solid, held-out dashed."""
  fig, ax = plt.subplots(figsize=(7, 4))
  for i, r in enumerate(r for k, r in rows.items() if k.startswith(prefix) and "splits" in r):
    for split, style in (("seen", "-"), ("held_out", "--")):
      s = r["splits"].get(split)
      if s is None:
        continue
      t = [0.5 * (b["start_s"] + b["end_s"]) for b in s["over_time"]]
      ax.plot(
        t, [b["all"] for b in s["over_time"]], style, color=f"C{i}", marker="o", ms=3, label=f"{r['label']} ({split})"
      )
  from longlive_jax.toyworld.render import FPS, num_video_frames

  train_s = num_video_frames(ar.TRAIN_LEN) / FPS
  ax.axvline(train_s, color="grey", lw=0.8, ls=":")
  ax.text(train_s, 1.02, " training length", color="grey", fontsize=7)
  ax.set(xlabel="time in the video (s)", ylabel="accuracy, all attributes", ylim=(-0.02, 1.08), title=title)
  ax.legend(fontsize=6, loc="lower left")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


STRIP_ROWS = ("switch/ground_truth", "switch/recache", "switch/keep", "switch/clear")


def plot_switch_strip(plt, cache: Path, labels: dict, path: Path, *, every: int = 4) -> None:
  """Frames around the switch (every ``every``-th video frame), one row per :data:`STRIP_ROWS` variant (the
  ``.npz`` of :func:`save_strip`, all present); x ticks are video frames relative to the switch."""
  strips = [(k, np.load(cache / (k.replace("/", "__") + ".npz"))) for k in STRIP_ROWS]
  z0 = strips[0][1]
  first, sw = int(z0["first"]), int(z0["switch"])
  idx = list(range(0, len(z0["frames"]), every))
  fig, axes = plt.subplots(len(strips), 1, figsize=(1.0 * len(idx), 1.25 * len(strips)), squeeze=False)
  for ax, (k, z) in zip(axes[:, 0], strips, strict=True):
    frames = z["frames"][idx]  # [n, H, W, 3]
    ax.imshow(np.concatenate(list(frames), axis=1))  # [H, n * W, 3]
    w = frames.shape[2]
    ax.set_xticks([(j + 0.5) * w for j in range(len(idx))], [str(first + i - sw) for i in idx], fontsize=6)
    ax.set_yticks([])
    ax.set_ylabel(labels.get(k, k).split(",")[0], fontsize=7, rotation=0, ha="right", va="center")
    ax.axvline((sw - first) / every * w, color="white", lw=1.5)
  axes[-1, 0].set_xlabel("video frames from the switch", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def make_plots(res: dict, *, cache: Path, out: Path) -> list[str]:
  plt = _pyplot()
  if plt is None:
    print("matplotlib is not installed: plots skipped; pip install -e '.[experiments]'")
    return []
  out.mkdir(parents=True, exist_ok=True)
  rows, made = res["rows"], []
  for prefix, name, title in (
    ("long/", "long_videos.png", "Long videos: accuracy against time"),
    ("attention/", "attention.png", "Attention window / sink: accuracy against time (shipped model)"),
  ):
    if any(k.startswith(prefix) and "splits" in r for k, r in rows.items()):
      plot_over_time(plt, rows, prefix, out / name, title=title)
      made.append(str(out / name))
  if all((cache / (k.replace("/", "__") + ".npz")).is_file() for k in STRIP_ROWS):
    plot_switch_strip(plt, cache, {k: r["label"] for k, r in rows.items()}, out / "switch_strip.png")
    made.append(str(out / "switch_strip.png"))
  return made


# ----------------------------------------------------------------------------------------------------------


def _missing(ctx: Context, name: str | None, *, model_arg: str | None) -> tuple[str, str] | None:
  """``(status, path)`` of a row's model that cannot be evaluated (``--no-train`` or not assembled), else None."""
  if not name:
    return None
  if name in TRAINED_HERE:
    try:
      ctx.paths(name)
    except ar.MissingExport:
      return "not trained (--no-train)", str(ctx.train_dir(name) / "export")
    return None
  if ctx.paths(name) is None:
    from longlive_jax.toyworld.model import DEFAULT_MODEL

    return "not assembled", model_arg or str(DEFAULT_MODEL)
  return None


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--run", default=str(RUN), help="train_all.sh's run folder (stage exports)")
  ap.add_argument("--model", help="the shipped whole-model checkpoint (default: the package's, if installed)")
  ap.add_argument("--cache", default=str(RUN / "ablations"), help="per-row results (full/ or quick/ inside)")
  ap.add_argument("--rows", help="comma-separated row names or prefixes (long, switch, attention, steps)")
  ap.add_argument("--out", default="experiments/results/toyworld_ablations.json")
  ap.add_argument("--plots", default="docs/ablations")
  ap.add_argument("--quick", action="store_true", help="few prompts, short videos: an end-to-end check")
  ap.add_argument("--no-train", action="store_true", help="do not train the ablation-only variants (rows: not trained)")
  ap.add_argument("--table", metavar="JSON", help="print the markdown tables of a result JSON and exit")
  a = ap.parse_args()
  if a.table:
    print(ar.markdown(json.loads(Path(a.table).read_text())))
    return 0
  plan = ar.QUICK if a.quick else ar.FULL
  cache = Path(a.cache) / ("quick" if a.quick else "full")
  cache.mkdir(parents=True, exist_ok=True)
  ctx = Context(plan=plan, run=Path(a.run), model=a.model, cache=cache)
  wanted = [w.strip().rstrip("/") for w in a.rows.split(",")] if a.rows else None
  specs = [
    s for s in row_specs(plan) if wanted is None or any(s["key"] == w or s["key"].startswith(w + "/") for w in wanted)
  ]
  needed = {s["model"] for s in specs if s["model"]}
  try:  # fail before any work if a required export is missing
    for name in needed - set(TRAINED_HERE):
      ctx.paths(name)
    if needed & set(TRAINED_HERE):  # what they are trained from
      for name in ("self_forcing", "teacher"):
        ctx.paths(name)
  except ar.MissingExport as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not a.no_train:
    try:
      ctx.train_missing(needed)
    except subprocess.CalledProcessError as e:
      print(f"error: training failed (exit {e.returncode}): {' '.join(e.cmd)}", file=sys.stderr)
      return 2
  results = {}
  for spec in specs:
    key = spec["key"]
    path = cache / (key.replace("/", "__") + ".json")
    missing = _missing(ctx, spec["model"], model_arg=a.model)
    stamp = None if missing else row_stamp(spec, ctx)
    if path.exists():
      cached = json.loads(path.read_text())
      if cached.get("stamp") == stamp:
        results[key] = {**cached, "label": spec["label"]}  # labels may be reworded
        continue
      print(f"== {key}: cached result is stale (another plan or model), run again", flush=True)
    if missing is not None:
      status, where = missing
      results[key] = {"label": spec["label"], "status": status, "path": where}
      print(f"== {key}: {status} ({where})", flush=True)
      continue
    print(f"== {key}: {spec['label']}", flush=True)
    res = {**run_row(spec, ctx, results), "stamp": stamp}
    path.write_text(json.dumps(res))
    results[key] = res
    acc = {s: round(v["accuracy"]["all"], 3) for s, v in res["splits"].items()}
    print(f"   accuracy (all) {acc} ({res.get('seconds', 0):.0f} s)", flush=True)
  res = {"plan": dataclasses.asdict(plan), "quick": a.quick, "run": a.run, "rows": results}
  res["claims"] = {split: ar.claims(res, split=split) for split in ("seen", "held_out")}
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(res, indent=2))
  for p in make_plots(res, cache=cache, out=Path(a.plots)):
    print(f"wrote {p}")
  print(ar.markdown(res))
  return 0


if __name__ == "__main__":
  sys.exit(main())
