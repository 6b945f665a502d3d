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
