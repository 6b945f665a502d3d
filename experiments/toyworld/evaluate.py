"""The evidence table of the toy world: per-attribute accuracy of every stage of the recipe, judged from pixels.

  python experiments/toyworld/evaluate.py --out experiments/results/toyworld_eval.json

Rows: the bidirectional teachers (48 guided steps: the ceiling; ``teacher`` trained on centred clips,
``teacher_uniform`` fine-tuned from it on clips that start anywhere, ``teacher_windows`` fine-tuned from that on
clips that are windows of longer videos, the one every student stage learns from), ODE init, Stage 1 (Self-Forcing
DMD), Stage 2 (streaming long tuning), Stage 2's second phase, the forced stage on clips with switches, Stage 2's
third phase, the forced stage again on bounce-heavy clips and then on the usual mix with bounces drawn 4x, and
1000 more steps of Stage 2 (``streaming_long_4``), and the shipped DiT (``streaming_long_4_soup``: the weight
average of that phase run on to 1500 steps and of 1000 steps of it with bouncing prompts drawn 3x), each on

  * ``seen``: 100 prompts of the training combinations, noise seeds never used in training;
  * ``held_out``: the 54 combinations that never appear in training (``grammar.HELD_OUT``);

at the training length (9 latent frames = 33 video frames, 2 s) and at 10x it (90 latent frames, 22 s;
causal models only: the bidirectional teacher attends over its whole clip). Then the shipped model's targets:
10-second videos (>= 90% on every attribute) and 2-minute videos (the last 10 s within 5 points of the
first 10 s). Results are cached per row in ``--cache`` (default ``runs/toyworld/eval``), so an interrupted run
resumes; ``--rows`` limits what runs. The judge: :mod:`longlive_jax.toyworld.judge` (windows of 16 frames).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

RUN = Path("runs/toyworld")
STAGES = {
  "teacher": "teacher/export",
  "teacher_uniform": "teacher_uniform/export",
  "teacher_windows": "teacher_windows_2/export",  # after both runs on window clips (600 + 3400 steps)
  "ode_init": "ode_init/export",
  "self_forcing": "self_forcing/export",
  "streaming_long": "streaming_long/export",
  "streaming_long_2": "streaming_long_2/export",
  "forced_switch": "forced_switch/export",
  "streaming_long_3": "streaming_long_3/export",
  "forced_bounce_heavy": "forced_bounce_heavy/export",  # the forced stage again, ~80% bouncing clips
  "forced_bounce_mix": "forced_bounce_mix/export",  # then on the mix with bounces 4x and switches
  "streaming_long_4": "streaming_long_4/export",  # then 1000 steps of Stage 2 (streaming_long_4.yaml)
  # the average of that phase run on to 1500 steps and of 1000 steps with bouncing prompts 3x: the shipped DiT
  "streaming_long_4_soup": "streaming_long_4_soup/export",
}
TEACHERS = ("teacher", "teacher_uniform", "teacher_windows")  # bidirectional: judged at their clip length only
TRAIN_LEN = 9  # latent frames of the teacher's clips and the DMD windows (configs/toyworld)
NOISE_SEED = 10_000  # training draws come from the train states' keys (seed 0): disjoint


PROMPT_SEED = 4242  # the README's seen prompts; choose models on another (--prompt-seed, --noise-seed)


def prompt_sets(n_seen: int, *, seed: int = PROMPT_SEED) -> dict[str, list[str]]:
  from longlive_jax.toyworld import grammar

  rng = np.random.default_rng(seed)
  seen = [grammar.sample_attributes(rng, split="train").caption for _ in range(n_seen)]
  return {"seen": seen, "held_out": [a.caption for a in grammar.split_combinations("held_out")]}


def run_row(
  name: str,
  dit: str,
  vae: str,
  prompts: list[str],
  *,
  latent_frames: int,
  teacher: bool,
  seed: int = NOISE_SEED,
  whole_model: bool = False,
) -> dict:
  """One row. A stage's export streams as it was trained (sink 3, window 9, absolute positions); a whole-model
  checkpoint (``whole_model``) as ``generate`` streams it (its metadata's settings, e.g. its RoPE horizon)."""
  from longlive_jax.toyworld import evaluate as ev

  settings = ev.checkpoint_settings(dit) if whole_model else ev.StreamSettings()
  model, vae_m, enc = ev.load_models(dit, vae)
  t0 = time.perf_counter()
  if teacher:
    videos, timing = ev.teacher_videos(model, vae_m, enc, prompts, latent_frames=latent_frames, seed=seed)
  else:
    videos, timing = ev.causal_videos(
      model, vae_m, enc, [[p] for p in prompts], latent_frames=latent_frames, seed=seed, settings=settings
    )
  res = ev.score(videos, [[p] for p in prompts])
  res.update(
    name=name,
    settings=dataclasses.asdict(settings) if not teacher else None,
    latent_frames=latent_frames,
    generate_seconds=timing["seconds"],
    total_seconds=time.perf_counter() - t0,
  )
  return res


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--run", default=str(RUN), help="train_all.sh's run folder (stage exports)")
  ap.add_argument("--model", help="the shipped whole-model checkpoint (default: the package's)")
  ap.add_argument("--seen", type=int, default=100)
  ap.add_argument("--long-videos", type=int, default=20, help="2-minute videos of the shipped model")
  ap.add_argument("--cache", default=str(RUN / "eval"))
  ap.add_argument("--rows", help="comma-separated row names to run (default: all)")
  ap.add_argument("--out", required=True)
  ap.add_argument(
    "--prompt-seed", type=int, default=PROMPT_SEED, help="seed of the seen prompts (another one: a validation set)"
  )
  ap.add_argument("--noise-seed", type=int, default=NOISE_SEED, help="seed of the generators' noise")
  a = ap.parse_args()
  from longlive_jax.toyworld.model import default_checkpoint

  run, cache = Path(a.run), Path(a.cache)
  cache.mkdir(parents=True, exist_ok=True)
  model = a.model or str(default_checkpoint())
  sets = prompt_sets(a.seen, seed=a.prompt_seed)
  vae = str(run / "vae" / "export")
  rows = []
  for stage, sub in STAGES.items():
    for length in (TRAIN_LEN, 10 * TRAIN_LEN):
      if stage in TEACHERS and length != TRAIN_LEN:
        continue
      for split, prompts in sets.items():
        rows.append((f"{stage}/{split}/{length}", str(run / sub), vae, prompts, length, stage in TEACHERS))
  for split, prompts in sets.items():
    rows.append((f"shipped/{split}/10s", model, model, prompts, 42, False))
  rng = np.random.default_rng(7)
  long_prompts = [sets["seen"][i] for i in rng.choice(len(sets["seen"]), a.long_videos, replace=False)]
  rows.append(("shipped/seen/2min", model, model, long_prompts, 480, False))
  wanted = set(a.rows.split(",")) if a.rows else None
  results = {}
  for name, dit, vae_ck, prompts, length, teacher in rows:
    path = cache / (name.replace("/", "__") + ".json")
    if path.exists():
      results[name] = json.loads(path.read_text())
      continue
    if wanted is not None and name not in wanted:
      continue
    print(f"== {name}: {len(prompts)} videos of {length} latent frames", flush=True)
    res = run_row(
      name, dit, vae_ck, prompts, latent_frames=length, teacher=teacher, seed=a.noise_seed,
      whole_model=name.startswith("shipped/"),
    )  # fmt: skip
    path.write_text(json.dumps(res))
    results[name] = res
    acc = res["accuracy"]
    print("   " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()) + f" ({res['total_seconds']:.0f} s)", flush=True)
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(results, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
