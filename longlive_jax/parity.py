"""``longlive-jax parity``: every golden case, each in isolation, with a report and an exit status.

One line per case (``[ok]``, ``[FAIL]`` with the first failing comparison or the reason the case could
not run, ``[unsupported]``), one line per comparison, then the summary ``N ok, M failed, K unsupported``.
``--json`` is written whatever happens (a list with one entry per case run). Exit status: 0 when every
case is ok, 1 when any failed or is unsupported, 2 when there is nothing to run.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TextIO

from longlive_jax import golden


def add_parser(sub) -> None:
  p = sub.add_parser(
    "parity",
    help="check this installation against the golden PyTorch reference cases",
    description=(
      "Run every golden case (folders with case.json) and report the max abs error of each output against its "
      "tolerance. Each case runs in isolation: one that cannot run (bad case.json, missing files) is reported as "
      "failed with its reason and the others still run. Ends with 'N ok, M failed, K unsupported'; exits 1 when "
      "any case failed or has a kind that is not implemented, 2 when no case was found."
    ),
  )
  p.add_argument("--golden", help="folder of cases (default: $LONGLIVE_GOLDEN_DIR or ../shared/golden)")
  p.add_argument("--case", action="append", help="only this case folder name (repeatable)")
  p.add_argument("--json", dest="json_out", help="also write the results to this JSON file (always written)")


def _tol(c: golden.Comparison) -> str:
  return f"atol {c.atol:.0e}, rtol {c.rtol:.0e}"


def _err(c: golden.Comparison) -> str:
  return f"{c.max_abs_err:.3e}" if math.isfinite(c.max_abs_err) else "inf"


def summary(results: list[golden.CaseResult]) -> str:
  """``N ok, M failed, K unsupported``."""
  count = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "unsupported")}
  return f"{count['ok']} ok, {count['failed']} failed, {count['unsupported']} unsupported"


def report(r: golden.CaseResult, out: TextIO) -> None:
  """Prints one case: a header line, then one line per comparison."""
  kind = f"{r.kind}, " if r.kind else ""
  head = f"{r.case} ({kind}{r.seconds:.1f} s)"
  if r.status == "unsupported":
    print(f"[unsupported] {r.case}: {r.reason}", file=out)
    return
  if r.status == "failed" and not r.comparisons:
    print(f"[FAIL] {head}: {r.reason}", file=out)
    return
  if r.passed:
    print(f"[ok] {head}", file=out)
  else:
    bad = r.failing
    first = f"{bad[0].name}: max|err| {_err(bad[0])} exceeds the tolerance ({_tol(bad[0])})"
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    print(f"[FAIL] {head}: {first}{more}", file=out)
  for c in r.comparisons:
    flag = "" if c.passed else "  FAIL"
    note = f"  [{c.note}]" if c.note else ""
    print(f"      {c.name:32s} max|err| {_err(c)}  ({_tol(c)}){flag}{note}", file=out)
  if r.not_compared:
    print(f"      not compared: {', '.join(r.not_compared)}", file=out)


def to_json(r: golden.CaseResult) -> dict:
  def cmp(c: golden.Comparison) -> dict:
    d = {
      "name": c.name,
      "array": c.reference,
      "max_abs_err": c.max_abs_err if math.isfinite(c.max_abs_err) else None,
      "atol": c.atol,
      "rtol": c.rtol,
      "passed": c.passed,
    }
    if c.note:
      d["note"] = c.note
    return d

  return {
    "case": r.case,
    "kind": r.kind,
    "status": r.status,
    "reason": r.reason,
    "seconds": round(r.seconds, 3),
    "comparisons": [cmp(c) for c in r.comparisons],
    "not_compared": r.not_compared,
  }


def run(cases: list[Path], *, json_out: str | Path | None = None, out: TextIO | None = None) -> list[golden.CaseResult]:
  """Checks every case (in isolation), printing as it goes (to ``out``, default stdout); the JSON is written
  even when interrupted."""
  out = sys.stdout if out is None else out
  results: list[golden.CaseResult] = []
  try:
    for c in cases:
      r = golden.check_case(c)
      results.append(r)
      report(r, out)
      out.flush()
  finally:
    if json_out:
      Path(json_out).write_text(json.dumps([to_json(r) for r in results], indent=2) + "\n")
  print(summary(results), file=out)
  return results


def _write_empty(json_out) -> None:
  if json_out:
    Path(json_out).write_text("[]\n")


def cmd_parity(a) -> int:
  root = Path(a.golden) if a.golden else golden.golden_dir()
  cases = golden.discover(root)
  if a.case:
    names = {c.name for c in cases}
    unknown = [n for n in a.case if n not in names]
    if unknown:
      have = ", ".join(sorted(names)) or "none"
      print(f"longlive-jax parity: no case {', '.join(unknown)} under {root} (cases: {have})", file=sys.stderr)
      _write_empty(a.json_out)
      return 2
    cases = [c for c in cases if c.name in set(a.case)]
  if not cases:
    print(f"no golden cases found under {root}", file=sys.stderr)
    _write_empty(a.json_out)
    return 2
  results = run(cases, json_out=a.json_out)
  return 0 if all(r.passed for r in results) else 1
