"""Weight averages of exports of the same DiT (a "model soup"): ``(1 - alpha) * A + alpha * B``, or any weighted
mean ``sum_i w_i * X_i / sum_i w_i`` of several exports, written as a DiT export with the first one's config and meta
(plus the soup's recipe).

Why here: Stage 2 runs from one start (same data, other steps, seeds or prompt weights) land in one basin, and a
point between them keeps what each does best at no training cost (README: the shipped DiT is such an average);
judged like any other model by ``evaluate.py --model``.

  python experiments/toyworld/soup.py --a runs/toyworld/streaming_long_2/export \\
      --b runs/toyworld/self_forcing/export --alpha 0.5 --out runs/toyworld/soup_050/export
  python experiments/toyworld/soup.py --mix runs/toyworld/A/export --mix runs/toyworld/B/export=2 \\
      --out runs/toyworld/soup_ab/export   # one third A, two thirds B (a weight after '=', default 1)
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np


def _parse_mix(spec: str) -> tuple[str, float]:
  """``PATH`` or ``PATH=WEIGHT`` -> (path, weight)."""
  path, sep, w = spec.rpartition("=")
  if not sep:
    return spec, 1.0
  try:
    weight = float(w)
  except ValueError:
    raise argparse.ArgumentTypeError(f"--mix {spec!r}: the weight after '=' must be a number") from None
  if not weight > 0:
    raise argparse.ArgumentTypeError(f"--mix {spec!r}: the weight must be > 0")
  return path, weight


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--a", help="DiT export (alpha = 0)")
  ap.add_argument("--b", help="DiT export of the same architecture (alpha = 1)")
  ap.add_argument("--alpha", type=float)
  ap.add_argument(
    "--mix",
    type=_parse_mix,
    action="append",
    metavar="PATH[=WEIGHT]",
    help="an ingredient (repeat; instead of --a/--b)",
  )
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  if a.mix and (a.a or a.b or a.alpha is not None):
    ap.error("give either --mix (repeated) or --a, --b and --alpha")
  if not a.mix:
    if not (a.a and a.b and a.alpha is not None):
      ap.error("--a, --b and --alpha are required without --mix")
    a.mix = [(a.a, 1.0 - a.alpha), (a.b, a.alpha)]
  if len(a.mix) < 2:
    ap.error("a soup needs at least two --mix ingredients")
  from longlive_jax import checkpoint

  total = sum(w for _, w in a.mix)
  cfg0, acc, info0 = None, None, None
  for path, w in a.mix:
    cfg, params, _, info = checkpoint.load(path, dtype="float32")
    if cfg0 is None:
      cfg0, info0 = cfg, info
    elif cfg != cfg0:  # the same config means the same parameter tree (checkpoint.load checks every shape)
      print(f"soup: {path} and {a.mix[0][0]} have different configs", file=sys.stderr)
      return 2
    scaled = jax.tree.map(lambda x, w=w: (w / total) * np.asarray(x, np.float32), params)
    acc = scaled if acc is None else jax.tree.map(np.add, acc, scaled)
  recipe = {"a": a.a, "b": a.b, "alpha": a.alpha} if a.a else {"mix": [[p, w / total] for p, w in a.mix]}
  meta = {**(info0.get("meta") or {}), "soup": recipe}
  checkpoint.save(a.out, cfg=cfg0, params=acc, meta=meta, overwrite=True)
  print(f"wrote {a.out}: " + " + ".join(f"{w / total:.4g} * {p}" for p, w in a.mix))
  return 0


if __name__ == "__main__":
  sys.exit(main())
