"""Discovery of captioned videos in a folder (the source of the ``video_latents`` builder).

Layout: video files (``.mp4 .mov .mkv .webm .avi .m4v``, searched recursively, hidden entries
ignored) with captions from, in this order of precedence:

1. one mapping file at the folder root, either ``captions.jsonl`` (one ``{"file": ..., "caption": ...}``
   per line; ``file_name`` / ``video`` / ``path`` and ``text`` / ``prompt`` are accepted too) or
   ``metadata.csv`` (a header row with a ``file_name`` / ``file`` / ``video`` / ``path`` column and a
   ``caption`` / ``text`` / ``prompt`` column). File names are relative to the folder, ``/``-separated;
2. a sidecar ``name.txt`` beside ``name.mp4`` (its whole text, whitespace collapsed to single spaces).

A *source* is a video file, or a mapping line that gives no video its caption (malformed, pointing
to a missing file, or repeating an earlier entry). Each becomes one record or one listed skip.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from pathlib import Path

from longlive_jax.data.report import BLANK_LINE, DataError, Tally
from longlive_jax.data.video import VIDEO_SUFFIXES

MAPPING_FILES = ("captions.jsonl", "metadata.csv")
FILE_KEYS = ("file", "file_name", "video", "path")
CAPTION_KEYS = ("caption", "text", "prompt")


@dataclasses.dataclass(frozen=True)
class VideoSource:
  """A video and its caption; ``problem`` is ``(kind, reason)`` when it cannot become a record."""

  path: Path
  rel: str
  caption: str
  caption_source: str  # the file (and line) the caption was read from
  problem: tuple[str, str] | None = None


def _first_key(row: dict, keys: tuple[str, ...]) -> str | None:
  return next((k for k in keys if k in row), None)


def _mapping_rows(path: Path) -> list[tuple[int, dict | None, str]]:
  """``(line, row or None, error)`` for every non-header line of a mapping file."""
  try:
    text = path.read_text(encoding="utf-8-sig")
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: unreadable caption mapping: {e}") from e
  if path.suffix == ".jsonl":
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
      if not line.strip():
        rows.append((i, None, BLANK_LINE))
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        rows.append((i, None, f"invalid JSON: {e.msg} at column {e.colno}"))
        continue
      rows.append((i, obj, "") if isinstance(obj, dict) else (i, None, "expected a JSON object"))
    return rows
  reader = csv.DictReader(io.StringIO(text))
  header = reader.fieldnames or []
  if _first_key(dict.fromkeys(header), FILE_KEYS) is None or _first_key(dict.fromkeys(header), CAPTION_KEYS) is None:
    raise DataError(f"{path}: header {header} needs a file column {FILE_KEYS} and a caption column {CAPTION_KEYS}")
  rows, prev_line = [], 1
  for row in reader:
    line = prev_line + 1  # first physical line of this record (quoted fields may span lines)
    prev_line = reader.line_num
    if all(not (v or "").strip() for k, v in row.items() if k is not None):
      rows.append((line, None, BLANK_LINE))
    else:
      rows.append((line, row, ""))
  return rows


def _norm_caption(text: str) -> str:
  return " ".join(text.split())


def find_videos(folder: Path) -> list[Path]:
  vids = [
    p
    for p in folder.rglob("*")
    if p.suffix.lower() in VIDEO_SUFFIXES
    and p.is_file()
    and not any(part.startswith(".") for part in p.relative_to(folder).parts)
  ]
  return sorted(vids, key=lambda p: p.relative_to(folder).as_posix())


def _read_mapping(folder: Path, videos: dict[str, Path], tally: Tally) -> tuple[dict[str, tuple[str, str]], str | None]:
  """Captions ``rel -> (caption, "file:line")`` from the mapping file; orphan lines go to ``tally``."""
  present = [folder / name for name in MAPPING_FILES if (folder / name).is_file()]
  if len(present) > 1:
    raise DataError(f"{folder}: both {present[0].name} and {present[1].name} map captions; keep only one")
  if not present:
    return {}, None
  path = present[0]
  captions: dict[str, tuple[str, str]] = {}
  for line, row, err in _mapping_rows(path):
    if row is None:
      tally.bad(path, line, BLANK_LINE if err == BLANK_LINE else "bad_mapping", err or "blank line")
      continue
    fkey, ckey = _first_key(row, FILE_KEYS), _first_key(row, CAPTION_KEYS)
    if fkey is None or ckey is None:
      tally.bad(path, line, "bad_mapping", f"needs a file key {FILE_KEYS} and a caption key {CAPTION_KEYS}")
      continue
    rel, caption = row[fkey], row[ckey]
    if not isinstance(rel, str) or not isinstance(caption, str):
      tally.bad(path, line, "bad_mapping", "file and caption must be strings")
      continue
    rel = Path(rel.strip()).as_posix()
    if rel not in videos:
      tally.bad(path, line, "missing_video", f"caption for {rel!r}, which is not a video file in {folder}")
    elif rel in captions:
      tally.bad(path, line, "duplicate_caption", f"{rel!r} already has a caption at {captions[rel][1]}")
    else:
      captions[rel] = (caption, f"{path}:{line}")
  return captions, path.name


def scan_folder(folder: str | Path, tally: Tally) -> list[VideoSource]:
  """All videos of ``folder`` (``problem`` set on those without a usable caption); orphan mapping lines go to ``tally``."""
  folder = Path(folder)
  if not folder.is_dir():
    raise DataError(f"{folder}: video folder not found (or not a folder)")
  vids = {p.relative_to(folder).as_posix(): p for p in find_videos(folder)}
  if not vids:
    raise DataError(f"{folder}: no video files ({', '.join(VIDEO_SUFFIXES)})")
  mapped, mapping_name = _read_mapping(folder, vids, tally)
  tally.notes["caption_mapping"] = mapping_name
  out = []
  for rel, path in vids.items():
    side = path.with_suffix(".txt")
    if rel in mapped:
      caption, where = mapped[rel]
      out.append(VideoSource(path, rel, _norm_caption(caption), where))
    elif side.is_file():
      try:
        out.append(VideoSource(path, rel, _norm_caption(side.read_text(encoding="utf-8-sig")), str(side)))
      except UnicodeDecodeError:
        out.append(VideoSource(path, rel, "", str(side), ("bad_caption", f"caption file {side} is not valid UTF-8")))
    else:
      looked = side.name + (f" and no entry in {mapping_name}" if mapping_name else "")
      out.append(VideoSource(path, rel, "", "", ("missing_caption", f"no caption: no {looked}")))
    if out[-1].problem is None and not out[-1].caption:
      out[-1] = dataclasses.replace(out[-1], problem=("empty_caption", f"empty caption in {out[-1].caption_source}"))
  return out


def folder_fingerprint(folder: Path, sources: list[VideoSource]) -> str:
  """Changes when a video or caption file changes (path, size, mtime) or a caption text changes."""
  h = hashlib.sha256()
  for src in sources:
    st = src.path.stat()
    h.update(f"{src.rel}\0{st.st_size}\0{st.st_mtime_ns}\0{src.caption}\n".encode())
  for name in MAPPING_FILES:
    if (folder / name).is_file():
      h.update((folder / name).read_bytes())
  return h.hexdigest()
