"""Parity with the golden reference cases produced by the original PyTorch code.

Each case folder holds ``case.json`` (with a ``kind``), weights under upstream key
names, ``inputs.npz`` and ``outputs.npz``. :func:`run_case` loads the weights
through our converters, runs our implementation and returns the max abs error of
every output against its tolerance. Kinds not implemented yet raise
:class:`UnsupportedKind` naming the issue that brings them: never a silent skip.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import layout
from longlive_jax.config import WanConfig
from longlive_jax.convert import lora as lora_lib
from longlive_jax.convert import sources, wan_dit
from longlive_jax.model import lora as model_lora
from longlive_jax.model.params import model_from_params, params_of

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "golden"

# Kinds that later issues bring (kind -> issue).
PLANNED_KINDS: dict[str, str] = {}


class UnsupportedKind(NotImplementedError):
  def __init__(self, kind: str, case: Path):
    planned = PLANNED_KINDS.get(kind)
    why = f"planned in {planned}" if planned else "unknown kind"
    super().__init__(f"golden case {case.name}: kind {kind!r} is not implemented yet ({why})")
    self.kind = kind


@dataclasses.dataclass
class Comparison:
  name: str
  max_abs_err: float
  atol: float
  rtol: float
  passed: bool


@dataclasses.dataclass
class CaseResult:
  case: str
  kind: str
  comparisons: list[Comparison]

  @property
  def passed(self) -> bool:
    return all(c.passed for c in self.comparisons)


def golden_dir() -> Path:
  """``$LONGLIVE_GOLDEN_DIR``, else ``../shared/golden`` beside the repository (or the working directory)."""
  if "LONGLIVE_GOLDEN_DIR" in os.environ:
    return Path(os.environ["LONGLIVE_GOLDEN_DIR"])
  if DEFAULT_DIR.is_dir():
    return DEFAULT_DIR
  return Path.cwd().parent / "shared" / "golden"


def discover(root: Path | None = None) -> list[Path]:
  root = Path(root) if root is not None else golden_dir()
  return sorted(p.parent for p in root.glob("*/case.json"))


def read_case(case_dir: Path) -> dict:
  return json.loads((Path(case_dir) / "case.json").read_text())


def tolerance(case: dict, name: str) -> dict:
  """The tolerance of one output: ``case["tolerance"]`` overridden by its ``per_array[name]`` entry
  (a dict of atol/rtol, or ``"exact"`` for zero)."""
  tol = case["tolerance"]
  per = tol.get("per_array", {}).get(name)
  if per == "exact":
    return {"atol": 0.0, "rtol": 0.0}
  return {**tol, **per} if isinstance(per, dict) else tol


def compare(name: str, got, want, tol: dict) -> Comparison:
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  if got.shape != want.shape:
    raise AssertionError(f"{name}: shape {got.shape} != reference {want.shape}")
  err = float(np.max(np.abs(got - want))) if got.size else 0.0
  atol, rtol = float(tol["atol"]), float(tol["rtol"])
  ok = bool(np.all(np.abs(got - want) <= atol + rtol * np.abs(want)))
  return Comparison(name, err, atol, rtol, ok)


def model_config(case_cfg: dict) -> WanConfig:
  """The WanConfig of a case's (upstream-named) model config."""
  names = {f.name for f in dataclasses.fields(WanConfig)}
  return WanConfig.from_upstream({k: v for k, v in case_cfg.items() if k in names or k == "model_type"})


