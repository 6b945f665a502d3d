"""Depth up-scaling of a trained DiT: every block followed by a copy of itself whose residual outputs are zero.

  python experiments/toyworld/deepen.py runs/toyworld/teacher/export runs/toyworld/teacher_deep_init [--overwrite]

The toy teacher (4 blocks) plateaued where sampling decides the layout: one denoising step from true clips at
sigma 0.9 finds the object in ~20-30% of clips (``one_step.py``) at steps 12000, 12941 and 16000, although a still
object's evidence summed over its 20 latent frames stands far above the noise there. More depth gives the
network more rounds of attention to gather that evidence. Each new block copies the block before it (its
attention starts from patterns that mean something) with the three residual branches' output projections
(self-attention ``o``, cross-attention ``o``, FFN ``fc2``) zeroed, so the deeper network computes exactly the
same function as the trained one and training continues from there: nothing learnt is lost. Prints the
largest output difference on a random input as the check.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

ZEROED = (("self_attn", "o"), ("cross_attn", "o"), ("ffn", "fc2"))


def deepen(params: dict) -> dict:
  """Blocks ``[L, ...]`` -> ``[2L, ...]``: block i at 2i, its zero-output copy at 2i + 1."""
  blocks = params["blocks"]
  copy = jax.tree.map(lambda x: x, blocks)
  for a, b in ZEROED:
    copy[a][b] = jax.tree.map(jnp.zeros_like, copy[a][b])

  def interleave(x, y):  # [L, ...] twice -> [2L, ...]
    return jnp.stack([x, y], axis=1).reshape(2 * x.shape[0], *x.shape[1:])

  out = dict(params)
  out["blocks"] = jax.tree.map(interleave, blocks, copy)
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("src", help="whole-model or DiT checkpoint folder")
  ap.add_argument("out", help="where the deeper DiT checkpoint goes")
  ap.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
  a = ap.parse_args()

  from longlive_jax import checkpoint
  from longlive_jax.model.params import model_from_params

  cfg, params, adapter, info = checkpoint.load(a.src)
  if adapter is not None:
    sys.exit(f"{a.src}: holds a LoRA adapter; merge it before deepening")
  deep_cfg = cfg.replace(num_layers=2 * cfg.num_layers)
  deep = deepen(params)
  key = jax.random.key(0)
  _, ph, pw = cfg.patch_size
  x = jax.random.normal(key, (1, 3, 4 * ph, 4 * pw, cfg.in_dim))
  ctx = jax.random.normal(key, (1, cfg.text_len, cfg.text_dim))
  t = jnp.array([700.0])
  y0 = model_from_params(cfg, params)(x, t, ctx)
  y1 = model_from_params(deep_cfg, deep)(x, t, ctx)
  diff = float(jnp.max(jnp.abs(y0 - y1)))
  print(f"{cfg.num_layers} -> {deep_cfg.num_layers} blocks; max |output difference| {diff:.2e}")
  if not np.isfinite(diff) or diff > 1e-4:
    sys.exit("the deepened network does not compute the same function")
  meta = {"deepened_from": str(a.src), "source_meta": info.get("meta")}
  checkpoint.save(a.out, cfg=deep_cfg, params=deep, meta=meta, overwrite=a.overwrite)
  print(f"wrote {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
