"""``longlive-jax parity`` hardening: every case runs in isolation, broken cases are reported, exit status.

Broken cases are copies of the real (small) ``umt5_encoder`` golden case with one thing damaged. A fake
kind registered for a test exercises the harness checks without running a model.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from longlive_jax import cli, golden

SOURCE = "umt5_encoder"  # smallest case with weights: a 2-layer encoder on 2 x 16 tokens


def _copy(golden_root: Path, root: Path, name: str) -> Path:
  dst = root / name
  shutil.copytree(golden_root / SOURCE, dst)
  return dst


def _edit_case(case_dir: Path, fn) -> None:
  path = case_dir / "case.json"
  case = json.loads(path.read_text())
  fn(case)
  path.write_text(json.dumps(case))


def _edit_npz(path: Path, fn) -> None:
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  fn(arrays)
  np.savez(path, **arrays)


def _parity(capsys, *args) -> tuple[int, str]:
  rc = cli.main(["parity", *map(str, args)])
  out, err = capsys.readouterr()
  return rc, out + err


def test_broken_cases_are_reported_and_the_run_continues(tmp_path, golden_root, capsys):
  root = tmp_path / "golden"
  root.mkdir()
  # Sorted names: the broken ones come first, so a crash would stop the run before the good one.
  (_copy(golden_root, root, "a_malformed") / "case.json").write_text('{"kind": "umt5_encoder", "arrays": ')
  (_copy(golden_root, root, "b_no_outputs") / "outputs.npz").unlink()
  _edit_case(_copy(golden_root, root, "c_unsupported"), lambda c: c.update(kind="no_such_kind"))

  def perturb(a):
    a["hidden"] = a["hidden"].copy()
    a["hidden"][1, 3, 5] += 0.5

  _edit_npz(_copy(golden_root, root, "d_perturbed") / "outputs.npz", perturb)
  _copy(golden_root, root, "e_good")
  report = tmp_path / "out" / "r.json"
  report.parent.mkdir()

  rc, out = _parity(capsys, "--golden", root, "--json", report)

  assert rc == 1
  assert "Traceback" not in out
  lines = out.strip().splitlines()
  assert lines[-1] == "1 ok, 3 failed, 1 unsupported"
  line = {n: next(x for x in lines if re.match(rf"\[\w+\] {n}", x)) for n in ("a_", "b_", "c_", "d_", "e_")}
  assert line["a_"].startswith("[FAIL] a_malformed") and "case.json: invalid JSON" in line["a_"]
  assert line["b_"].startswith("[FAIL] b_no_outputs") and "outputs.npz: missing" in line["b_"]
  assert line["c_"].startswith("[unsupported] c_unsupported") and "'no_such_kind'" in line["c_"]
  # The failing comparison: array name, its max abs error, the tolerance.
  m = re.search(
    r"\[FAIL\] d_perturbed .*: hidden: max\|err\| (\S+) exceeds the tolerance \(atol 1e-04, rtol 1e-04\)", out
  )
  assert m and abs(float(m.group(1)) - 0.5) < 1e-3
  assert re.search(r"^\s+hidden\s+max\|err\| \S+\s+\(atol 1e-04, rtol 1e-04\)\s+FAIL$", out, re.M)
  assert line["e_"].startswith("[ok] e_good")

  res = {r["case"]: r for r in json.loads(report.read_text())}
  assert {k: r["status"] for k, r in res.items()} == {
    "a_malformed": "failed",
    "b_no_outputs": "failed",
    "c_unsupported": "unsupported",
    "d_perturbed": "failed",
    "e_good": "ok",
  }
  assert "invalid JSON" in res["a_malformed"]["reason"] and "\n" not in res["a_malformed"]["reason"]
  bad = [c for c in res["d_perturbed"]["comparisons"] if not c["passed"]]
  assert [c["array"] for c in bad] == ["hidden"] and abs(bad[0]["max_abs_err"] - 0.5) < 1e-3
  assert res["e_good"]["comparisons"] and all(c["passed"] for c in res["e_good"]["comparisons"])


def test_all_ok_exits_zero_and_unsupported_alone_exits_nonzero(tmp_path, golden_root, capsys):
  root = tmp_path / "golden"
  root.mkdir()
  _copy(golden_root, root, "good")
  _edit_case(_copy(golden_root, root, "todo"), lambda c: c.update(kind="not_yet"))
  rc, out = _parity(capsys, "--golden", root, "--case", "good")
  assert rc == 0 and out.strip().splitlines()[-1] == "1 ok, 0 failed, 0 unsupported"
  rc, out = _parity(capsys, "--golden", root, "--case", "todo", "--json", tmp_path / "r.json")
  assert rc == 1 and out.strip().splitlines()[-1] == "0 ok, 0 failed, 1 unsupported"
  assert json.loads((tmp_path / "r.json").read_text())[0]["status"] == "unsupported"


def test_nothing_to_run_exits_2_and_still_writes_json(tmp_path, golden_root, capsys):
  rc, out = _parity(capsys, "--golden", tmp_path, "--json", tmp_path / "empty.json")
  assert rc == 2 and "no golden cases found" in out
  assert json.loads((tmp_path / "empty.json").read_text()) == []
  rc, out = _parity(capsys, "--golden", golden_root, "--case", "no_such_case", "--json", tmp_path / "r.json")
  assert rc == 2 and "no case no_such_case" in out and "wan_dit_t2v" in out
  assert json.loads((tmp_path / "r.json").read_text()) == []


# ------------------------------------------------------------------------------------------------
# The harness itself, with a fake kind (no model runs)


@pytest.fixture
def fake_kind(monkeypatch):
  """Registers kind ``fake`` whose runner compares what the test puts in ``compare``."""
  compare: list = []

  def runner(case_dir, case):
    arrays = golden.load_arrays(case_dir, case)
    cmp = golden.comparer(case, arrays)
    return [cmp(name, arrays.outputs.get(name, 0.0) if got is None else got) for name, got in compare]

  monkeypatch.setitem(golden.RUNNERS, "fake", runner)
  return compare


def _fake_case(root: Path, name: str = "c", *, outputs=None, case_edit=None) -> Path:
  d = root / name
  d.mkdir(parents=True)
  if outputs is None:
    outputs = {"y": np.arange(6, dtype=np.float32).reshape(2, 3), "z": np.ones(4, np.float32)}
  np.savez(d / "inputs.npz", x=np.zeros(3, np.float32))
  np.savez(d / "outputs.npz", **outputs)
  arrays = {"x": {"file": "inputs.npz", "shape": [3], "dtype": "float32"}}
  arrays |= {k: {"file": "outputs.npz", "shape": [2, 3] if k == "y" else [4], "dtype": "float32"} for k in ("y", "z")}
  case = {"kind": "fake", "arrays": arrays, "tolerance": {"atol": 1e-6, "rtol": 0.0}}
  if case_edit:
    case_edit(case)
  (d / "case.json").write_text(json.dumps(case))
  return d


def test_outputs_are_the_declared_arrays(tmp_path, fake_kind):
  fake_kind += [("y", None)]
  r = golden.check_case(_fake_case(tmp_path))
  assert r.status == "ok" and [c.reference for c in r.comparisons] == ["y"]
  assert r.not_compared == ["z"]  # declared but never compared: reported
  fake_kind[:] = [("undeclared", 1.0)]
  r = golden.check_case(tmp_path / "c")
  assert r.status == "failed" and "compares 'undeclared', which case.json does not declare" in r.reason
  # A label "name (variant)" without an explicit array compares against "name".
  assert golden.compare("y (numpy)", 0.0, 0.0, {"atol": 0, "rtol": 0}).reference == "y"
  fake_kind[:] = [("y", np.zeros((3, 2)))]
  r = golden.check_case(tmp_path / "c")
  assert r.status == "failed" and r.failing[0].note == "shape [3, 2] != reference [2, 3]"


@pytest.mark.parametrize(
  ("damage", "reason"),
  [
    (dict(outputs={"y": np.zeros((2, 3), np.float32)}), "outputs.npz: no array 'z' (declared in case.json)"),
    (
      dict(outputs={"y": np.zeros((2, 3), np.float32), "z": np.ones(4, np.float32), "w": np.ones(1)}),
      "outputs.npz: array 'w' is not described in case.json",
    ),
    (dict(outputs={"y": np.zeros((3, 2), np.float32), "z": np.ones(4, np.float32)}), "'y' has shape [3, 2]"),
    (dict(outputs={"y": np.zeros((2, 3)), "z": np.ones(4, np.float32)}), "'y' has dtype float64"),
    (dict(case_edit=lambda c: c.pop("tolerance")), "'tolerance' needs non-negative numbers"),
    (dict(case_edit=lambda c: c["tolerance"].update(per_array={"q": "exact"})), "per_array['q'] names no array"),
    (dict(case_edit=lambda c: c["arrays"]["y"].update(file="../y.npz")), "'file' must name an .npz file"),
    (dict(case_edit=lambda c: c.pop("arrays")), "'arrays' is missing or empty"),
    (dict(case_edit=lambda c: c.update(kind=3)), "'kind' is missing"),
    (dict(case_edit=lambda c: c.update(weights={"file": "w.safetensors"})), "w.safetensors: missing"),
  ],
)
def test_malformed_cases_fail_with_one_line(tmp_path, fake_kind, damage, reason):
  fake_kind += [("y", None), ("z", None)]
  r = golden.check_case(_fake_case(tmp_path, **damage))
  assert r.status == "failed" and not r.comparisons
  assert reason in r.reason and "\n" not in r.reason


def test_case_without_case_json_is_discovered_and_fails(tmp_path, fake_kind):
  (_fake_case(tmp_path) / "case.json").unlink()
  assert golden.discover(tmp_path) == [tmp_path / "c"]
  r = golden.check_case(tmp_path / "c")
  assert r.status == "failed" and r.reason == "case.json: missing"


def test_runner_errors_become_one_line_reasons(tmp_path, monkeypatch):
  def runner(case_dir, case):
    return {}["boom"]

  monkeypatch.setitem(golden.RUNNERS, "fake", runner)
  r = golden.check_case(_fake_case(tmp_path))
  assert r.status == "failed"
  assert r.reason.startswith("KeyError: 'boom' (at test_parity.py:") and r.reason.endswith("in runner)")


def test_corrupt_weights_fail_on_sha256(tmp_path, golden_root):
  d = tmp_path / "wan_dit_t2v"
  shutil.copytree(golden_root / "wan_dit_t2v", d)
  with open(d / "weights.safetensors", "r+b") as f:
    f.seek(-4, 2)
    f.write(b"\0\0\0\0")
  r = golden.check_case(d)
  assert r.status == "failed" and "weights.safetensors: sha256 differs" in r.reason


def test_interrupt_still_writes_json(tmp_path, fake_kind, monkeypatch, capsys):
  fake_kind += [("y", None), ("z", None)]
  _fake_case(tmp_path, "a")
  _fake_case(tmp_path, "b")
  real = golden.check_case

  def check(case_dir):
    if Path(case_dir).name == "b":
      raise KeyboardInterrupt
    return real(case_dir)

  monkeypatch.setattr(golden, "check_case", check)
  rc, _ = _parity(capsys, "--golden", tmp_path, "--json", tmp_path / "r.json")
  assert rc == 130
  assert [r["case"] for r in json.loads((tmp_path / "r.json").read_text())] == ["a"]


def test_every_real_case_is_described_by_its_case_json(golden_root):
  """Every golden case validates and every array loads as its case.json describes it."""
  for d in golden.discover(golden_root):
    case = golden.read_case(d)
    golden.validate_case(case)
    golden.check_files(d, case)
    arrays = golden.load_arrays(d, case)
    assert set(arrays.inputs) | set(arrays.outputs) == set(case["arrays"]), d.name
  # wan_dit_t2v stores seq_len as [1] where case.json declares []: accepted, reshaped to the declared shape.
  dit = golden_root / "wan_dit_t2v"
  assert golden.load_arrays(dit, golden.read_case(dit)).inputs["seq_len"].shape == ()
