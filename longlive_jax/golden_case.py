"""The case-file layer of the golden parity cases: finding case folders, reading and validating ``case.json``,
checking the files it names (sha256), loading the arrays it declares, and comparing results against the
references at the declared tolerance.

Each case folder holds ``case.json`` (``kind``, ``config``, ``arrays``, ``tolerance``), weights under
upstream key names, ``inputs.npz`` and ``outputs.npz``. Arrays are taken as ``case.json``'s ``arrays``
section describes them: every declared array must be in the file it names with the declared shape and
dtype, every array of those files must be declared, the arrays of ``outputs.npz`` are the references,
and a runner can only compare against a declared reference.

Split from :mod:`longlive_jax.golden` (the runners, which re-exports every name here); this module needs no
model code, so the per-family runners can use it without importing the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "golden"
CASE_FILE = "case.json"
INPUTS = "inputs.npz"
OUTPUTS = "outputs.npz"  # the file whose arrays are the references

# Kinds that later issues bring (kind -> issue).
PLANNED_KINDS: dict[str, str] = {}


class UnsupportedKind(NotImplementedError):
  def __init__(self, kind: str, case: Path):
    planned = PLANNED_KINDS.get(kind)
    why = f"planned in {planned}" if planned else "unknown kind"
    self.reason = f"kind {kind!r} is not implemented yet ({why})"
    super().__init__(f"golden case {case.name}: {self.reason}")
    self.kind = kind


class CaseError(Exception):
  """A case that cannot run as its ``case.json`` describes it; the message is one line naming the file or entry."""


@dataclasses.dataclass
class Comparison:
  """One output against its reference.

  ``array`` is the ``case.json`` name compared against; when not given it is ``name`` without a trailing
  `` (variant)`` label (``"x (numpy)"`` compares against ``x``).
  """

  name: str
  max_abs_err: float
  atol: float
  rtol: float
  passed: bool
  array: str | None = None
  note: str = ""

  @property
  def reference(self) -> str:
    if self.array:
      return self.array
    return re.sub(r" \([^()]*\)$", "", self.name)


@dataclasses.dataclass
class CaseResult:
  """``status`` is ``"ok"``, ``"failed"`` or ``"unsupported"``; ``reason`` says why a case did not run."""

  case: str
  kind: str | None
  comparisons: list[Comparison]
  status: str = ""
  reason: str | None = None
  not_compared: list[str] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  def __post_init__(self):
    if not self.status:
      self.status = "ok" if self.comparisons and all(c.passed for c in self.comparisons) else "failed"

  @property
  def passed(self) -> bool:
    return self.status == "ok"

  @property
  def failing(self) -> list[Comparison]:
    return [c for c in self.comparisons if not c.passed]


def golden_dir() -> Path:
  """``$LONGLIVE_GOLDEN_DIR``, else ``../shared/golden`` beside the repository (or the working directory)."""
  if "LONGLIVE_GOLDEN_DIR" in os.environ:
    return Path(os.environ["LONGLIVE_GOLDEN_DIR"])
  if DEFAULT_DIR.is_dir():
    return DEFAULT_DIR
  return Path.cwd().parent / "shared" / "golden"


def discover(root: Path | None = None) -> list[Path]:
  """Case folders: sub-folders with a ``case.json`` or an ``.npz`` file (so a case whose ``case.json`` is
  missing is reported, not skipped)."""
  root = Path(root) if root is not None else golden_dir()
  if not root.is_dir():
    return []
  found = {p.parent for p in root.glob(f"*/{CASE_FILE}")} | {p.parent for p in root.glob("*/*.npz")}
  return sorted(found)


# ------------------------------------------------------------------------------------------------
# case.json: reading and validation


def read_case(case_dir: Path) -> dict:
  """The parsed ``case.json``; :class:`CaseError` when it is missing, unreadable or not a JSON object."""
  path = Path(case_dir) / CASE_FILE
  try:
    text = path.read_text()
  except FileNotFoundError:
    raise CaseError(f"{CASE_FILE}: missing") from None
  except (OSError, UnicodeDecodeError) as e:
    raise CaseError(f"{CASE_FILE}: unreadable ({e})") from None
  try:
    case = json.loads(text)
  except json.JSONDecodeError as e:
    raise CaseError(f"{CASE_FILE}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
  if not isinstance(case, dict):
    raise CaseError(f"{CASE_FILE}: the top level is a JSON {type(case).__name__}, not an object")
  kind = case.get("kind")
  if not isinstance(kind, str) or not kind:
    raise CaseError(f"{CASE_FILE}: 'kind' is missing or not a non-empty string")
  return case


def _is_number(v) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def validate_case(case: dict) -> None:
  """Checks the ``arrays`` and ``tolerance`` sections (the parts the harness relies on)."""
  arrays = case.get("arrays")
  if not isinstance(arrays, dict) or not arrays:
    raise CaseError(f"{CASE_FILE}: 'arrays' is missing or empty (it must describe every input and output array)")
  for name, desc in arrays.items():
    where = f"{CASE_FILE}: arrays[{name!r}]"
    if not isinstance(desc, dict):
      raise CaseError(f"{where} is not an object")
    file = desc.get("file")
    if not isinstance(file, str) or not file.endswith(".npz") or "/" in file or "\\" in file:
      raise CaseError(f"{where}: 'file' must name an .npz file of the case folder, got {file!r}")
    shape = desc.get("shape")
    if shape is not None and not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
      raise CaseError(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    if "dtype" in desc:
      try:
        np.dtype(desc["dtype"])
      except TypeError:
        raise CaseError(f"{where}: unknown dtype {desc['dtype']!r}") from None
  outputs = [n for n, d in arrays.items() if d["file"] == OUTPUTS]
  if not outputs:
    raise CaseError(f"{CASE_FILE}: no array is declared in {OUTPUTS} (nothing to compare)")
  tol = case.get("tolerance")
  if not isinstance(tol, dict) or not _is_number(tol.get("atol")) or not _is_number(tol.get("rtol")):
    raise CaseError(f"{CASE_FILE}: 'tolerance' needs non-negative numbers 'atol' and 'rtol', got {tol!r}")
  per = tol.get("per_array", {})
  if not isinstance(per, dict):
    raise CaseError(f"{CASE_FILE}: tolerance.per_array must be an object")
  for name, v in per.items():
    if name not in outputs:
      raise CaseError(f"{CASE_FILE}: tolerance.per_array[{name!r}] names no array of {OUTPUTS}")
    valid = isinstance(v, dict) and v and all(k in ("atol", "rtol") and _is_number(x) for k, x in v.items())
    if v != "exact" and not valid:
      raise CaseError(f"{CASE_FILE}: tolerance.per_array[{name!r}] must be 'exact' or {{atol, rtol}}, got {v!r}")


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def check_files(case_dir: Path, case: dict) -> None:
  """Every file ``case.json`` names (``weights.file``, ``files``) exists and matches its ``sha256`` when given."""
  named: dict[str, str | None] = {}
  weights = case.get("weights")
  if isinstance(weights, dict) and "file" in weights:
    named[str(weights["file"])] = weights.get("sha256")
  files = case.get("files")
  if isinstance(files, dict):
    for name, desc in files.items():
      named.setdefault(str(name), desc.get("sha256") if isinstance(desc, dict) else None)
  for name, sha in named.items():
    path = Path(case_dir) / name
    if not path.is_file():
      raise CaseError(f"{name}: missing (named in {CASE_FILE})")
    if sha and _sha256(path) != sha:
      raise CaseError(f"{name}: sha256 differs from the one in {CASE_FILE} (corrupt or replaced file)")


def case_file(case_dir: Path, case: dict, name: str | None = None) -> Path:
  """A file of the case: ``name`` (must be declared in ``files`` or be ``weights.file``), else ``weights.file``."""
  weights = case.get("weights") if isinstance(case.get("weights"), dict) else {}
  if name is None:
    if "file" not in weights:
      raise CaseError(f"{CASE_FILE}: 'weights.file' is missing")
    return Path(case_dir) / weights["file"]
  if name != weights.get("file") and name not in (case.get("files") or {}):
    raise CaseError(f"{CASE_FILE}: {name} is not declared (in 'files' or 'weights')")
  return Path(case_dir) / name


# ------------------------------------------------------------------------------------------------
# Arrays, as case.json describes them


@dataclasses.dataclass(frozen=True)
class CaseArrays:
  """Every array of a case by its ``case.json`` name, grouped by the file (role) it lives in."""

  by_file: dict[str, dict[str, np.ndarray]]

  @property
  def inputs(self) -> dict[str, np.ndarray]:
    return self.by_file.get(INPUTS, {})

  @property
  def outputs(self) -> dict[str, np.ndarray]:
    return self.by_file.get(OUTPUTS, {})

  def input(self, name: str, kind: str) -> np.ndarray:
    if name not in self.inputs:
      raise CaseError(f"kind {kind!r} reads the input {name!r}, which {CASE_FILE} does not declare in {INPUTS}")
    return self.inputs[name]

  def sole_output(self, kind: str) -> str:
    if len(self.outputs) != 1:
      raise CaseError(f"kind {kind!r} has one output, {CASE_FILE} declares {sorted(self.outputs)} in {OUTPUTS}")
    return next(iter(self.outputs))


def load_arrays(case_dir: Path, case: dict) -> CaseArrays:
  """Loads every array ``case.json`` declares from the file it names, checking shape and dtype.

  A declared shape ``[]`` also accepts a stored ``[1]`` (same single value); the array is reshaped to the
  declared shape. Arrays in the files that ``case.json`` does not declare are an error (never compared).
  """
  by_file: dict[str, dict[str, dict]] = {}
  for name, desc in case["arrays"].items():
    by_file.setdefault(desc["file"], {})[name] = desc
  out: dict[str, dict[str, np.ndarray]] = {}
  for file, declared in by_file.items():
    path = Path(case_dir) / file
    if not path.is_file():
      raise CaseError(f"{file}: missing ({CASE_FILE} declares {', '.join(sorted(declared))} in it)")
    try:
      with np.load(path, allow_pickle=False) as z:
        stored = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / format errors of a damaged file
      raise CaseError(f"{file}: unreadable ({type(e).__name__}: {_first_line(e)})") from None
    missing = sorted(set(declared) - set(stored))
    if missing:
      raise CaseError(f"{file}: no array {', '.join(map(repr, missing))} (declared in {CASE_FILE})")
    extra = sorted(set(stored) - set(declared))
    if extra:
      raise CaseError(f"{file}: array {', '.join(map(repr, extra))} is not described in {CASE_FILE}")
    arrays = {}
    for name, desc in declared.items():
      a = stored[name]
      want = desc.get("shape")
      if want is not None and list(a.shape) != want:
        if a.size == math.prod(want) and [d for d in a.shape if d != 1] == [d for d in want if d != 1]:
          a = a.reshape(want)
        else:
          raise CaseError(f"{file}: {name!r} has shape {list(a.shape)}, {CASE_FILE} declares {want}")
      if "dtype" in desc and a.dtype != np.dtype(desc["dtype"]):
        raise CaseError(f"{file}: {name!r} has dtype {a.dtype}, {CASE_FILE} declares {desc['dtype']}")
      arrays[name] = a
    out[file] = arrays
  return CaseArrays(out)


def tolerance(case: dict, name: str) -> dict:
  """The tolerance of one output: ``case["tolerance"]`` overridden by its ``per_array[name]`` entry
  (a dict of atol/rtol, or ``"exact"`` for zero)."""
  tol = case["tolerance"]
  per = tol.get("per_array", {}).get(name)
  if per == "exact":
    return {"atol": 0.0, "rtol": 0.0}
  return {**tol, **per} if isinstance(per, dict) else tol


def compare(name: str, got, want, tol: dict, *, array: str | None = None) -> Comparison:
  """``|got - want| <= atol + rtol |want|`` everywhere. A shape mismatch or a non-finite value fails (with a note)."""
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  atol, rtol = float(tol["atol"]), float(tol["rtol"])
  if got.shape != want.shape:
    note = f"shape {list(got.shape)} != reference {list(want.shape)}"
    return Comparison(name, math.inf, atol, rtol, False, array=array, note=note)
  diff = np.abs(got - want)
  ok = bool(np.all(diff <= atol + rtol * np.abs(want)))
  note = ""
  if not np.isfinite(got).all():
    note = f"{int(np.sum(~np.isfinite(got)))} non-finite value(s) in the result"
    err = math.inf
  else:
    err = float(np.max(diff)) if got.size else 0.0
  return Comparison(name, err, atol, rtol, ok, array=array, note=note)


def comparer(case: dict, arrays: CaseArrays) -> Callable[..., Comparison]:
  """``cmp(array, got, label=None)``: ``got`` against the declared reference ``array`` at its tolerance."""

  def cmp(array: str, got, label: str | None = None) -> Comparison:
    if array not in arrays.outputs:
      raise CaseError(f"the runner compares {array!r}, which {CASE_FILE} does not declare in {OUTPUTS}")
    return compare(label or array, got, arrays.outputs[array], tolerance(case, array), array=array)

  return cmp


def _first_line(e: BaseException, limit: int = 300) -> str:
  lines = [s.strip() for s in str(e).splitlines() if s.strip()]
  text = lines[0] if lines else repr(e)
  return text if len(text) <= limit else text[: limit - 3] + "..."
