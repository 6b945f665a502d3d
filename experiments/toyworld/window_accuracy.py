"""Where in a 10-s video does a causal model go wrong? The judge's accuracy per window index (16 video frames
each), per motion and per shape, for one model under several stream settings, on one prompt set; and the RoPE
frame frequencies of the model, whose periods say at which sink distances the sink's keys look like recent ones.

  python experiments/toyworld/window_accuracy.py [--model M] [--set val300] \\
      --variant base --variant relative_rope=1,rope_horizon=15 \\
      --out experiments/results/toyworld_window_accuracy.json

How the RoPE horizon was found (README, "the RoPE horizon"): with absolute positions the shipped DiT's objects
that move along an axis stall or turn back in windows 6-7 (video frames 96-127, latents 25-32) of every video;
its head size 32 gives the frame axis 6 RoPE frequencies, one with a period of 29 frames, so at a distance of
25-32 frames the sink (frames 0-2) rotates nearly as a frame of the current block does. Variants are
stream_settings.py's (``base`` or ``FIELD=VALUE,...`` of :class:`~longlive_jax.toyworld.evaluate.StreamSettings`);
rows are keyed by model, settings and set, written as they finish, and not run again.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from stream_settings import SETS, parse_variant, set_prompts  # noqa: E402


def rope_frame_periods(cfg) -> list[float]:
  """Periods in frames of the frame axis' RoPE frequencies (see :mod:`longlive_jax.model.rope`)."""
  from longlive_jax.model.rope import axis_frequencies, axis_pairs

  freqs = axis_frequencies(axis_pairs(cfg.dim // cfg.num_heads)[0], cfg.rope_theta)
  return [float(2 * np.pi / f) for f in freqs]


def per_window(videos, prompts) -> dict:
  """``{"motion": {label: [accuracy per window index]}, "shape": {...}, "all": {"every": [...]}}``; the label
  ``every`` pools all prompts."""
  from longlive_jax.toyworld import judge

  acc: dict = collections.defaultdict(lambda: collections.defaultdict(list))
  for v, p in zip(videos, prompts, strict=True):
    for i, w in enumerate(judge.judge_video(v, prompts=[p]).windows):
      for attr, label in (("motion", w.expected.motion), ("shape", w.expected.shape)):
        acc[attr][label].append((i, w.correct[attr]))
        acc[attr]["every"].append((i, w.correct[attr]))
      acc["all"]["every"].append((i, w.correct["all"]))
  out = {}
  for attr, labels in acc.items():
    out[attr] = {}
    for label, pairs in labels.items():
      n = max(i for i, _ in pairs) + 1
      out[attr][label] = [float(np.mean([c for i, c in pairs if i == k])) for k in range(n)]
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", help="a whole-model checkpoint (default: the shipped one)")
  ap.add_argument("--variant", type=parse_variant, action="append", required=True, help="base or FIELD=VALUE,...")
  ap.add_argument("--set", choices=sorted(SETS), default="val300")
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.toyworld.model import default_checkpoint

  model = a.model or str(default_checkpoint())
  prompts, noise_seed = set_prompts(a.set)
  dit, vae, enc = ev.load_models(model, model)
  out = Path(a.out)
  rows = json.loads(out.read_text()) if out.exists() else {}
  rows["rope_frame_periods"] = rope_frame_periods(dit.cfg)
  for settings in a.variant:
    name = json.dumps({"model": a.model or "default", **dataclasses.asdict(settings), "set": a.set})
    if name in rows:
      continue
    t0 = time.perf_counter()
    videos, _ = ev.causal_videos(
      dit, vae, enc, [[p] for p in prompts], latent_frames=42, seed=noise_seed, settings=settings
    )
    res = {"accuracy": ev.score(videos, [[p] for p in prompts])["accuracy"], "per_window": per_window(videos, prompts)}
    res["seconds"] = time.perf_counter() - t0
    rows[name] = res
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(name, flush=True)
    for attr in ("motion", "shape"):
      for label, accs in sorted(res["per_window"][attr].items()):
        print(f"  {attr:6s} {label:12s} " + " ".join(f"{100 * x:5.1f}" for x in accs), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
