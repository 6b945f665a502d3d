"""Parity with the golden reference cases produced by the original PyTorch code.

Each case folder holds ``case.json`` (``kind``, ``config``, ``arrays``, ``tolerance``), weights under
upstream key names, ``inputs.npz`` and ``outputs.npz``. Arrays are taken as ``case.json``'s ``arrays``
section describes them: every declared array must be in the file it names with the declared shape and
dtype, every array of those files must be declared, the arrays of ``outputs.npz`` are the references,
and a runner can only compare against a declared reference.

* :func:`run_case` runs one case strictly (errors propagate; the tests use it);
* :func:`check_case` runs one case in isolation and never raises: a case that cannot run becomes a
  failed :class:`CaseResult` with a one-line reason (what ``longlive-jax parity`` uses).

Kinds not implemented raise :class:`UnsupportedKind` (never a silent skip).

This module holds the runners (one per kind) and the two ways of running a case; the case-file layer
(discovery, ``case.json`` validation, array loading, comparison) lives in :mod:`longlive_jax.golden_case`
and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import layout, schedule
from longlive_jax.config import WanConfig
from longlive_jax.convert import lora as lora_lib
from longlive_jax.convert import sources, wan_dit
from longlive_jax.golden_case import (  # noqa: F401  (re-exported: the case-file layer lives there)
  CASE_FILE,
  DEFAULT_DIR,
  INPUTS,
  OUTPUTS,
  PLANNED_KINDS,
  CaseArrays,
  CaseError,
  CaseResult,
  Comparison,
  UnsupportedKind,
  _first_line,
  _is_number,
  _sha256,
  case_file,
  check_files,
  compare,
  comparer,
  discover,
  golden_dir,
  load_arrays,
  read_case,
  tolerance,
  validate_case,
)
from longlive_jax.model import lora as model_lora
from longlive_jax.model.params import model_from_params, params_of


def model_config(case_cfg: dict) -> WanConfig:
  """The WanConfig of a case's (upstream-named) model config."""
  names = {f.name for f in dataclasses.fields(WanConfig)}
  return WanConfig.from_upstream({k: v for k, v in case_cfg.items() if k in names or k == "model_type"})


# ------------------------------------------------------------------------------------------------
# Runners: (case_dir, case) -> comparisons, one per kind


