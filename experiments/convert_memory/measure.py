"""Peak memory and time of ``longlive-jax convert`` on a synthetic full-size Wan2.1-T2V-1.3B checkpoint.

Writes a checkpoint with the real 825 keys and shapes of the 1.3B DiT (``wan_dit.expected_shapes`` of
the ``wan2.1-t2v-1.3b`` preset) and random bfloat16 values, as ``diffusion_pytorch_model.safetensors``
and as a LongLive ``{"generator": {"model.<key>": ...}}`` torch file (both written tensor by tensor),
then runs ``convert`` on each in a child process and records its peak RSS (``ru_maxrss`` of that child
from ``os.wait4``), wall and CPU time. A watchdog kills a child whose RSS passes ``--cap-gb`` (the
machine is shared). Everything written is deleted at the end.

  nice -n 19 python experiments/convert_memory/measure.py
  # also the code before streaming conversion, for comparison (an export of an older tree):
  git archive <commit> longlive_jax | tar -x -C /tmp/old && \\
    nice -n 19 python experiments/convert_memory/measure.py --baseline-code /tmp/old

Result: experiments/results/convert_memory.json.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np

from longlive_jax.config import get_preset
from longlive_jax.convert import torch_save, wan_dit

REPO = Path(__file__).resolve().parents[2]
PRESET = "wan2.1-t2v-1.3b"


def write_safetensors(path: Path, shapes: dict, seed: int) -> None:
  """A bf16 safetensors file written one tensor at a time (the same values for the same seed)."""
  header, offset = {}, 0
  for k, s in shapes.items():
    n = int(np.prod(s)) * 2
    header[k] = {"dtype": "BF16", "shape": list(s), "data_offsets": [offset, offset + n]}
    offset += n
  raw = json.dumps(header).encode()
  raw += b" " * (-len(raw) % 8)
  with open(path, "wb") as fh:
    fh.write(struct.pack("<Q", len(raw)) + raw)
    for k, s in shapes.items():
      fh.write(_values(k, s, seed).tobytes())


def _values(key: str, shape, seed: int) -> np.ndarray:
  rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
  return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)


class _Ref:
  """Pickles as a torch tensor over storage ``key`` (contiguous), like torch_save's own tensors."""

  def __init__(self, key: str, shape):
    self.key, self.shape = key, tuple(shape)

  def __reduce__(self):
    stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
    numel = int(np.prod(self.shape))
    storage = ("storage", torch_save._Global("torch", "BFloat16Storage"), self.key, "cpu", numel)
    return torch_save._Global("torch._utils", "_rebuild_tensor_v2"), (
      storage,
      0,
      self.shape,
      stride,
      False,
      collections.OrderedDict(),
    )


def write_longlive_pt(path: Path, shapes: dict, seed: int) -> None:
  """LongLive's ``{"generator": {"model.<key>": tensor}}`` container, each storage streamed into the zip."""
  refs = collections.OrderedDict((f"model.{k}", _Ref(str(i), s)) for i, (k, s) in enumerate(shapes.items()))
  buf = io.BytesIO()
  torch_save._Pickler(buf, protocol=2).dump({"generator": refs})
  with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr("archive/version", "3\n")
    for i, (k, s) in enumerate(shapes.items()):
      with zf.open(f"archive/data/{i}", "w", force_zip64=True) as fh:
        fh.write(_values(k, s, seed).tobytes())


def _rss_kb(pid: int) -> int:
  try:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
      if line.startswith("VmRSS:"):
        return int(line.split()[1])
  except OSError:
    pass
  return 0


