"""Shared fixtures. Golden cases come from ``$LONGLIVE_GOLDEN_DIR`` or ``../shared/golden``."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

# Parity needs full float32 matmuls (TF32 / bf16 passes exceed the golden tolerances).
jax.config.update("jax_default_matmul_precision", "highest")

from longlive_jax import golden  # noqa: E402


@pytest.fixture(scope="session")
def golden_root() -> Path:
  root = golden.golden_dir()
  if not root.is_dir() or not golden.discover(root):
    pytest.fail(f"golden cases not found at {root}; set LONGLIVE_GOLDEN_DIR")
  return root


@pytest.fixture(scope="session")
def tiny_case(golden_root) -> Path:
  """The longlive_lora case: tiny causal generator weights + a LongLive lora.pt."""
  return golden_root / "longlive_lora"


@pytest.fixture(scope="session")
def tiny_cfg(tiny_case):
  return golden.model_config(json.loads((tiny_case / "case.json").read_text())["config"]["model"])
