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
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import re
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
from longlive_jax.model import lora as model_lora
from longlive_jax.model.params import model_from_params, params_of

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "golden"
CASE_FILE = "case.json"
INPUTS = "inputs.npz"
OUTPUTS = "outputs.npz"  # the file whose arrays are the references

# Kinds that later issues bring (kind -> issue).
PLANNED_KINDS: dict[str, str] = {}


class UnsupportedKind(NotImplementedError):
  def __init__(self, kind: str, case: Path):
    planned = PLANNED_KINDS.get(kind)
    why = f"planned in {planned}" if planned else "unknown kind"
    self.reason = f"kind {kind!r} is not implemented yet ({why})"
    super().__init__(f"golden case {case.name}: {self.reason}")
    self.kind = kind


class CaseError(Exception):
  """A case that cannot run as its ``case.json`` describes it; the message is one line naming the file or entry."""


@dataclasses.dataclass
class Comparison:
  """One output against its reference.

  ``array`` is the ``case.json`` name compared against; when not given it is ``name`` without a trailing
  `` (variant)`` label (``"x (numpy)"`` compares against ``x``).
  """

  name: str
  max_abs_err: float
  atol: float
  rtol: float
  passed: bool
  array: str | None = None
  note: str = ""

  @property
  def reference(self) -> str:
    if self.array:
      return self.array
    return re.sub(r" \([^()]*\)$", "", self.name)


@dataclasses.dataclass
class CaseResult:
  """``status`` is ``"ok"``, ``"failed"`` or ``"unsupported"``; ``reason`` says why a case did not run."""

  case: str
  kind: str | None
  comparisons: list[Comparison]
  status: str = ""
  reason: str | None = None
  not_compared: list[str] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  def __post_init__(self):
    if not self.status:
      self.status = "ok" if self.comparisons and all(c.passed for c in self.comparisons) else "failed"

  @property
  def passed(self) -> bool:
    return self.status == "ok"

  @property
  def failing(self) -> list[Comparison]:
    return [c for c in self.comparisons if not c.passed]


def golden_dir() -> Path:
  """``$LONGLIVE_GOLDEN_DIR``, else ``../shared/golden`` beside the repository (or the working directory)."""
  if "LONGLIVE_GOLDEN_DIR" in os.environ:
    return Path(os.environ["LONGLIVE_GOLDEN_DIR"])
  if DEFAULT_DIR.is_dir():
    return DEFAULT_DIR
  return Path.cwd().parent / "shared" / "golden"


def discover(root: Path | None = None) -> list[Path]:
  """Case folders: sub-folders with a ``case.json`` or an ``.npz`` file (so a case whose ``case.json`` is
  missing is reported, not skipped)."""
  root = Path(root) if root is not None else golden_dir()
  if not root.is_dir():
    return []
  found = {p.parent for p in root.glob(f"*/{CASE_FILE}")} | {p.parent for p in root.glob("*/*.npz")}
  return sorted(found)


# ------------------------------------------------------------------------------------------------
# case.json: reading and validation


