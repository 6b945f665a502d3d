#!/usr/bin/env bash
# One-shot GPU check (issue 12 item 5): environment, golden parity (float32 + bfloat16) and the streaming
# benchmark of Wan2.1 1.3B at 480x832 (60x104 latents), bf16, per attention kernel and quantisation mode.
# Run from the repository root; everything goes under ${OUT:-out}. Budget: under 8 minutes on one H200
# (each step has its own `timeout`, and a step that would start with too little of the budget left is
# skipped). Conventions and notes:
#   * The device machine has no internet. Its image has python3 with jax (0.11.x, CUDA 13 plugin), flax,
#     optax, numpy, tokenizers, safetensors, pytest, but not qwix (needed by --quantize). So nothing is
#     pip-installed from a registry: the repository is imported through PYTHONPATH, and missing packages
#     are installed with `pip install --no-index --find-links .wheels` when the caller carried a folder
#     `.wheels` of wheels (e.g. `pip download qwix --no-deps -d .wheels` here, then carry=[".wheels"]).
#     Without them, the quantised runs are skipped and say so. pyproject pins jax<0.11 and flax==0.12.8;
#     the image's versions are used as they are (recorded in env.txt).
#   * Golden cases: $LONGLIVE_GOLDEN_DIR, else shared/golden, else .golden (../shared does not travel to
#     the device: copy it into an ignored .golden and carry it), else ../shared/golden. Without them the
#     float32 parity step is skipped.
#   * Bench runs: --blocks 16 --paired-rounds 3 (blocks 8 and 15 paired), recache timed on cudnn only.
#     Expected per run: model init ~10 s, block compile 30-60 s, 16 blocks of ~0.2-0.4 s, recache compile
#     ~20-40 s. The "xla" attention run (it materialises a 4.2 GB float32 score tensor per layer call) goes
#     last and is the first dropped: it runs only if at least XLA_MIN_S seconds of the budget remain.
set -euo pipefail

OUT=${OUT:-out}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-470}  # total wall budget (8 min minus a margin)
XLA_MIN_S=${XLA_MIN_S:-110}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # so peak_bytes_in_use reflects the run, not the pool
SECONDS=0

log() { echo "[gpu_check $(printf '%4d' "$SECONDS") s] $*" | tee -a "$OUT/steps.log"; }

# step NAME TIMEOUT_S CMD...: runs CMD with `timeout min(TIMEOUT_S, budget left)`, output to $OUT/NAME.log;
# a failure is logged and the script goes on (the summary shows what is missing).
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - SECONDS))
  if ((left < 20)); then
    log "SKIP $name: only ${left} s of the budget left"
    return 0
  fi
  ((limit > left)) && limit=$left
  log "START $name (timeout ${limit} s): $*"
  local rc=0
  timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  log "END $name rc=$rc"
  tail -n 3 "$OUT/$name.log" | sed 's/^/    /'
  return 0
}

# (a) Environment.
{
  nvidia-smi || echo "nvidia-smi failed"
  "$PY" -c 'import sys, jax, flax; print(sys.version); print("jax", jax.__version__, "flax", flax.__version__); print(jax.devices())'
} >"$OUT/env.txt" 2>&1 || true
cat "$OUT/env.txt"
if ! "$PY" -c 'import jax, sys; sys.exit(jax.devices()[0].platform != "gpu")' 2>/dev/null; then
  log "WARNING: jax sees no GPU; the numbers below are not GPU numbers"
fi
missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("qwix", "flax", "optax") if importlib.util.find_spec(m) is None))
EOF
)
if [[ -n "$missing" && -d .wheels ]]; then
  log "installing from carried .wheels (no index): $missing"
  timeout 120 "$PY" -m pip install --no-index --find-links .wheels $missing >"$OUT/pip.log" 2>&1 || log "pip install failed (see pip.log)"
fi
HAVE_QWIX=1
"$PY" -c 'import qwix' 2>/dev/null || {
  HAVE_QWIX=0
  log "qwix missing (no .wheels carried?): the --quantize runs are skipped"
}

