"""Markdown tables for the README from the toy world's result JSONs (nothing typed in by hand).

python experiments/toyworld/report.py [--eval experiments/results/toyworld_eval.json]
    [--realtime experiments/results/toyworld_realtime.json] [--record experiments/results/toyworld_training_record.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ATTRS = ("background", "colour", "shape", "motion", "all")
STAGE_NAMES = {
  "teacher": "teacher, centred clips (bidirectional, 48 steps, CFG 3)",
  "teacher_uniform": "teacher fine-tuned on clips that start anywhere",
  "teacher_windows": "teacher fine-tuned on windows of longer videos (the students' teacher)",
  "ode_init": "ODE init (4 steps, causal)",
  "self_forcing": "Stage 1: Self-Forcing DMD",
  "streaming_long": "Stage 2: streaming long tuning",
  "streaming_long_2": "Stage 2, second phase",
  "forced_switch": "forced stage: teacher-forced blocks, clips with and without switches",
  "streaming_long_3": "Stage 2, third phase",
  "forced_bounce_heavy": "forced stage on bounce-heavy clips (about 80% bounce)",
  "forced_bounce_mix": "forced stage on the mix: bounces 4x, half the clips switching",
  "streaming_long_4": "Stage 2 once more, 1000 steps",
  "streaming_long_4_soup": "Stage 2 once more: 1500 steps and 1000 with bounces 3x, averaged (the shipped DiT)",
}


def pct(x: float) -> str:
  return "n/a" if x != x else f"{100 * x:.1f}"


def eval_tables(res: dict) -> str:
  out = ["| model | prompts | length | " + " | ".join(ATTRS) + " | quality first / last |", "|" + " --- |" * 9]
  lengths = sorted({int(k.split("/")[2]) for k in res if k.split("/")[0] in STAGE_NAMES})  # training length, 10x
  for stage, label in STAGE_NAMES.items():
    for length in lengths:
      for split in ("seen", "held_out"):
        r = res.get(f"{stage}/{split}/{length}")
        if r is None:
          continue
        n = r["videos"]
        secs = f"{r['seconds']:.0f} s"
        acc = " | ".join(pct(r["accuracy"][a]) for a in ATTRS)
        out.append(
          f"| {label} | {split} ({n}) | {length} latent frames ({secs}) | {acc} | "
          f"{r['quality_first']:.3f} / {r['quality_last']:.3f} |"
        )
  for key, what in (("shipped/seen/10s", "10 s"), ("shipped/held_out/10s", "10 s")):
    r = res.get(key)
    if r is not None:
      acc = " | ".join(pct(r["accuracy"][a]) for a in ATTRS)
      horizon = (r.get("settings") or {}).get("rope_horizon")
      how = f", RoPE horizon {horizon}" if horizon else ""
      out.append(
        f"| shipped model (that DiT, the decoder fine-tuned on noisy latents{how}) | {key.split('/')[1]} ({r['videos']}) | {what} | {acc} | "
        f"{r['quality_first']:.3f} / {r['quality_last']:.3f} |"
      )
  text = "\n".join(out)
  r = res.get("shipped/seen/2min")
  if r is not None:
    first, last = r["over_time"][0], r["over_time"][-1]
    rows = ["| attribute | first 10 s | last 10 s | change (points) |", "| --- | --- | --- | --- |"]
    for a in ATTRS:
      rows.append(f"| {a} | {pct(first[a])} | {pct(last[a])} | {100 * (last[a] - first[a]):+.1f} |")
    text += f"\n\n2-minute videos ({r['videos']} prompts, {r['seconds']:.0f} s each), shipped model:\n\n" + "\n".join(
      rows
    )
  return text


CONFUSION_ROWS = ("shipped/seen/10s", "teacher_windows/seen/9")  # the product and the ceiling it learns from


def confusion_table(row: dict, attr: str) -> str:
  """Expected (rows) against judged (columns) for one attribute of a row's judged windows, in % of each row."""
  conf = row["confusion"][attr]
  seen = sorted({o for r in conf.values() for o in r})
  cols = [*sorted(conf), *(o for o in seen if o not in conf)]  # expected values first, then e.g. "no object"
  out = [f"| {attr} (prompt ↓, judged →) | " + " | ".join(cols) + " | windows |", "|" + " --- |" * (len(cols) + 2)]
  for exp in sorted(conf):
    n = sum(conf[exp].values())
    cells = [(f"**{pct(conf[exp].get(c, 0) / n)}**" if c == exp else pct(conf[exp].get(c, 0) / n)) for c in cols]
    out.append(f"| {exp} | " + " | ".join(cells) + f" | {n} |")
  return "\n".join(out)


def per_label(row: dict, labels: dict[str, tuple[str, ...]] | None = None) -> dict[str, float]:
  """Fraction of a row's judged windows right for each expected value (the diagonal of ``confusion_table``), by
  default the cells issue 9 misses: the three shapes and ``bounces``."""
  labels = labels or {"shape": ("circle", "square", "triangle"), "motion": ("bounces",)}
  out = {}
  for attr, names in labels.items():
    for name in names:
      judged = row["confusion"][attr].get(name, {})
      out[name] = judged.get(name, 0) / max(1, sum(judged.values()))
  return out


def confusion_tables(res: dict) -> str:
  parts = []
  for key in CONFUSION_ROWS:
    r = res.get(key)
    if r is None or "confusion" not in r:
      continue
    parts.append(f"Where the mistakes are: {key} ({r['videos']} videos, judged windows of 1 s):")
    parts += [confusion_table(r, a) for a in ("shape", "motion")]
  return "\n\n".join(parts)


def realtime_table(res: dict) -> str:
  s, t = res["steady"], res["time_to_first_frame"]
  h, w = s["resolution"]
  return "\n".join(
    [
      "| resolution | steady video frames/s (VAE decode included) | median block (12 frames) | first frame, cold | "
      "first frame, second run |",
      "| --- | --- | --- | --- | --- |",
      f"| {h}x{w} | {s['video_fps_median']:.1f} | {s['median_block_ms']:.0f} ms | {t['first_run_s']:.1f} s | "
      f"{t['second_run_s']:.1f} s |",
    ]
  )


def record_table(rec: dict) -> str:
  t = rec["training"]
  rows = ["| step | wall time | note |", "| --- | --- | --- |"]
  for x in t["timing"]:
    rows.append(f"| {x['step']} | {x['seconds'] / 60:.1f} min | {x.get('note', '')} |")
  rows.append(f"| total | {t['total_seconds'] / 60:.1f} min | |")
  return "\n".join(rows)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--eval", default="experiments/results/toyworld_eval.json")
  ap.add_argument("--realtime", default="experiments/results/toyworld_realtime.json")
  ap.add_argument("--record", default="experiments/results/toyworld_training_record.json")
  a = ap.parse_args()
  for path, fn in (
    (a.record, record_table),
    (a.realtime, realtime_table),
    (a.eval, eval_tables),
    (a.eval, confusion_tables),
  ):
    if Path(path).is_file():
      print(f"<!-- from {path} -->")
      print(fn(json.loads(Path(path).read_text())))
      print()
  return 0


if __name__ == "__main__":
  sys.exit(main())
