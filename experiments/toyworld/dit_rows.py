"""Collects judge_dit.sh's outputs of several DiTs into one results JSON and prints their rows.

  python experiments/toyworld/dit_rows.py OUT_DIR RESULT.json "WHAT" "COMMAND" NAME [NAME ...] [--stages S ...]

Each NAME's row: ``seen`` / ``heldout`` / ``val`` (accuracy, per-label accuracy, videos), ``probe`` and
``bounce_probe`` (forced_student.py) and, where it ran, ``switch`` (the ablations' switch/recache row).
``--stages`` adds the probe's dynamics of ``probe_stage_S.json`` (forced_tune.sh's jump along the chain).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from report import per_label  # noqa: E402


def _row(r: dict) -> dict:
  return {"accuracy": r["accuracy"], "per_label": per_label(r), "videos": r["videos"]}


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("dir")
  p.add_argument("out")
  p.add_argument("what")
  p.add_argument("command")
  p.add_argument("names", nargs="+")
  p.add_argument("--stages", nargs="*", default=[])
  a = p.parse_args(argv)
  e = Path(a.dir)
  load = lambda name: json.loads((e / name).read_text())  # noqa: E731
  out = {"what": a.what, "command": a.command, "rows": {}}
  for v in a.names:
    res = load(f"eval_{v}.json")
    d = {
      "seen": _row(res["shipped/seen/10s"]),
      "heldout": _row(res["shipped/held_out/10s"]),
      "val": _row(load(f"val_{v}.json")["shipped/seen/10s"]),
      "probe": load(f"probe_{v}.json"),
      "bounce_probe": load(f"bounce_{v}.json"),
    }
    if (e / f"switch_{v}.json").exists():
      sw = load(f"switch_{v}.json")["rows"]["switch/recache"]["splits"]["seen"]
      d["switch"] = {k: sw[k] for k in ("accuracy", "switches", "adherence")}
      print(
        f"{v:6s} switch",
        {k: round(100 * x, 1) for k, x in sw["accuracy"].items()},
        sw["switches"][0],
        {b: round(100 * x["changed"], 1) for b, x in sw["adherence"].items()},
      )
    out["rows"][v] = d
    for k in ("seen", "heldout", "val"):
      print(
        f"{v:6s} {k:7s}",
        {k2: round(100 * x, 1) for k2, x in d[k]["accuracy"].items()},
        {k2: round(100 * x) for k2, x in d[k]["per_label"].items()},
      )
    print(f"{v:6s} probe", d["probe"].get("dynamics"), d["probe"]["rows"]["forced"]["shape"])
    bp = d["bounce_probe"]["rows"]
    print(f"{v:6s} bounces: forced {bp['forced']['motion']}, free {bp['free']['motion']}")
  if a.stages:
    out["stages"] = {st: load(f"probe_stage_{st}.json")["dynamics"] for st in a.stages}
    print("jump along the chain", out["stages"])
  Path(a.out).write_text(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
