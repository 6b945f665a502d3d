"""Parsers of LongLive's text training sources: prompt lists and prompt pairs.

Stage 1 trains on a prompt list (``prompts/vidprom_filtered_extended.txt``: one prompt per line).
Stage 2 with prompt switching draws *pairs*: upstream pairs line i of ``data_path`` with line i of
``switch_prompt_path`` (two txt files of equal length). We read that layout and two single-file
ones: JSON lines (``{"prompts": [a, b]}`` or ``{"first": a, "second": b}``) and a two-column TSV
(exactly one tab per line, no quoting).

Conventions: files are UTF-8 (a leading BOM is ignored); lines are split on ``\\n`` with a trailing
``\\r`` removed; prompts are stripped of surrounding whitespace (upstream strips only the right
side); line numbers are 1-based. Blank lines are skipped and counted; duplicates are kept (they
weight the sampling exactly as in upstream) and counted in the report notes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from longlive_jax.data.report import BLANK_LINE, DataError, Tally

PAIR_FORMATS = ("jsonl", "tsv", "txt")
_PAIR_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".txt": "txt"}


def file_sha256(*paths: Path) -> str:
  h = hashlib.sha256()
  for p in paths:
    h.update(p.read_bytes())
  return h.hexdigest()


def _existing_file(path: str | Path, what: str) -> Path:
  p = Path(path)
  if not p.is_file():
    raise DataError(f"{p}: {what} not found (or not a file)")
  return p


def read_lines(path: Path) -> Iterator[tuple[int, str | None]]:
  """Yields ``(line_number, text)``; text is None for a line that is not valid UTF-8."""
  data = _existing_file(path, "text source").read_bytes()
  if data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  lines = data.split(b"\n")
  if lines and lines[-1] == b"":  # the final newline does not start a new line
    lines.pop()
  for i, raw in enumerate(lines, start=1):
    try:
      yield i, raw.removesuffix(b"\r").decode("utf-8")
    except UnicodeDecodeError:
      yield i, None


def _count_duplicates(items: list[tuple]) -> int:
  return len(items) - len(set(items))


def parse_prompts(path: str | Path, tally: Tally) -> list[tuple[int, str]]:
  """Good ``(line, prompt)`` pairs of a one-prompt-per-line file; bad lines go to ``tally``."""
  path = _existing_file(path, "prompt file")
  out = []
  for line, text in read_lines(path):
    if text is None:
      tally.bad(path, line, "invalid_utf8", "line is not valid UTF-8")
    elif not text.strip():
      tally.bad(path, line, BLANK_LINE, "blank line")
    else:
      out.append((line, text.strip()))
  tally.notes["num_duplicates"] = _count_duplicates([(p,) for _, p in out])
  return out


def pair_format(path: Path, fmt: str | None, switch_source: Path | None) -> str:
  if fmt is None:
    fmt = _PAIR_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
      raise DataError(f"{path}: cannot tell the prompt-pair format from the suffix; pass fmt= one of {PAIR_FORMATS}")
  if fmt not in PAIR_FORMATS:
    raise DataError(f"{path}: fmt={fmt!r}: expected one of {PAIR_FORMATS}")
  if (fmt == "txt") != (switch_source is not None):
    raise DataError(
      f"{path}: the txt pair layout needs switch_source= (the file with the second prompts, "
      "upstream's switch_prompt_path) and the jsonl / tsv layouts must not have one"
    )
  return fmt


def _check_pair(path: Path, line: int, a: object, b: object, tally: Tally) -> tuple[str, str] | None:
  if not isinstance(a, str) or not isinstance(b, str):
    tally.bad(path, line, "bad_pair", f"prompts must be strings, got {type(a).__name__} and {type(b).__name__}")
    return None
  for name, p in (("first", a), ("second", b)):
    if not p.strip():
      tally.bad(path, line, "empty_prompt", f"{name} prompt is empty")
      return None
  return a.strip(), b.strip()


def _jsonl_pair(path: Path, line: int, text: str, tally: Tally) -> tuple[str, str] | None:
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    tally.bad(path, line, "invalid_json", f"invalid JSON: {e.msg} at column {e.colno}")
    return None
  if isinstance(obj, dict) and "prompts" in obj:
    prompts = obj["prompts"]
    if not isinstance(prompts, list) or len(prompts) != 2:
      n = len(prompts) if isinstance(prompts, list) else type(prompts).__name__
      tally.bad(path, line, "bad_pair", f'"prompts" must be a list of exactly 2 prompts, got {n}')
      return None
    return _check_pair(path, line, prompts[0], prompts[1], tally)
  if isinstance(obj, dict) and "first" in obj and "second" in obj:
    return _check_pair(path, line, obj["first"], obj["second"], tally)
  tally.bad(path, line, "bad_pair", 'expected {"prompts": [a, b]} or {"first": a, "second": b}')
  return None


def _tsv_pair(path: Path, line: int, text: str, tally: Tally) -> tuple[str, str] | None:
  cols = text.split("\t")
  if len(cols) != 2:
    tally.bad(path, line, "bad_columns", f"expected 2 tab-separated columns, found {len(cols)}")
    return None
  return _check_pair(path, line, cols[0], cols[1], tally)


def _txt_pairs(path: Path, switch: Path, tally: Tally) -> list[tuple[int, str, str]]:
  a_lines, b_lines = list(read_lines(path)), list(read_lines(switch))
  if len(a_lines) != len(b_lines):
    raise DataError(
      f"{path} has {len(a_lines)} lines but {switch} has {len(b_lines)}: line i of the prompt file is paired "
      "with line i of the switch file, so both must have the same number of lines"
    )
  out = []
  for (line, a), (_, b) in zip(a_lines, b_lines, strict=True):
    if a is None or b is None:
      tally.bad(path if a is None else switch, line, "invalid_utf8", "line is not valid UTF-8")
    elif not a.strip() and not b.strip():
      tally.bad(path, line, BLANK_LINE, f"blank line (in both {path.name} and {switch.name})")
    elif not a.strip() or not b.strip():
      tally.bad(path if not a.strip() else switch, line, "empty_prompt", "empty prompt paired with a non-empty one")
    else:
      out.append((line, a.strip(), b.strip()))
  return out


def parse_prompt_pairs(
  path: str | Path, tally: Tally, *, fmt: str | None = None, switch_source: str | Path | None = None
) -> list[tuple[int, str, str]]:
  """Good ``(line, prompt_a, prompt_b)`` triples; bad lines go to ``tally``."""
  path = _existing_file(path, "prompt-pair file")
  switch = _existing_file(switch_source, "switch prompt file") if switch_source is not None else None
  fmt = pair_format(path, fmt, switch)
  if fmt == "txt":
    out = _txt_pairs(path, switch, tally)
  else:
    parse = _jsonl_pair if fmt == "jsonl" else _tsv_pair
    out = []
    for line, text in read_lines(path):
      if text is None:
        tally.bad(path, line, "invalid_utf8", "line is not valid UTF-8")
      elif not text.strip():
        tally.bad(path, line, BLANK_LINE, "blank line")
      elif (pair := parse(path, line, text, tally)) is not None:
        out.append((line, *pair))
  tally.notes["num_duplicates"] = _count_duplicates([(a, b) for _, a, b in out])
  tally.notes["format"] = fmt
  return out
