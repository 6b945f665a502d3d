"""Keeps a trained stage's DiT export in the repository at bfloat16, and puts it back where the configs read it.

  python experiments/toyworld/snapshot.py save runs/toyworld/teacher/export artifacts/toyworld/teacher
  python experiments/toyworld/snapshot.py restore artifacts/toyworld/teacher runs/toyworld/teacher/export

Why: the teacher costs the recipe's longest stage (README), and the later stages, the evaluation's ceiling row
and the ablations all start from it; a copy under ``artifacts/`` (half the size of the float32 export) lets them
run without training it again. ``restore`` writes a float32 export (the master weights every stage trains in),
so a restored teacher is the saved one rounded to bfloat16 once.

``restore --pos-grid H W`` also adds learned absolute positions (``WanConfig.pos_grid``, zero, so the model
computes the same) to an export that has none: the way a RoPE-only teacher goes on training with them.
``restore --pos-frames N`` likewise adds a zero table of learned frame positions (``WanConfig.pos_frames``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np


def copy(
  src: str, dst: str, *, dtype: str, overwrite: bool, pos_grid: tuple[int, int] | None = None, pos_frames: int = 0
) -> Path:
  from longlive_jax import checkpoint

  cfg, params, adapter, info = checkpoint.load(src)
  if adapter is not None:
    raise SystemExit(f"error: {src} keeps a separate LoRA adapter; export it merged first")
  params = jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)
  if pos_grid is not None:
    if any(cfg.pos_grid):
      raise SystemExit(f"error: {src} already has learned positions (pos_grid {cfg.pos_grid})")
    cfg = cfg.replace(pos_grid=tuple(pos_grid))
    params = {
      **params,
      "pos_embedding": np.zeros((*pos_grid, cfg.dim), dtype),
      "first_frame_embedding": np.zeros(cfg.dim, dtype),
    }
  if pos_frames:
    if cfg.pos_frames:
      raise SystemExit(f"error: {src} already has learned frame positions (pos_frames {cfg.pos_frames})")
    cfg = cfg.replace(pos_frames=pos_frames)
    params = {**params, "frame_embedding": np.zeros((pos_frames, cfg.dim), dtype)}
  meta = {**info.get("meta", {}), "snapshot_of": str(src), "snapshot_dtype": dtype}
  return checkpoint.save(dst, cfg=cfg.replace(param_dtype=dtype), params=params, meta=meta, overwrite=overwrite)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("action", choices=("save", "restore"))
  p.add_argument("src")
  p.add_argument("dst")
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--pos-grid", type=int, nargs=2, metavar=("H", "W"), help="restore: add zero learned positions")
  p.add_argument("--pos-frames", type=int, default=0, metavar="N", help="restore: add zero learned frame positions")
  a = p.parse_args(argv)
  if (a.pos_grid or a.pos_frames) and a.action != "restore":
    p.error("--pos-grid / --pos-frames go with restore")
  if not Path(a.src).is_dir():
    print(f"error: {a.src}: no such checkpoint folder", file=sys.stderr)
    return 2
  dtype = "bfloat16" if a.action == "save" else "float32"
  out = copy(a.src, a.dst, dtype=dtype, overwrite=a.overwrite, pos_grid=a.pos_grid, pos_frames=a.pos_frames)
  size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
  print(f"wrote {out}: {size / 2**20:.1f} MiB")
  return 0


if __name__ == "__main__":
  sys.exit(main())