def run_convert(args: list[str], *, code: Path, cap_gb: float, logs: Path) -> dict:
  """Runs ``longlive-jax convert ARGS`` with ``code`` first on the path; its peak RSS, times, exit code."""
  env = dict(os.environ, PYTHONPATH=str(code))
  code_check = f"import longlive_jax; assert longlive_jax.__file__.startswith({str(code)!r}), longlive_jax.__file__"
  cmd = [
    sys.executable,
    "-c",
    f"import sys; {code_check}; from longlive_jax.cli import main; sys.exit(main(sys.argv[1:]))",
  ]
  t0 = time.time()
  with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
    # cwd: not the repository (python -c puts the cwd first on sys.path, ahead of PYTHONPATH)
    proc = subprocess.Popen(cmd + ["convert", *args, "--quiet"], env=env, stdout=out, stderr=err, cwd=logs)
  done, killed, timeline = threading.Event(), [], []

  def watchdog():  # reads /proc only: it must not reap the child (os.wait4 below does, for its rusage)
    while not done.wait(0.2):
      rss = _rss_kb(proc.pid)
      timeline.append((time.time() - t0, rss))
      if rss > cap_gb * 2**20:
        killed.append(True)
        os.kill(proc.pid, signal.SIGKILL)
        return

  threading.Thread(target=watchdog, daemon=True).start()
  _, status, usage = os.wait4(proc.pid, 0)
  done.set()
  proc.returncode = os.waitstatus_to_exitcode(status)
  return {
    "exit_code": proc.returncode,
    "killed_over_cap_gb": cap_gb if killed else None,
    "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    "wall_s": round(time.time() - t0, 1),
    "user_s": round(usage.ru_utime, 1),
    "sys_s": round(usage.ru_stime, 1),
    # RSS sampled while it ran (seconds, MB), thinned to about 40 points: flat = bounded, not growing
    "rss_timeline_mb": [(round(t, 1), round(kb / 1024)) for t, kb in timeline[:: max(1, len(timeline) // 40)]],
    "stdout_tail": (logs / "stdout").read_text(errors="replace")[-600:],
    "stderr_tail": (logs / "stderr").read_text(errors="replace")[-600:],
  }


def _du(path: Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--work", default=None, help="scratch folder (default: a temporary folder under /work)")
  ap.add_argument("--baseline-code", default=None, help="a tree holding an older longlive_jax to measure too")
  ap.add_argument("--cap-gb", type=float, default=16.0, help="kill a conversion whose RSS passes this")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--preset", default=PRESET, help="model size (a smaller one for a quick check of the script)")
  ap.add_argument("--runs", default="st,pt,st-bf16", help="of st (safetensors), pt (LongLive .pt), st-bf16")
  ap.add_argument("--out", default=str(REPO / "experiments/results/convert_memory.json"))
  a = ap.parse_args()

  preset = a.preset
  cfg = get_preset(preset)
  shapes = wan_dit.expected_shapes(cfg)
  n_params = sum(int(np.prod(s)) for s in shapes.values())
  largest = max(shapes.items(), key=lambda kv: int(np.prod(kv[1])))
  du = shutil.disk_usage("/work")
  need = n_params * 2 * 2 + n_params * 4 * 2  # two sources (bf16) + one float32 output (with margin)
  print(f"{preset}: {len(shapes)} keys, {n_params:,} parameters; /work has {du.free / 2**30:.1f} GiB free")
  if du.free < need:
    raise SystemExit(f"not enough disk: need about {need / 2**30:.1f} GiB")
  work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="convert_memory-", dir="/work"))
  work.mkdir(parents=True, exist_ok=True)
  results: dict = {
    "preset": preset,
    "num_keys": len(shapes),
    "num_params": n_params,
    "largest_tensor": {
      "key": largest[0],
      "shape": list(largest[1]),
      "bf16_mb": round(np.prod(largest[1]) * 2 / 2**20, 1),
    },
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    "runs": [],
  }
  try:
    t = time.time()
    wan = work / "wan"
    wan.mkdir()
    write_safetensors(wan / "diffusion_pytorch_model.safetensors", shapes, a.seed)
    pt = work / "longlive_base.pt"
    if "pt" in a.runs.split(","):
      write_longlive_pt(pt, shapes, a.seed)
    results["source_files"] = {
      "safetensors_mb": round((wan / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20, 1),
      "pt_mb": round(pt.stat().st_size / 2**20, 1) if pt.exists() else None,
      "write_s": round(time.time() - t, 1),
    }
    print("sources written:", results["source_files"])
    known = {
      "st": ("streaming (this tree)", REPO, "safetensors", wan, []),
      "pt": ("streaming (this tree)", REPO, "longlive .pt", pt, []),
      "st-bf16": ("streaming (this tree)", REPO, "safetensors", wan, ["--dtype", "bfloat16"]),
    }
    runs = [known[r] for r in a.runs.split(",") if r]
    if a.baseline_code:
      runs.append(("baseline", Path(a.baseline_code), "safetensors", wan, []))
    for label, code, fmt, src, extra in runs:
      out = work / "ckpt"
      print(f"converting {fmt} {' '.join(extra)} with {label} ...", flush=True)
      r = run_convert([str(src), "--config", preset, "--out", str(out), *extra], code=code, cap_gb=a.cap_gb, logs=work)
      r.update(code=label, source=fmt, options=" ".join(extra) or "default (float32 params)")
      if out.exists():
        r["output_mb"] = round(_du(out) / 2**20, 1)
        shutil.rmtree(out)
      print(json.dumps({k: v for k, v in r.items() if not k.endswith(("_tail", "timeline_mb"))}), flush=True)
      results["runs"].append(r)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  results["load_average_after"] = os.getloadavg()
  Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
  print("wrote", a.out)


if __name__ == "__main__":
  main()