def _run_wan_dit_forward(case_dir: Path, case: dict) -> list[Comparison]:
  cfg = model_config(case["config"])
  src = sources.open_state_dict(case_dir / "weights.safetensors")
  model = model_from_params(cfg, wan_dit.convert(src, cfg))
  inp, out = np.load(case_dir / "inputs.npz"), np.load(case_dir / "outputs.npz")
  x = jnp.asarray(layout.from_wan(inp["x"]))
  b, f, h, w, _ = x.shape
  tokens = f * (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
  seq_lens = jnp.full((b,), tokens, jnp.int32)
  with jax.default_matmul_precision("highest"):
    y = jax.jit(lambda m, x, t, c, s: m(x, t, c, seq_lens=s))(
      model, x, jnp.asarray(inp["t"]), jnp.asarray(inp["context"]), seq_lens
    )
  return [compare("out", layout.to_wan(np.asarray(y)), out["out"], case["tolerance"])]


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


def _run_longlive_lora(case_dir: Path, case: dict) -> list[Comparison]:
  cfg = model_config(case["config"]["model"])
  tol = case["tolerance"]
  inp, out = np.load(case_dir / "inputs.npz"), np.load(case_dir / "outputs.npz")
  base = sources.open_state_dict(case_dir / "weights.safetensors")
  peft = lora_lib.read_peft_lora(case_dir / "lora.pt", alpha=case["config"]["adapter"]["alpha"])
  sigma = float(out["denoising_sigmas"][0])
  t = float(out["denoising_timesteps"][0])
  noise, ctx = inp["noise"], inp["prompt_embeds"]
  merged = model_from_params(cfg, wan_dit.convert(lora_lib.MergedSource(base, peft), cfg))
  plain_params = wan_dit.convert(base, cfg)
  plain = model_from_params(cfg, plain_params)
  flow = _causal_first_call(merged, noise, ctx, t)
  flow_plain = _causal_first_call(plain, noise, ctx, t)
  # The separate adapter merged on the fly in JAX (the training path) must agree too.
  adapter = jax.tree.map(jnp.asarray, lora_lib.adapter_tree(peft, cfg))
  on_the_fly = model_from_params(cfg, model_lora.merge(params_of(plain), adapter, scale=peft.scale))
  flow_sep = _causal_first_call(on_the_fly, noise, ctx, t)
  return [
    compare("flow_pred", flow, out["flow_pred"], tol),
    compare("flow_pred_no_lora", flow_plain, out["flow_pred_no_lora"], tol),
    compare("flow_pred (separate adapter)", flow_sep, out["flow_pred"], tol),
    compare("x0_pred", noise - sigma * flow, out["x0_pred"], tol),
  ]


RUNNERS: dict[str, Callable[[Path, dict], list[Comparison]]] = {
  "wan_dit_forward": _run_wan_dit_forward,
  "longlive_lora": _run_longlive_lora,
}


def run_case(case_dir: str | Path) -> CaseResult:
  case_dir = Path(case_dir)
  case = read_case(case_dir)
  kind = case.get("kind")
  runner = RUNNERS.get(kind)
  if runner is None:
    raise UnsupportedKind(str(kind), case_dir)
  return CaseResult(case_dir.name, kind, runner(case_dir, case))


def _run_stream(case_dir: Path, case: dict) -> list[Comparison]:
  """``longlive_causal_stream`` / ``longlive_interactive_stream`` / ``longlive_infinity_stream``."""
  from longlive_jax.stream.cache import StreamSpec
  from longlive_jax.stream.driver import Streamer, Switch

  cfg = model_config(case["config"]["model"])
  pipe = case["config"]["pipeline"]
  mk = pipe["model_kwargs"]
  tol = case["tolerance"]
  inp, out = np.load(case_dir / "inputs.npz"), np.load(case_dir / "outputs.npz")
  pt = case_dir / "longlive_base.pt"
  src = sources.open_state_dict(pt if pt.is_file() else case_dir / "weights.safetensors")
  model = model_from_params(cfg, wan_dit.convert(src, cfg))
  noise = jnp.asarray(layout.from_longlive(inp["noise"]))  # [B, T, H, W, C]
  b, t, h, w, _ = noise.shape
  n = pipe["num_frame_per_block"]
  spec = StreamSpec(
    block_frames=n,
    sink_frames=mk["sink_size"],
    window_frames=mk["local_attn_size"],
    tokens_per_frame=(h // 2) * (w // 2),
    relative_rope=bool(mk.get("use_infinite_attention", False)),
  )
  renoise = jnp.asarray(inp["renoise"]).transpose(0, 1, 2, 3, 5, 6, 4)  # [nb, steps-1, B, n, H, W, C]
  pe = inp["prompt_embeds"]
  contexts = [pe] if pe.ndim == 3 else list(pe)
  switches = [Switch(int(f), i + 1) for i, f in enumerate(pipe.get("switch_frame_indices", []))]
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
  latents = layout.to_longlive(np.concatenate(blocks, axis=1))
  res = [compare("latents", latents, out["latents"], tol)]
  steps = np.stack(steps)  # [nb, steps, B, n, H, W, C]
  if "x0_steps" in out:
    got = steps[:, :-1].transpose(0, 1, 2, 3, 6, 4, 5)
    res.append(compare("x0_steps", got, out["x0_steps"], tol))
  if "x0_step0" in out:
    res.append(compare("x0_step0", steps[:, 0].transpose(0, 1, 2, 5, 3, 4), out["x0_step0"], tol))
  return res


RUNNERS.update(
  {
    "longlive_causal_stream": _run_stream,
    "longlive_interactive_stream": _run_stream,
    "longlive_infinity_stream": _run_stream,
  }
)


def _lazy(module: str) -> Callable[[Path, dict], list[Comparison]]:
  """A runner living in ``module.run_golden`` (imported on first use: the model families stay independent)."""

  def run(case_dir: Path, case: dict) -> list[Comparison]:
    return importlib.import_module(module).run_golden(case_dir, case)

  return run


RUNNERS.update(
  {
    "umt5_encoder": _lazy("longlive_jax.text.golden_case"),
    "wan_vae": _lazy("longlive_jax.vae.golden_case"),
    "flow_scheduler": _lazy("longlive_jax.train.golden_cases"),
    "dmd_loss": _lazy("longlive_jax.train.golden_cases"),
  }
)
