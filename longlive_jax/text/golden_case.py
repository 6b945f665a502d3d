"""Parity of the umT5 encoder with the ``umt5_encoder`` golden case (upstream ``T5Encoder`` + ``WanTextEncoder``).

Compared outputs (``outputs.npz``):
  * ``hidden``: ``T5Encoder(ids, mask)``, padded rows included;
  * ``context``: ``WanTextEncoder.forward``'s ``prompt_embeds`` (rows ``>= seq_len`` zeroed);
  * ``rel_bucket``: the bucket of each relative position in ``rel_pos`` (-160..160);
  * ``rel_bucket_matrix``: the ``[L, L]`` buckets of ``key - query`` every layer uses.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax.convert import sources, umt5
from longlive_jax.text.config import UMT5Config
from longlive_jax.text.encode import encode_ids
from longlive_jax.text.model import bucket_matrix, model_from_params, relative_position_bucket


def case_config(case: dict) -> UMT5Config:
  """The float32 :class:`UMT5Config` of a golden case's (upstream-named) config."""
  return UMT5Config.from_upstream(case["config"], dtype="float32", param_dtype="float32")


def run_golden(case_dir: Path, case: dict) -> list:
  """Loads the case weights through our converter, runs our encoder, compares every reproducible output."""
  from longlive_jax import golden

  case_dir = Path(case_dir)
  cfg = case_config(case)
  tol = case["tolerance"]
  model = model_from_params(cfg, umt5.convert(sources.open_state_dict(case_dir / "weights.safetensors"), cfg))
  inp, out = np.load(case_dir / "inputs.npz"), np.load(case_dir / "outputs.npz")
  with jax.default_matmul_precision("highest"):
    hidden = jax.jit(lambda m, ids, mask: m(ids, mask))(model, jnp.asarray(inp["ids"]), jnp.asarray(inp["mask"]))
    context = encode_ids(model, inp["ids"], inp["mask"])
  length = inp["ids"].shape[1]
  kw = dict(num_buckets=cfg.num_buckets, max_dist=cfg.max_dist)
  return [
    golden.compare("hidden", np.asarray(hidden), out["hidden"], tol),
    golden.compare("context", np.asarray(context), out["context"], tol),
    golden.compare("rel_bucket", relative_position_bucket(out["rel_pos"], **kw), out["rel_bucket"], tol),
    golden.compare("rel_bucket_matrix", bucket_matrix(length, **kw), out["rel_bucket_matrix"], tol),
  ]