def _run_wan_dit_forward(case_dir: Path, case: dict) -> list[Comparison]:
  """One bidirectional forward, through the batched array path and through upstream's list API."""
  kind = case["kind"]
  arrays = load_arrays(case_dir, case)
  cmp = comparer(case, arrays)
  out = arrays.sole_output(kind)
  cfg = model_config(case["config"])
  model = model_from_params(cfg, wan_dit.convert(sources.open_state_dict(case_file(case_dir, case)), cfg))
  x = jnp.asarray(layout.from_wan(arrays.input("x", kind)))  # [B, F, H, W, C]
  t = jnp.asarray(arrays.input("t", kind))
  context = arrays.input("context", kind)
  b, f, h, w, _ = x.shape
  _, ph, pw = cfg.patch_size
  tokens = f * (h // ph) * (w // pw)
  seq_len = int(arrays.inputs["seq_len"]) if "seq_len" in arrays.inputs else tokens
  if seq_len < tokens:
    raise CaseError(f"{INPUTS}: seq_len {seq_len} is shorter than a sample's {tokens} tokens")
  # Upstream receives each prompt trimmed to its length and zero-pads it itself.
  lens = arrays.inputs.get("context_lens", np.full((b,), context.shape[1]))
  trimmed = [jnp.asarray(context[i, : int(n)]) for i, n in enumerate(lens)]
  seq_lens = jnp.full((b,), tokens, jnp.int32)
  with jax.default_matmul_precision("highest"):
    y = jax.jit(lambda m, x, t, c, s: m(x, t, c, seq_lens=s))(model, x, t, jnp.asarray(context), seq_lens)
    ys = jax.jit(lambda m, xs, t, cs: m(xs, t, cs, seq_len=seq_len))(model, list(x), t, trimmed)
  return [
    cmp(out, layout.to_wan(np.asarray(y))),
    cmp(out, layout.to_wan(np.stack([np.asarray(v) for v in ys])), label=f"{out} (list API, seq_len {seq_len})"),
  ]


def _causal_first_call(model, noise_btchw: np.ndarray, context: np.ndarray, t: float):
  """Block 0, step 0 of the causal generator with a fresh cache: keys = the block's own frames."""
  x = jnp.asarray(layout.from_longlive(noise_btchw))
  with jax.default_matmul_precision("highest"):
    v = _first_call_jit(model, x, jnp.asarray(context), jnp.float32(t))
  return np.asarray(layout.to_longlive(v))


@jax.jit
def _first_call_jit(m, x, ctx, t):
  """One jitted program shared by every model of the same shape (models are pytree arguments)."""
  ck, cv = m.cross_kv(ctx)
  f = x.shape[1]
  v, _, _ = m.forward_tokens(
    x, jnp.full(x.shape[:2], t, jnp.float32), cross_k=ck, cross_v=cv, frame_pos=jnp.arange(f, dtype=jnp.int32)
  )
  return v


def _denoising_schedule(case: dict, cmp) -> tuple[np.ndarray, np.ndarray, list[Comparison]]:
  """Our warped few-step ``(timesteps, sigmas)`` of the case's pipeline, compared when the case has them."""
  pipe = case["config"]["pipeline"]
  ts, sigmas = schedule.warped_steps(tuple(pipe["denoising_step_list"]), shift=pipe["model_kwargs"]["timestep_shift"])
  res = []
  for name, got in (("denoising_timesteps", ts), ("denoising_sigmas", sigmas)):
    if case["arrays"].get(name, {}).get("file") == OUTPUTS:
      res.append(cmp(name, got))
  return ts, sigmas, res


def _run_longlive_lora(case_dir: Path, case: dict) -> list[Comparison]:
  kind = case["kind"]
  arrays = load_arrays(case_dir, case)
  cmp = comparer(case, arrays)
  cfg = model_config(case["config"]["model"])
  base = sources.open_state_dict(case_file(case_dir, case))
  peft = lora_lib.read_peft_lora(case_file(case_dir, case, "lora.pt"), alpha=case["config"]["adapter"]["alpha"])
  ts, sigmas, res = _denoising_schedule(case, cmp)
  sigma, t = float(sigmas[0]), float(ts[0])
  noise, ctx = arrays.input("noise", kind), arrays.input("prompt_embeds", kind)
  merged = model_from_params(cfg, wan_dit.convert(lora_lib.MergedSource(base, peft), cfg))
  plain_params = wan_dit.convert(base, cfg)
  plain = model_from_params(cfg, plain_params)
  flow = _causal_first_call(merged, noise, ctx, t)
  flow_plain = _causal_first_call(plain, noise, ctx, t)
  # The separate adapter merged on the fly in JAX (the training path) must agree too.
  adapter = jax.tree.map(jnp.asarray, lora_lib.adapter_tree(peft, cfg))
  on_the_fly = model_from_params(cfg, model_lora.merge(params_of(plain), adapter, scale=peft.scale))
  flow_sep = _causal_first_call(on_the_fly, noise, ctx, t)
  return res + [
    cmp("flow_pred", flow),
    cmp("flow_pred_no_lora", flow_plain),
    cmp("flow_pred", flow_sep, label="flow_pred (separate adapter)"),
    cmp("x0_pred", noise - sigma * flow),
  ]


def _run_stream(case_dir: Path, case: dict) -> list[Comparison]:
  """``longlive_causal_stream`` / ``longlive_interactive_stream`` / ``longlive_infinity_stream``."""
  from longlive_jax.stream.cache import StreamSpec
  from longlive_jax.stream.driver import Streamer, Switch

  kind = case["kind"]
  arrays = load_arrays(case_dir, case)
  cmp = comparer(case, arrays)
  cfg = model_config(case["config"]["model"])
  pipe = case["config"]["pipeline"]
  mk = pipe["model_kwargs"]
  # LongLive's own container when the case ships one (it tests that format), else the plain weights.
  container = "longlive_base.pt" if "longlive_base.pt" in (case.get("files") or {}) else None
  src = sources.open_state_dict(case_file(case_dir, case, container))
  model = model_from_params(cfg, wan_dit.convert(src, cfg))
  noise = jnp.asarray(layout.from_longlive(arrays.input("noise", kind)))  # [B, T, H, W, C]
  b, t, h, w, _ = noise.shape
  n = pipe["num_frame_per_block"]
  spec = StreamSpec(
    block_frames=n,
    sink_frames=mk["sink_size"],
    window_frames=mk["local_attn_size"],
    tokens_per_frame=(h // 2) * (w // 2),
    relative_rope=bool(mk.get("use_infinite_attention", False)),
  )
  renoise = jnp.asarray(arrays.input("renoise", kind)).transpose(0, 1, 2, 3, 5, 6, 4)  # [nb, steps-1, B, n, H, W, C]
  pe = arrays.input("prompt_embeds", kind)
  contexts = [pe] if pe.ndim == 3 else list(pe)
  switches = [Switch(int(f), i + 1) for i, f in enumerate(pipe.get("switch_frame_indices", []))]
  _, _, res = _denoising_schedule(case, cmp)
  with jax.default_matmul_precision("highest"):
    streamer = Streamer(
      model,
      spec,
      step_list=pipe["denoising_step_list"],
      shift=mk["timestep_shift"],
      context_t=float(pipe["context_noise"]),
      global_sink=bool(pipe.get("global_sink", True)),
    )
    blocks, steps = [], []
    for _, x0, info in streamer.stream(noise, renoise, contexts, switches):
      blocks.append(np.asarray(x0))
      steps.append(np.asarray(info["x0_steps"]))
  res.append(cmp("latents", layout.to_longlive(np.concatenate(blocks, axis=1))))
  steps = np.stack(steps)  # [nb, steps, B, n, H, W, C]
  if "x0_steps" in arrays.outputs:
    res.append(cmp("x0_steps", steps[:, :-1].transpose(0, 1, 2, 3, 6, 4, 5)))
  if "x0_step0" in arrays.outputs:
    res.append(cmp("x0_step0", steps[:, 0].transpose(0, 1, 2, 5, 3, 4)))
  return res


def _lazy(module: str) -> Callable[[Path, dict], list[Comparison]]:
  """A runner living in ``module.run_golden`` (imported on first use: the model families stay independent)."""

  def run(case_dir: Path, case: dict) -> list[Comparison]:
    return importlib.import_module(module).run_golden(case_dir, case)

  run.module = module
  return run


RUNNERS: dict[str, Callable[[Path, dict], list[Comparison]]] = {
  "wan_dit_forward": _run_wan_dit_forward,
  "longlive_lora": _run_longlive_lora,
  "longlive_causal_stream": _run_stream,
  "longlive_interactive_stream": _run_stream,
  "longlive_infinity_stream": _run_stream,
  "umt5_encoder": _lazy("longlive_jax.text.golden_case"),
  "wan_vae": _lazy("longlive_jax.vae.golden_case"),
  "flow_scheduler": _lazy("longlive_jax.train.golden_cases"),
  "dmd_loss": _lazy("longlive_jax.train.golden_cases"),
}


# ------------------------------------------------------------------------------------------------
# Running cases


def run_case(case_dir: str | Path, case: dict | None = None) -> CaseResult:
  """Runs one case strictly: :class:`UnsupportedKind`, :class:`CaseError` and runner errors propagate.

  Before the runner: ``case.json`` is validated, the files it names are checked (sha256) and every array is
  loaded as described. After: every comparison must name a declared output; declared outputs that no
  comparison covers are listed in ``not_compared``.
  """
  start = time.perf_counter()
  case_dir = Path(case_dir)
  case = read_case(case_dir) if case is None else case
  kind = case["kind"]
  runner = RUNNERS.get(kind)
  if runner is None:
    raise UnsupportedKind(kind, case_dir)
  validate_case(case)
  check_files(case_dir, case)
  declared = set(load_arrays(case_dir, case).outputs)
  comparisons = list(runner(case_dir, case))
  if not comparisons:
    raise CaseError(f"kind {kind!r}: nothing was compared")
  unknown = sorted({c.reference for c in comparisons} - declared)
  if unknown:
    raise CaseError(f"compared {', '.join(map(repr, unknown))}, which {CASE_FILE} does not declare in {OUTPUTS}")
  not_compared = sorted(declared - {c.reference for c in comparisons})
  return CaseResult(case_dir.name, kind, comparisons, not_compared=not_compared, seconds=time.perf_counter() - start)


def _where(e: BaseException) -> str:
  """`` (at file.py:LINE in func)`` of the innermost frame outside installed libraries (jax, numpy...)."""
  frames = traceback.extract_tb(e.__traceback__)
  if not frames:
    return ""
  ours = [f for f in frames if not {"site-packages", "dist-packages"} & set(Path(f.filename).parts)]
  f = (ours or frames)[-1]
  return f" (at {Path(f.filename).name}:{f.lineno} in {f.name})"


def check_case(case_dir: str | Path) -> CaseResult:
  """Runs one case in isolation; never raises (except KeyboardInterrupt / SystemExit).

  An unsupported kind gives ``status="unsupported"``; any error gives ``status="failed"`` with a one-line
  ``reason`` (the message of a :class:`CaseError`, else the exception type, message and where it was raised).
  """
  start = time.perf_counter()
  case_dir = Path(case_dir)
  kind = None
  try:
    case = read_case(case_dir)
    kind = case["kind"]
    return run_case(case_dir, case)
  except UnsupportedKind as e:
    return CaseResult(case_dir.name, kind, [], "unsupported", e.reason, seconds=time.perf_counter() - start)
  except CaseError as e:
    reason = _first_line(e)
  except Exception as e:
    reason = f"{type(e).__name__}: {_first_line(e)}{_where(e)}"
  return CaseResult(case_dir.name, kind, [], "failed", reason, seconds=time.perf_counter() - start)