def read_case(case_dir: Path) -> dict:
  """The parsed ``case.json``; :class:`CaseError` when it is missing, unreadable or not a JSON object."""
  path = Path(case_dir) / CASE_FILE
  try:
    text = path.read_text()
  except FileNotFoundError:
    raise CaseError(f"{CASE_FILE}: missing") from None
  except (OSError, UnicodeDecodeError) as e:
    raise CaseError(f"{CASE_FILE}: unreadable ({e})") from None
  try:
    case = json.loads(text)
  except json.JSONDecodeError as e:
    raise CaseError(f"{CASE_FILE}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
  if not isinstance(case, dict):
    raise CaseError(f"{CASE_FILE}: the top level is a JSON {type(case).__name__}, not an object")
  kind = case.get("kind")
  if not isinstance(kind, str) or not kind:
    raise CaseError(f"{CASE_FILE}: 'kind' is missing or not a non-empty string")
  return case


def _is_number(v) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def validate_case(case: dict) -> None:
  """Checks the ``arrays`` and ``tolerance`` sections (the parts the harness relies on)."""
  arrays = case.get("arrays")
  if not isinstance(arrays, dict) or not arrays:
    raise CaseError(f"{CASE_FILE}: 'arrays' is missing or empty (it must describe every input and output array)")
  for name, desc in arrays.items():
    where = f"{CASE_FILE}: arrays[{name!r}]"
    if not isinstance(desc, dict):
      raise CaseError(f"{where} is not an object")
    file = desc.get("file")
    if not isinstance(file, str) or not file.endswith(".npz") or "/" in file or "\\" in file:
      raise CaseError(f"{where}: 'file' must name an .npz file of the case folder, got {file!r}")
    shape = desc.get("shape")
    if shape is not None and not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
      raise CaseError(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    if "dtype" in desc:
      try:
        np.dtype(desc["dtype"])
      except TypeError:
        raise CaseError(f"{where}: unknown dtype {desc['dtype']!r}") from None
  outputs = [n for n, d in arrays.items() if d["file"] == OUTPUTS]
  if not outputs:
    raise CaseError(f"{CASE_FILE}: no array is declared in {OUTPUTS} (nothing to compare)")
  tol = case.get("tolerance")
  if not isinstance(tol, dict) or not _is_number(tol.get("atol")) or not _is_number(tol.get("rtol")):
    raise CaseError(f"{CASE_FILE}: 'tolerance' needs non-negative numbers 'atol' and 'rtol', got {tol!r}")
  per = tol.get("per_array", {})
  if not isinstance(per, dict):
    raise CaseError(f"{CASE_FILE}: tolerance.per_array must be an object")
  for name, v in per.items():
    if name not in outputs:
      raise CaseError(f"{CASE_FILE}: tolerance.per_array[{name!r}] names no array of {OUTPUTS}")
    valid = isinstance(v, dict) and v and all(k in ("atol", "rtol") and _is_number(x) for k, x in v.items())
    if v != "exact" and not valid:
      raise CaseError(f"{CASE_FILE}: tolerance.per_array[{name!r}] must be 'exact' or {{atol, rtol}}, got {v!r}")


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def check_files(case_dir: Path, case: dict) -> None:
  """Every file ``case.json`` names (``weights.file``, ``files``) exists and matches its ``sha256`` when given."""
  named: dict[str, str | None] = {}
  weights = case.get("weights")
  if isinstance(weights, dict) and "file" in weights:
    named[str(weights["file"])] = weights.get("sha256")
  files = case.get("files")
  if isinstance(files, dict):
    for name, desc in files.items():
      named.setdefault(str(name), desc.get("sha256") if isinstance(desc, dict) else None)
  for name, sha in named.items():
    path = Path(case_dir) / name
    if not path.is_file():
      raise CaseError(f"{name}: missing (named in {CASE_FILE})")
    if sha and _sha256(path) != sha:
      raise CaseError(f"{name}: sha256 differs from the one in {CASE_FILE} (corrupt or replaced file)")


def case_file(case_dir: Path, case: dict, name: str | None = None) -> Path:
  """A file of the case: ``name`` (must be declared in ``files`` or be ``weights.file``), else ``weights.file``."""
  weights = case.get("weights") if isinstance(case.get("weights"), dict) else {}
  if name is None:
    if "file" not in weights:
      raise CaseError(f"{CASE_FILE}: 'weights.file' is missing")
    return Path(case_dir) / weights["file"]
  if name != weights.get("file") and name not in (case.get("files") or {}):
    raise CaseError(f"{CASE_FILE}: {name} is not declared (in 'files' or 'weights')")
  return Path(case_dir) / name


# ------------------------------------------------------------------------------------------------
# Arrays, as case.json describes them


@dataclasses.dataclass(frozen=True)
class CaseArrays:
  """Every array of a case by its ``case.json`` name, grouped by the file (role) it lives in."""

  by_file: dict[str, dict[str, np.ndarray]]

  @property
  def inputs(self) -> dict[str, np.ndarray]:
    return self.by_file.get(INPUTS, {})

  @property
  def outputs(self) -> dict[str, np.ndarray]:
    return self.by_file.get(OUTPUTS, {})

  def input(self, name: str, kind: str) -> np.ndarray:
    if name not in self.inputs:
      raise CaseError(f"kind {kind!r} reads the input {name!r}, which {CASE_FILE} does not declare in {INPUTS}")
    return self.inputs[name]

  def sole_output(self, kind: str) -> str:
    if len(self.outputs) != 1:
      raise CaseError(f"kind {kind!r} has one output, {CASE_FILE} declares {sorted(self.outputs)} in {OUTPUTS}")
    return next(iter(self.outputs))


def load_arrays(case_dir: Path, case: dict) -> CaseArrays:
  """Loads every array ``case.json`` declares from the file it names, checking shape and dtype.

  A declared shape ``[]`` also accepts a stored ``[1]`` (same single value); the array is reshaped to the
  declared shape. Arrays in the files that ``case.json`` does not declare are an error (never compared).
  """
  by_file: dict[str, dict[str, dict]] = {}
  for name, desc in case["arrays"].items():
    by_file.setdefault(desc["file"], {})[name] = desc
  out: dict[str, dict[str, np.ndarray]] = {}
  for file, declared in by_file.items():
    path = Path(case_dir) / file
    if not path.is_file():
      raise CaseError(f"{file}: missing ({CASE_FILE} declares {', '.join(sorted(declared))} in it)")
    try:
      with np.load(path, allow_pickle=False) as z:
        stored = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / format errors of a damaged file
      raise CaseError(f"{file}: unreadable ({type(e).__name__}: {_first_line(e)})") from None
    missing = sorted(set(declared) - set(stored))
    if missing:
      raise CaseError(f"{file}: no array {', '.join(map(repr, missing))} (declared in {CASE_FILE})")
    extra = sorted(set(stored) - set(declared))
    if extra:
      raise CaseError(f"{file}: array {', '.join(map(repr, extra))} is not described in {CASE_FILE}")
    arrays = {}
    for name, desc in declared.items():
      a = stored[name]
      want = desc.get("shape")
      if want is not None and list(a.shape) != want:
        if a.size == math.prod(want) and [d for d in a.shape if d != 1] == [d for d in want if d != 1]:
          a = a.reshape(want)
        else:
          raise CaseError(f"{file}: {name!r} has shape {list(a.shape)}, {CASE_FILE} declares {want}")
      if "dtype" in desc and a.dtype != np.dtype(desc["dtype"]):
        raise CaseError(f"{file}: {name!r} has dtype {a.dtype}, {CASE_FILE} declares {desc['dtype']}")
      arrays[name] = a
    out[file] = arrays
  return CaseArrays(out)


def tolerance(case: dict, name: str) -> dict:
  """The tolerance of one output: ``case["tolerance"]`` overridden by its ``per_array[name]`` entry
  (a dict of atol/rtol, or ``"exact"`` for zero)."""
  tol = case["tolerance"]
  per = tol.get("per_array", {}).get(name)
  if per == "exact":
    return {"atol": 0.0, "rtol": 0.0}
  return {**tol, **per} if isinstance(per, dict) else tol


def compare(name: str, got, want, tol: dict, *, array: str | None = None) -> Comparison:
  """``|got - want| <= atol + rtol |want|`` everywhere. A shape mismatch or a non-finite value fails (with a note)."""
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  atol, rtol = float(tol["atol"]), float(tol["rtol"])
  if got.shape != want.shape:
    note = f"shape {list(got.shape)} != reference {list(want.shape)}"
    return Comparison(name, math.inf, atol, rtol, False, array=array, note=note)
  diff = np.abs(got - want)
  ok = bool(np.all(diff <= atol + rtol * np.abs(want)))
  note = ""
  if not np.isfinite(got).all():
    note = f"{int(np.sum(~np.isfinite(got)))} non-finite value(s) in the result"
    err = math.inf
  else:
    err = float(np.max(diff)) if got.size else 0.0
  return Comparison(name, err, atol, rtol, ok, array=array, note=note)


def comparer(case: dict, arrays: CaseArrays) -> Callable[..., Comparison]:
  """``cmp(array, got, label=None)``: ``got`` against the declared reference ``array`` at its tolerance."""

  def cmp(array: str, got, label: str | None = None) -> Comparison:
    if array not in arrays.outputs:
      raise CaseError(f"the runner compares {array!r}, which {CASE_FILE} does not declare in {OUTPUTS}")
    return compare(label or array, got, arrays.outputs[array], tolerance(case, array), array=array)

  return cmp


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


def _first_line(e: BaseException, limit: int = 300) -> str:
  lines = [s.strip() for s in str(e).splitlines() if s.strip()]
  text = lines[0] if lines else repr(e)
  return text if len(text) <= limit else text[: limit - 3] + "..."


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
