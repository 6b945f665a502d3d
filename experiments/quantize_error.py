"""Quantised DiT on the golden weights: weight memory of the quantised layers and output error per mode.

The model is the golden case ``wan_dit_t2v`` (the one case with a whole bidirectional Wan2.1 DiT: width
64, FFN 128, 2 layers, Wan's own key names, random float32 weights), loaded through the project's
converter, run on the case's inputs (2 samples, 3 x 8 x 12 latents, padded text). For every ``--quantize``
mode, quantised from float32 weights computing in float32 and from bfloat16 weights computing in bfloat16
(what ``load_streamer`` does with ``--dtype bfloat16``), the output is compared with the float32 model and
with the bfloat16 model: ``max |d|``, ``max |d| / max |ref|`` and ``rms(d) / rms(ref)``. The bfloat16 model's
own error against float32 is the yardstick. ``fp8_weight_only`` (float8 weights, activations unquantised;
not a CLI mode) separates the cost of FP8 activations from that of FP8 weights.

Weight memory: bytes of the quantised layers' weights (attention q/k/v/o, cross-attention q/k/v/o, FFN;
biases excluded) as float32, bfloat16 and quantised (8-bit values + one float32 scale per output column),
for the golden model and, from shapes alone, for Wan2.1-T2V-1.3B and 14B.

  python experiments/quantize_error.py --out experiments/results/quantize_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import qwix

from longlive_jax import golden, layout
from longlive_jax.config import WAN_T2V_1_3B, WAN_T2V_14B
from longlive_jax.convert import sources, wan_dit
from longlive_jax.model.params import model_from_params
from longlive_jax.model.wan import abstract_model, count_params
from longlive_jax.quant import MODES, QUANT_MODES, QuantMode
from longlive_jax.quant.dit import QUANTIZED_LAYERS, fp8_execution, layer_weight_bytes, quantize_dit, quantized_layers

CASE = "wan_dit_t2v"
EXTRA_MODES = {
  "fp8_weight_only": QuantMode(
    name="fp8_weight_only",
    weight_qtype="float8_e4m3fn",
    act_qtype=None,
    summary="float8_e4m3fn weights, activations unquantised (not a --quantize mode: for comparison)",
  )
}


def load_case(root: Path):
  """The golden DiT (float32), its inputs and the case's reference output (float64-computed upstream)."""
  case_dir = root / CASE
  case = golden.read_case(case_dir)
  arrays = golden.load_arrays(case_dir, case)
  cfg = golden.model_config(case["config"])
  params = wan_dit.convert(sources.open_state_dict(golden.case_file(case_dir, case)), cfg)
  x = jnp.asarray(layout.from_wan(arrays.input("x", case["kind"])))  # [B, F, H, W, C]
  t = jnp.asarray(arrays.input("t", case["kind"]))
  ctx = jnp.asarray(arrays.input("context", case["kind"]))
  b, f, h, w, _ = x.shape
  _, ph, pw = cfg.patch_size
  seq_lens = jnp.full((b,), f * (h // ph) * (w // pw), jnp.int32)
  want = layout.from_wan(arrays.outputs["out"])
  return cfg, params, (x, t, ctx, seq_lens), want


def build(cfg, params, dtype: str):
  """The model computing in ``dtype`` with parameters cast to it, as ``load_streamer`` builds it."""
  cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
  return model_from_params(cfg, jax.tree.map(lambda p: jnp.asarray(p, dtype), params))


_forward = jax.jit(lambda m, x, t, c, s: m(x, t, c, seq_lens=s))


def run(model, inputs) -> np.ndarray:
  return np.asarray(_forward(model, *inputs), np.float64)


def errors(got: np.ndarray, ref: np.ndarray) -> dict:
  d = got - ref
  return {
    "max_abs": float(np.max(np.abs(d))),
    "max_abs_rel": float(np.max(np.abs(d)) / np.max(np.abs(ref))),
    "rms_rel": float(np.sqrt(np.mean(d * d) / np.mean(ref * ref))),
  }


def shape_bytes(cfg) -> dict:
  """Bytes of the quantised layers of a full-size model, from its shapes (nothing allocated)."""
  kernels = [layer.kernel for layer in quantized_layers(abstract_model(cfg)).values()]
  n = sum(math.prod(k.shape) for k in kernels)
  cols = sum(math.prod(k.shape) // k.shape[-2] for k in kernels)  # [L, in, out]: one scale per (L, out)
  return {"float32": 4 * n, "bfloat16": 2 * n, "int8": n + 4 * cols, "fp8": n + 4 * cols, "weights": n}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--golden", default=None, help="golden cases folder (default: $LONGLIVE_GOLDEN_DIR or ../shared)")
  p.add_argument("--out", default="experiments/results/quantize_cpu.json")
  a = p.parse_args(argv)
  jax.config.update("jax_default_matmul_precision", "highest")  # float32 references at full float32
  root = Path(a.golden) if a.golden else golden.golden_dir()
  t0 = time.perf_counter()
  cfg, params, inputs, upstream = load_case(root)

  base = {dt: build(cfg, params, dt) for dt in ("float32", "bfloat16")}
  ref = {dt: run(m, inputs) for dt, m in base.items()}
  modes = {**{m: MODES[m] for m in QUANT_MODES}, **EXTRA_MODES}
  result_errors = {
    "float32 (no quantisation)": {"vs_upstream_float64": errors(ref["float32"], upstream)},
    "bfloat16 (no quantisation)": {"vs_float32": errors(ref["bfloat16"], ref["float32"])},
  }
  memory = {
    "golden": {
      "float32": layer_weight_bytes(base["float32"]),
      "bfloat16": layer_weight_bytes(base["float32"], dtype="bfloat16"),
    }
  }
  for name, mode in modes.items():
    for dt, model in base.items():
      q = quantize_dit(model, mode)
      got = run(q, inputs)
      result_errors[f"{name} on {dt}"] = {
        "vs_float32": errors(got, ref["float32"]),
        "vs_bfloat16": errors(got, ref["bfloat16"]),
        "finite": bool(np.isfinite(got).all()),
      }
      if dt == "float32" and name in ("int8", "fp8"):
        memory["golden"][name] = layer_weight_bytes(q)
  g = memory["golden"]
  g["int8_over_bfloat16"] = g["int8"] / g["bfloat16"]
  g["fp8_over_bfloat16"] = g["fp8"] / g["bfloat16"]
  for label, big in (("wan2.1-t2v-1.3b (from shapes)", WAN_T2V_1_3B), ("wan2.1-t2v-14b (from shapes)", WAN_T2V_14B)):
    s = shape_bytes(big)
    s["int8_over_bfloat16"] = s["int8"] / s["bfloat16"]
    s["share_of_all_parameters"] = s.pop("weights") / count_params(abstract_model(big))
    memory[label] = s

  out = {
    "what": "golden wan_dit_t2v DiT output (flow, [2, 3, 8, 12, 16]) per --quantize mode against the float32 "
    "and bfloat16 models; bytes of the quantised layers' weights (biases excluded)",
    "case": CASE,
    "model": {k: getattr(cfg, k) for k in ("dim", "ffn_dim", "num_layers", "num_heads", "text_dim")},
    "quantised_layers": [f"blocks.{p}" for p in QUANTIZED_LAYERS],
    "modes": {name: m.summary for name, m in modes.items()},
    "errors": result_errors,
    "weight_memory_bytes": memory,
    "fp8_execution": fp8_execution(),
    "notes": [
      "errors: max_abs = max |q - ref|, max_abs_rel = that / max |ref|, rms_rel = rms(q - ref) / rms(ref); "
      "'X on float32' quantises float32 weights and computes in float32, 'X on bfloat16' quantises bfloat16 "
      "weights and computes in bfloat16 (activations, dequantised weights, scales applied in bfloat16)",
      "int8 / fp8 bytes: 1 byte per weight + a float32 scale per output column and layer; the golden model's "
      "input axes are only 64 / 128 long, so its scales add 1/16 - 1/32 (1.3B: 1/1536 - 1/8960)",
      f"fp8 ran {fp8_execution()} here ({jax.default_backend()}): XLA upcasts the float8 operands before the "
      "matmul, same values as FP8 hardware with float32 sums",
    ],
    "env": {
      "backend": jax.default_backend(),
      "device": str(jax.devices()[0]),
      "jax": jax.__version__,
      "qwix": qwix.__version__,
      "python": platform.python_version(),
      "matmul_precision": "highest",
      "seconds": round(time.perf_counter() - t0, 1),
    },
  }
  path = Path(a.out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=2) + "\n")
  for k, v in result_errors.items():
    for against, e in v.items():
      if isinstance(e, dict):
        print(
          f"{k:28s} vs {against:20s} max_abs {e['max_abs']:.3g}  max_rel {e['max_abs_rel']:.3g}  rms_rel {e['rms_rel']:.3g}"
        )
  print(json.dumps(memory, indent=1))
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