# (b) Golden parity: float32 with highest matmul precision (the golden runner also sets it), then the
# bfloat16 checks (bf16 model against float32, cuDNN attention kernel against the reference).
GOLDEN=""
for d in "${LONGLIVE_GOLDEN_DIR:-}" shared/golden .golden ../shared/golden; do
  [[ -n "$d" && -d "$d" ]] && GOLDEN=$d && break
done
if [[ -n "$GOLDEN" ]]; then
  # `longlive-jax parity` without the CLI module (which imports the streaming/text/toy-world commands too).
  PARITY='import argparse, sys
from longlive_jax.parity import add_parser, cmd_parity
ap = argparse.ArgumentParser()
add_parser(ap.add_subparsers(dest="cmd"))
sys.exit(cmd_parity(ap.parse_args(sys.argv[1:])))'
  step parity_f32 120 env JAX_DEFAULT_MATMUL_PRECISION=highest "$PY" -c "$PARITY" parity \
    --golden "$GOLDEN" --json "$OUT/parity_f32.json"
else
  log "SKIP parity_f32: no golden cases (carry .golden)"
fi
step parity_bf16 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_model.py::test_bfloat16_path_close_to_float32 \
  tests/test_attention.py -k "bfloat16 or cudnn"

# (c) Streaming benchmark, full 1.3B model, bf16, 480x832.
BENCH=(experiments/bench_stream.py --preset wan2.1-t2v-1.3b --dtype bfloat16 --blocks 16 --paired-rounds 3 --warm-runs 2)
step bench_cudnn 170 "$PY" "${BENCH[@]}" --attention cudnn --recache-runs 3 --out "$OUT/bench_cudnn.json"
step bench_chunked 140 "$PY" "${BENCH[@]}" --attention chunked --recache-runs 0 --out "$OUT/bench_chunked.json"
if ((HAVE_QWIX)); then
  step bench_int8 140 "$PY" "${BENCH[@]}" --attention cudnn --quantize int8 --recache-runs 0 --out "$OUT/bench_int8.json"
  step bench_fp8 140 "$PY" "${BENCH[@]}" --attention cudnn --quantize fp8 --recache-runs 0 --out "$OUT/bench_fp8.json"
fi
if ((BUDGET_S - SECONDS >= XLA_MIN_S)); then
  step bench_xla 140 "$PY" "${BENCH[@]}" --attention xla --recache-runs 0 --out "$OUT/bench_xla.json"
else
  log "SKIP bench_xla: $((BUDGET_S - SECONDS)) s left < XLA_MIN_S=$XLA_MIN_S (dropped first by design)"
fi

# (d) Summary table from the JSONs.
"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import glob, json, os, sys

out = sys.argv[1]
p = os.path.join(out, "parity_f32.json")
if os.path.exists(p):
  cases = json.load(open(p))
  print("parity f32:", ", ".join(f"{c.get('case')}={c.get('status')}" for c in cases) if isinstance(cases, list) else cases)
cols = ("run", "video fps", "block ms", "b200/b10", "TTFF s", "recache ms", "compile s", "peak GB", "TFLOP/s", "MFU")
print(" | ".join(cols))
for f in sorted(glob.glob(os.path.join(out, "bench_*.json"))):
  r = json.load(open(f))
  peak = max((m.get("peak_bytes_in_use", 0) for m in r.get("memory", {}).values()), default=0)
  fmt = lambda v, s: "-" if v is None else format(v, s)
  print(" | ".join([
    os.path.basename(f)[6:-5],
    fmt(r.get("video_frames_per_s"), ".1f"),
    fmt(r.get("steady_block_ms"), ".1f"),
    fmt(r.get("paired_ratio_block200_over_block10"), ".3f"),
    fmt(r.get("first_block_seconds_warm"), ".3f"),
    fmt(r.get("recache_ms"), ".1f"),
    fmt(r.get("compile_seconds"), ".1f"),
    fmt(peak / 1e9, ".2f"),
    fmt(r.get("achieved_tflops"), ".1f"),
    fmt(r.get("mfu"), ".3f"),
  ]))
EOF
log "done in $SECONDS s"
