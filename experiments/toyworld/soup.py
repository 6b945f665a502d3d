"""Weight interpolation between two exports of the same DiT (a "model soup"): ``(1 - alpha) * A + alpha * B``,
written as a DiT export with A's config and meta (plus the soup's recipe).

Why here: Stage 2 (streaming long tuning) starts from Stage 1's export and trades shape for the long videos'
motion (README: circles right in 68% of Stage 1's windows, 55% of Stage 2's). A point on the line between the
two keeps part of each, at no training cost; judged like any other model by ``evaluate.py --model``.

  python experiments/toyworld/soup.py --a runs/toyworld/streaming_long_2/export \\
      --b runs/toyworld/self_forcing/export --alpha 0.5 --out runs/toyworld/soup_050/export
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--a", required=True, help="DiT export (alpha = 0)")
  ap.add_argument("--b", required=True, help="DiT export of the same architecture (alpha = 1)")
  ap.add_argument("--alpha", type=float, required=True)
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  from longlive_jax import checkpoint

  cfg_a, pa, _, info_a = checkpoint.load(a.a, dtype="float32")
  cfg_b, pb, _, _ = checkpoint.load(a.b, dtype="float32")
  if cfg_a != cfg_b:  # the same config means the same parameter tree (checkpoint.load checks every shape)
    print(f"soup: {a.a} and {a.b} have different configs", file=sys.stderr)
    return 2
  mixed = jax.tree.map(
    lambda x, y: (1.0 - a.alpha) * np.asarray(x, np.float32) + a.alpha * np.asarray(y, np.float32), pa, pb
  )
  meta = {**(info_a.get("meta") or {}), "soup": {"a": a.a, "b": a.b, "alpha": a.alpha}}
  checkpoint.save(a.out, cfg=cfg_a, params=mixed, meta=meta, overwrite=True)
  print(f"wrote {a.out}: (1 - {a.alpha}) * {a.a} + {a.alpha} * {a.b}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
