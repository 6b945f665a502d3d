"""Deepen a DiT export without changing what it computes: every block is followed by a copy of itself whose
output projections (self-attention ``o``, cross-attention ``o``, FFN ``fc2``: kernels and biases) are zero, so
the copy adds nothing to the residual stream until training moves them.

Why here: the toy world's teacher (4 blocks of width 256) is the ceiling of every student (README: circles right
in 80% of its windows, ``bounces`` in 43%), and a teacher trained from scratch costs hours of this CPU. A deeper
teacher that starts as the trained one only has to learn what the extra blocks add; trained on as any teacher
(``longlive-jax train configs/toyworld/teacher_windows_2.yaml model.checkpoint=<grown export> ...``).

  python experiments/toyworld/grow.py --dit runs/toyworld/teacher_windows_2/export --out runs/toyworld/deep/export

The export's config gets ``num_layers`` doubled; its meta records where it grew from.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

ZEROED = (("self_attn", "o"), ("cross_attn", "o"), ("ffn", "fc2"))  # the block's writes to the residual stream


def grow_blocks(blocks: dict) -> dict:
  """Blocks stacked on a leading layer axis ``[L, ...]`` -> ``[2L, ...]``: block ``i`` at ``2i``, its muted copy at
  ``2i + 1`` (a copy's output projections are zero; everything else equals block ``i``)."""

  def interleave(x, zero: bool):
    x = np.asarray(x, np.float32)
    copy = np.zeros_like(x) if zero else x
    return np.stack([x, copy], axis=1).reshape((2 * x.shape[0],) + x.shape[1:])  # [L, 2, ...] -> [2L, ...]

  def walk(tree, path):
    if isinstance(tree, dict):
      return {k: walk(v, path + (k,)) for k, v in tree.items()}
    return interleave(tree, zero=path[:2] in ZEROED)

  return walk(blocks, ())


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dit", required=True, help="DiT export to deepen")
  ap.add_argument("--out", required=True, help="output export folder")
  a = ap.parse_args()
  from longlive_jax import checkpoint

  cfg, params, _, info = checkpoint.load(a.dit, dtype="float32")
  params = dict(params)
  params["blocks"] = grow_blocks(params["blocks"])
  deep = cfg.replace(num_layers=2 * cfg.num_layers)
  meta = {**(info.get("meta") or {}), "grown_from": {"dit": a.dit, "num_layers": cfg.num_layers}}
  checkpoint.save(a.out, cfg=deep, params=params, meta=meta, overwrite=True)
  print(f"wrote {a.out}: {cfg.num_layers} -> {deep.num_layers} blocks")
  return 0


if __name__ == "__main__":
  sys.exit(main())
