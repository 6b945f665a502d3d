"""Parity with every golden case produced by the original PyTorch code.

Cases are discovered from the golden folder and dispatched on ``case.json``'s
``kind``. Kinds that a later issue brings are expected to fail *by name*
(strict xfail: the day they work, this file must be updated); an unknown kind fails.
"""

from __future__ import annotations

import pytest

from longlive_jax import golden

CASES = golden.discover()


def _params():
  out = []
  for c in CASES:
    kind = golden.read_case(c).get("kind")
    marks = []
    if kind in golden.PLANNED_KINDS and kind not in golden.RUNNERS:
      marks.append(
        pytest.mark.xfail(raises=golden.UnsupportedKind, strict=True, reason=f"{kind}: {golden.PLANNED_KINDS[kind]}")
      )
    out.append(pytest.param(c, id=c.name, marks=marks))
  return out


def test_cases_are_discovered(golden_root):
  names = {c.name for c in golden.discover(golden_root)}
  assert {"wan_dit_t2v", "longlive_lora"} <= names


@pytest.mark.parametrize("case_dir", _params())
def test_golden_case(case_dir):
  result = golden.run_case(case_dir)
  assert result.comparisons, f"{case_dir.name}: nothing compared"
  report = "; ".join(f"{c.name}: max|err| {c.max_abs_err:.2e} (atol {c.atol:.0e})" for c in result.comparisons)
  print(f"{case_dir.name}: {report}")
  assert result.passed, f"{case_dir.name} differs from the reference: {report}"
  if not hasattr(golden.RUNNERS[result.kind], "module"):
    # The runners of golden.py itself (not the lazily imported ones) compare every output case.json declares.
    assert not result.not_compared, f"{case_dir.name}: outputs never compared: {result.not_compared}"
