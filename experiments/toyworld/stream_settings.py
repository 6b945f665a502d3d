"""Does a causal model do better with other inference settings than it was trained with? The judge's accuracy on
one prompt set, per setting.

  python experiments/toyworld/stream_settings.py --model runs/toyworld/bounce_heavy/model_soup3 \\
      --variant base --variant window_frames=12 --variant step_list=1000:875:750:625:500:375:250:125 \\
      [--renoise-scale 0.7] [--set val] --out runs/toyworld/stream_settings/soup3.json

A variant is ``base`` (evaluate.py's :class:`~longlive_jax.toyworld.evaluate.StreamSettings`: sink 3, window 9,
LongLive's four steps) or comma-separated ``FIELD=VALUE`` overrides of it (``step_list`` as ``T:T:...``,
``global_sink`` as 0 / 1). ``--renoise-scale`` multiplies the fresh noise drawn between the denoising steps (1: the
schedule's own; below 1 the model sees inputs cleaner than their timestep, fewer random changes per step). The sets
are evaluate.py's: ``val`` (100 prompts, prompt seed 777, noise seed 20000: the validation set of judge_dit.sh),
``val300`` (300 prompts, seeds 778 / 30000, about one in six per motion), ``seen`` and ``held_out`` (the evidence
table's, noise seed 10000). 10-s videos (42 latents). Each row is written as soon as it is judged; rows already in
``--out`` are kept and not run again (a row's key names the model, the settings and the set, so one file can hold
several models' rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import evaluate as xev  # noqa: E402  (experiments/toyworld/evaluate.py: the prompt sets and their seeds)

SETS = {  # name -> (number of prompts, prompt seed or None for the held-out combinations, noise seed)
  "val": (100, 777, 20_000),
  "val300": (300, 778, 30_000),
  "seen": (100, xev.PROMPT_SEED, xev.NOISE_SEED),  # the evidence table's
  "held_out": (None, None, xev.NOISE_SEED),
}


def set_prompts(name: str) -> tuple[list[str], int]:
  """``(prompts, noise seed)`` of the set ``name`` of :data:`SETS`."""
  n, prompt_seed, noise_seed = SETS[name]
  prompts = xev.prompt_sets(100)["held_out"] if n is None else xev.prompt_sets(n, seed=prompt_seed)["seen"]
  return prompts, noise_seed


def parse_variant(text: str):
  """``base`` or ``FIELD=VALUE,...`` -> StreamSettings (a clear error for an unknown field or a bad value)."""
  from longlive_jax.toyworld.evaluate import StreamSettings

  if text == "base":
    return StreamSettings()
  fields = {f.name: f for f in dataclasses.fields(StreamSettings)}
  kw = {}
  for item in text.split(","):
    name, sep, value = item.partition("=")
    if not sep or name not in fields:
      raise argparse.ArgumentTypeError(f"variant {text!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
    try:
      if name == "step_list":
        kw[name] = tuple(int(t) for t in value.split(":"))
      elif name == "switch_mode":
        kw[name] = value
      elif name in ("global_sink", "relative_rope"):
        kw[name] = {"0": False, "1": True}[value]
      else:
        kw[name] = int(value)
    except (KeyError, ValueError):
      raise argparse.ArgumentTypeError(f"variant {text!r}: bad value {value!r} for {name}") from None
  return StreamSettings(**kw)


class ScaledRenoise:
  """A :class:`~longlive_jax.stream.noise.KeyNoise` whose between-step draws are multiplied by ``scale``."""

  def __init__(self, draws, scale: float):
    self.draws, self.scale = draws, scale

  def __getattr__(self, name):  # shape, num_blocks, ...: the wrapped draws'
    return getattr(self.draws, name)

  def __call__(self, block: int):
    noise, renoise, ctx = self.draws(block)
    return noise, renoise * self.scale, ctx


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", required=True, help="a whole-model checkpoint (toyworld assemble)")
  ap.add_argument("--variant", type=parse_variant, action="append", required=True, help="base or FIELD=VALUE,...")
  ap.add_argument("--renoise-scale", type=float, default=1.0)
  ap.add_argument("--set", choices=sorted(SETS), default="val")
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  from longlive_jax.stream import noise as noise_mod
  from longlive_jax.toyworld import evaluate as ev

  prompts, noise_seed = set_prompts(a.set)
  if a.renoise_scale != 1.0:  # causal_videos draws with KeyNoise: wrap what it builds
    key_noise = noise_mod.KeyNoise
    noise_mod.KeyNoise = lambda *args, **kw: ScaledRenoise(key_noise(*args, **kw), a.renoise_scale)
  dit, vae, enc = ev.load_models(a.model, a.model)
  out = Path(a.out)
  rows = json.loads(out.read_text()) if out.exists() else {}
  for settings in a.variant:
    fields = dataclasses.asdict(settings)
    for added in ("relative_rope", "rope_horizon"):  # added later: older rows keep the keys they were written with
      if not fields[added]:
        del fields[added]
    name = json.dumps({"model": a.model, **fields, "renoise_scale": a.renoise_scale, "set": a.set})
    if name in rows:
      continue
    t0 = time.perf_counter()
    videos, _ = ev.causal_videos(
      dit, vae, enc, [[p] for p in prompts], latent_frames=42, seed=noise_seed, settings=settings
    )
    res = ev.score(videos, [[p] for p in prompts])
    motion = res["confusion"]["motion"]
    res["per_motion"] = {m: c.get(m, 0) / max(1, sum(c.values())) for m, c in motion.items()}
    res["seconds"] = time.perf_counter() - t0
    rows[name] = res
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    acc = " ".join(f"{k}={v:.3f}" for k, v in res["accuracy"].items())
    per = " ".join(f"{m}={v:.2f}" for m, v in sorted(res["per_motion"].items()))
    print(f"{name}\n  {acc}\n  {per} ({res['seconds']:.0f} s)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
