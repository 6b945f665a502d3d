"""Shared fixtures. Golden cases come from ``$LONGLIVE_GOLDEN_DIR`` or ``../shared/golden``."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

# Parity needs full float32 matmuls (TF32 / bf16 passes exceed the golden tolerances).
jax.config.update("jax_default_matmul_precision", "highest")


def _session_compile_cache() -> str:
  """One JAX persistent compilation cache for the whole test session, in a temporary folder: tests that build the
  same program (the tiny DiT's init and train step, the CLI's block step) compile it once, CLI runs in the
  process and in subprocesses use it instead of the user's ``~/.cache/longlive_jax``, and pytest-xdist's workers
  share it (they inherit the folder from the process that made it, which removes it at exit)."""
  where = os.environ.get("LONGLIVE_JAX_TEST_CACHE")
  if where is None:
    where = tempfile.mkdtemp(prefix="longlive_jax_test_xla_")
    os.environ["LONGLIVE_JAX_TEST_CACHE"] = where
    atexit.register(shutil.rmtree, where, ignore_errors=True)
  os.environ["LONGLIVE_JAX_CACHE"] = where  # the CLI's enable_compile_cache, here and in subprocesses
  os.environ["JAX_COMPILATION_CACHE_DIR"] = where  # any other subprocess
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return where


_session_compile_cache()

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


@pytest.fixture(scope="session")
def tiny_stream_setup():
  """Factory for the CLI stream tests: ``make(root, *, num_prompts, short_rows=0, height, width)`` saves the tiny
  DiT (seed 0) as ``root/ckpt`` and ``num_prompts`` random embeddings as ``root/p{i}.npy``; returns
  ``(ckpt, embs, streamer)`` with ``embs[i] [1, text_len, text_dim]`` as the model sees them (a prompt saved
  ``short_rows`` rows short is padded with zero rows) and a streamer of blocks of 3, sink 3, window 9."""
  import numpy as np

  from longlive_jax import checkpoint
  from longlive_jax.config import tiny_config
  from longlive_jax.model.params import params_of
  from longlive_jax.model.wan import init_model
  from longlive_jax.stream.cache import StreamSpec
  from longlive_jax.stream.driver import Streamer

  def make(root: Path, *, num_prompts: int, height: int, width: int, short_rows: int = 0):
    cfg = tiny_config()
    model = init_model(cfg, seed=0)
    ckpt = checkpoint.save(root / "ckpt", cfg=cfg, params=params_of(model))
    rng = np.random.default_rng(0)
    embs = []
    for i in range(num_prompts):
      e = rng.standard_normal((cfg.text_len - short_rows, cfg.text_dim)).astype(np.float32)  # [L - short, D]
      np.save(root / f"p{i}.npy", e)
      embs.append(np.concatenate([e, np.zeros((short_rows, cfg.text_dim), np.float32)])[None])  # [1, L, D]
    spec = StreamSpec(block_frames=3, sink_frames=3, window_frames=9, tokens_per_frame=(height // 2) * (width // 2))
    return ckpt, embs, Streamer(model, spec)

  return make
