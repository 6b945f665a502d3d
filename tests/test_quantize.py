"""Quantised inference (``longlive_jax.quant``, ``--quantize``): close to the float model, really quantised,
half the weight bytes of bfloat16, equal to qwix's own PTQ, wired through the streamer and the CLI.

Error bounds are on ``max |y_q - y| / max |y|`` of the bidirectional DiT output, on random weights of width
64 (every layer's input axis, the one a per-output-channel scale spans, has 64 or 128 entries). Measured
here: int8 0.0057, w8a8 0.0097, fp8 0.039; the bounds are about 3x those (int8 0.02, w8a8 0.03, fp8 0.12), so
a regression of the quantisation (a wrong scale axis gives errors of order 1) fails while another seed
passes. The lower bound 1e-4 sits far above float32 rounding (two compilations of the float model agree
exactly here; jit and eager differ by ~1e-6) and far below the smallest error measured: a mode that quietly
did nothing fails it. Expected sizes: int8 rounds each weight to a step of 1/127.5 of its channel's largest
(an error up to 0.4% of that), e4m3 keeps 3 mantissa bits (up to 6% of each value), and W8A8 adds the same
per token on the activations.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix
from flax import nnx

from longlive_jax import checkpoint, cli, layout
from longlive_jax.config import tiny_config
from longlive_jax.model import layers
from longlive_jax.model.params import params_of
from longlive_jax.model.wan import init_model
from longlive_jax.quant import QUANT_MODES, QuantError, get_mode
from longlive_jax.quant.dit import (
  QUANTIZED_LAYERS,
  QuantDense,
  fp8_execution,
  is_quantized,
  layer_weight_bytes,
  quantize_dit,
  quantize_kernel,
  quantized_layers,
)
from longlive_jax.stream import run as srun

CFG = tiny_config(dim=64, ffn_dim=128)
BOUND = {"int8": 0.02, "w8a8": 0.03, "fp8": 0.12}
NOT_IDENTICAL = 1e-4
QTYPE = {"int8": "int8", "w8a8": "int8", "fp8": "float8_e4m3fn"}


@pytest.fixture(scope="module")
def dit():
  """The float32 model, inputs, the jitted forward and the float32 output."""
  model = init_model(CFG, seed=0)
  k = jax.random.split(jax.random.key(0), 2)
  x = jax.random.normal(k[0], (1, 3, 4, 6, CFG.in_dim))  # [B, F, H, W, C]
  ctx = jax.random.normal(k[1], (1, CFG.text_len, CFG.text_dim))
  t = jnp.full((1,), 500.0)
  fwd = jax.jit(lambda m, x, t, c: m(x, t, c))
  return model, (x, t, ctx), fwd, np.asarray(fwd(model, x, t, ctx))


def _rel(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("mode", QUANT_MODES)
def test_quantised_dit_is_close_to_float_but_not_identical(dit, mode):
  model, inputs, fwd, want = dit
  q = quantize_dit(model, mode)
  got = np.asarray(fwd(q, *inputs))
  assert np.isfinite(got).all()
  err = _rel(got, want)
  assert NOT_IDENTICAL < err < BOUND[mode], f"{mode}: relative error {err:.3g}"
  assert is_quantized(q) and not is_quantized(model)  # a copy: the float model is untouched
  np.testing.assert_array_equal(np.asarray(fwd(model, *inputs)), want)


def test_weight_bytes_are_half_of_bfloat16_and_only_the_large_layers_change(dit):
  model = dit[0]
  f32, bf16 = layer_weight_bytes(model), layer_weight_bytes(model, dtype="bfloat16")
  assert bf16 * 2 == f32
  for mode in QUANT_MODES:
    q = quantize_dit(model, mode)
    layers_q = quantized_layers(q)
    assert len(layers_q) == len(QUANTIZED_LAYERS)
    want = 0
    for name, layer in layers_q.items():
      assert isinstance(layer, QuantDense), name
      kernel = quantized_layers(model)[name].kernel
      n_layers, n_in, n_out = kernel.shape
      assert layer.qvalue.shape == kernel.shape and layer.weight_qtype == QTYPE[mode]
      assert layer.scale.shape == (n_layers, 1, n_out) and layer.scale.dtype == jnp.float32
      want += n_layers * n_in * n_out + 4 * n_layers * n_out  # 1 byte per weight + a float32 scale per column
    got = layer_weight_bytes(q)
    assert got == want
    # 1/2 of bf16 (1/4 of float32) plus the scales: 4 bytes per column of >= 64 weights, at most +1/16
    assert 0.5 < got / bf16 <= 0.5 * (1 + 4 / 64)
    assert 0.25 < got / f32 <= 0.25 * (1 + 4 / 64)
    # norms, modulation, embeddings, time path and head keep their float32 arrays (the very same ones)
    keep = nnx.to_flat_state(nnx.state(model))
    kept = dict(nnx.to_flat_state(nnx.state(q)))
    for path, var in keep:
      if not any(".".join(map(str, path)).startswith(f"blocks.{name}.") for name in QUANTIZED_LAYERS):
        assert kept[path][...] is var[...], path
  with pytest.raises(QuantError, match="already quantised"):
    quantize_dit(quantize_dit(model, "int8"), "int8")


class _Stacked(nnx.Module):
  """One Dense per layer, stacked with nnx.vmap and run by lax.scan over split state, as the DiT's blocks.

  The layers are not chained: in a chain, float rounding differences of ~1e-7 between two programs flip
  the rounding of an occasional W8A8 activation in the next layer, a difference of one int8 step.
  """

  def __init__(self):
    @nnx.split_rngs(splits=2)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
      return _Block(rngs)

    self.blocks = make(nnx.Rngs(0))

  def __call__(self, x):  # every layer on the same x: [L, ...] (chained, W8A8's rounding flips would compound)
    graphdef, state = nnx.split(self.blocks)
    return jax.lax.scan(lambda _, s: (None, nnx.merge(graphdef, s).ffn.fc1(x)), None, state)[1]


class _FFN(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = layers.Dense(64, 64, rngs=rngs)


class _Block(nnx.Module):
  def __init__(self, rngs):
    self.ffn = _FFN(rngs)


@pytest.mark.parametrize("mode", QUANT_MODES)
def test_quantdense_equals_qwix_ptq_provider_in_a_scanned_stack(mode):
  """The same numerics as ``qwix.quantize_model`` with a PtqRule on the layer (which quantises on the fly
  inside the scan but keeps float kernels; see the module docstring of longlive_jax.quant.dit)."""
  model = _Stacked()
  x = jax.random.normal(jax.random.key(1), (2, 7, 64))
  m = get_mode(mode)
  q = nnx.merge(*nnx.split(model))
  fc1 = model.blocks.ffn.fc1
  qv, sc = quantize_kernel(fc1.kernel[...], qtype=m.weight_qtype)
  q.blocks.ffn.fc1 = QuantDense(qvalue=qv, scale=sc, bias=fc1.bias[...], dtype=jnp.float32, act_qtype=m.act_qtype)
  act = None if m.act_qtype is None else jnp.dtype(m.act_qtype)
  rule = qwix.QuantizationRule(module_path="blocks/ffn/fc1", weight_qtype=jnp.dtype(m.weight_qtype), act_qtype=act)
  ref = qwix.quantize_model(model, qwix.PtqProvider([rule]), x)
  want, plain = np.asarray(ref(x)), np.asarray(model(x))
  got = np.asarray(q(x))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
  assert _rel(got, plain) > NOT_IDENTICAL


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  root = tmp_path_factory.mktemp("quantize")
  path = checkpoint.save(root / "ckpt", cfg=CFG, params=params_of(init_model(CFG, seed=0)))
  emb = np.random.default_rng(0).standard_normal((CFG.text_len, CFG.text_dim)).astype(np.float32)
  np.save(root / "p.npy", emb)
  return root, path


@pytest.mark.slow  # two compilations of the block step (float and int8): about 1 min on 2 shared cores
def test_streamer_block_step_with_int8_through_the_cli(ckpt, monkeypatch):
  """``generate --quantize int8``: finite latents close to the unquantised run's, and the option recorded."""
  monkeypatch.setenv("LONGLIVE_JAX_CACHE", "off")
  root, path = ckpt
  opts = dict(frames=3, height=4, width=6, window_frames=9)
  st = srun.load_streamer(path, srun.StreamOptions(**opts, quantize="int8"))
  dtypes = {str(v.dtype) for v in jax.tree.leaves(st.params)}
  assert "int8" in dtypes and "float32" in dtypes
  args = ["generate", str(root / "p.npy"), "--checkpoint", str(path), "--frames", "3", "--height", "4"]
  args += ["--width", "6", "--window", "9", "--quiet", "--seed", "5"]
  out = {}
  for name, extra in (("float", []), ("int8", ["--quantize", "int8"])):
    assert cli.main([*args, *extra, "--out", str(root / f"{name}.npz")]) == 0
    with np.load(root / f"{name}.npz") as z:
      out[name] = (layout.from_longlive(z["latents"]), json.loads(str(z["meta"])))
  (lat_f, meta_f), (lat_q, meta_q) = out["float"], out["int8"]
  assert meta_q["options"]["quantize"] == "int8" and meta_f["options"]["quantize"] is None
  assert np.isfinite(lat_q).all() and lat_q.shape == lat_f.shape == (1, 3, 4, 6, CFG.in_dim)
  err = _rel(lat_q, lat_f)
  assert NOT_IDENTICAL < err < BOUND["int8"], err


@pytest.mark.parametrize("command", ["generate", "interactive"])
def test_cli_rejects_a_bad_quantize_value(command, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main([command, "p.npy", "--out", "o.npz", "--quantize", "int4"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  line = err.strip().splitlines()[-1]
  assert line.startswith(f"longlive-jax {command}: error: argument --quantize: invalid choice: 'int4'"), err


def test_library_rejects_a_bad_mode_naming_it():
  with pytest.raises(srun.StreamInputError, match=r"--quantize 'int4': choose one of int8, w8a8, fp8"):
    srun.StreamOptions(frames=3, quantize="int4")
  with pytest.raises(QuantError, match="'int4'"):
    get_mode("int4")
  assert fp8_execution() in ("native", "emulated")
