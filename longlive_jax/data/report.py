"""Bad-record bookkeeping shared by the dataset builders.

Every *source* of a dataset (a line of a prompt file, a video file, an orphan line of a caption
mapping) ends up either built into exactly one record or listed as skipped, with the file and
line it came from and why. ``num_built + num_skipped == num_sources`` always holds and is written
to ``build_report.json`` next to the ArrayRecord files, so nothing is dropped silently.

``on_error="fail"`` turns the first bad record into a :class:`DataError` naming its file and line;
``on_error="skip"`` lists it and warns once at the end of the build. Blank lines are the one kind
of skip that never fails a build (they carry no record), but they are still counted and listed.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

REPORT_FILE = "build_report.json"
ON_ERROR = ("skip", "fail")
BLANK_LINE = "blank_line"


class DataError(ValueError):
  """A dataset source is missing, malformed or inconsistent; the message names the file (and line)."""


@dataclasses.dataclass(frozen=True)
class BadRecord:
  """One skipped source: ``source`` is a file path, ``line`` its 1-based line (None for whole files)."""

  source: str
  line: int | None
  kind: str
  reason: str

  @property
  def where(self) -> str:
    return f"{self.source}:{self.line}" if self.line is not None else self.source

  def __str__(self) -> str:
    return f"{self.where}: {self.reason}"


def check_on_error(on_error: str) -> str:
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")
  return on_error


class Tally:
  """Counts built records and collects (or raises on) bad ones during one build."""

  def __init__(self, *, name: str, on_error: str):
    self.name = name
    self.on_error = check_on_error(on_error)
    self.num_built = 0
    self.skipped: list[BadRecord] = []
    self.notes: dict[str, Any] = {}

  @property
  def num_skipped(self) -> int:
    return len(self.skipped)

  @property
  def num_sources(self) -> int:
    return self.num_built + self.num_skipped

  def built(self) -> None:
    self.num_built += 1

  def bad(self, source: str | Path, line: int | None, kind: str, reason: str) -> None:
    """Records a bad source; raises :class:`DataError` instead in fail mode (blank lines excepted)."""
    rec = BadRecord(str(source), line, kind, reason)
    if self.on_error == "fail" and kind != BLANK_LINE:
      raise DataError(f"{self.name}: {rec} (pass on_error='skip' to skip and list bad records)")
    self.skipped.append(rec)

  def to_json(self, **extra: Any) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for rec in self.skipped:
      kinds[rec.kind] = kinds.get(rec.kind, 0) + 1
    return {
      "builder": self.name,
      **extra,
      "on_error": self.on_error,
      "num_sources": self.num_sources,
      "num_built": self.num_built,
      "num_skipped": self.num_skipped,
      "skipped_by_kind": kinds,
      "notes": self.notes,
      "skipped": [dataclasses.asdict(r) for r in self.skipped],
    }

  def warn(self, report_path: Path) -> None:
    """One warning per build listing the first few non-blank skips (all of them are in the report)."""
    real = [r for r in self.skipped if r.kind != BLANK_LINE]
    if not real:
      return
    head = "; ".join(str(r) for r in real[:5]) + ("; ..." if len(real) > 5 else "")
    warnings.warn(
      f"{self.name}: skipped {len(real)} bad source(s) of {self.num_sources} "
      f"(built {self.num_built}; list in {report_path}): {head}",
      stacklevel=3,
    )


def write_report(path: Path, report: dict[str, Any]) -> None:
  path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_report(dataset_dir: str | Path) -> dict[str, Any]:
  """Reads ``build_report.json`` of a built dataset folder (the ``<data_dir>/<name>/<version>`` folder)."""
  path = Path(dataset_dir) / REPORT_FILE
  if not path.is_file():
    raise DataError(
      f"{dataset_dir}: not a longlive-jax dataset ({REPORT_FILE} missing; built elsewhere or interrupted?)"
    )
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: unreadable build report: {e}") from e
