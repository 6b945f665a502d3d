"""Post-training quantisation of the Wan DiT with qwix: int8 weight-only, int8 W8A8 and FP8 W8A8.

What is quantised: the ten large linear layers of every transformer block, self-attention q/k/v/o,
cross-attention q/k/v/o and the FFN's fc1/fc2 (:data:`QUANTIZED_LAYERS`): 98% of the parameters of
Wan2.1-1.3B and nearly all of the matmul work outside attention itself. What is not: RMS/Layer norms
and the adaLN modulation vectors (elementwise, tiny, run in float32 as upstream), the patch, text and time
embeddings, the time projection and the output head (under 2% of the parameters; the time path and the
head run in float32 by design, and the head's error would go straight into the predicted flow), and the
attention softmax(q k^T) v products (they have no weights; their inputs come from the KV cache). Biases
stay in the compute dtype.

How: each chosen ``layers.Dense`` is replaced by a :class:`QuantDense` holding a qwix ``QArray``'s parts,
``qvalue`` (int8 or float8_e4m3fn, ``[L, in, out]``) and ``scale`` (float32, ``[L, 1, out]``: symmetric
absmax, one scale per output channel and layer, qwix's default for a kernel), computed once by
``qwix.quantize``. At call time :class:`QuantDense` runs ``qwix.dot_general``: weight-only, the weight is
dequantised into the compute dtype and multiplied as before (qwix's dequantise-first path; XLA can fuse
the dequantisation into the matmul); W8A8, the activation is quantised per token (dynamic absmax over the contracted axis, as qwix's
PTQ does for activations on XLA) and the matmul runs on the 8-bit values (int8 x int8 -> int32, or
fp8 x fp8 -> float32), scales applied to the result.

Why not ``qwix.quantize_model(model, qwix.PtqProvider(rules), ...)``: qwix's NNX PTQ intercepts the
einsum calls of one method while running the model and replaces each weight it meets by its quantised
version (``setattr`` on the module). Our blocks are stacked (``nnx.vmap``) and run by ``jax.lax.scan``
over ``nnx.split`` state, merged into a fresh module per layer inside the scan body. The rules do match
there (the scan body's einsums are intercepted), but the replacement lands on that temporary module and
is lost: the stored kernels stay float32, and each call re-quantises them (fake quantisation: the
numerics of PTQ, none of its memory). It also intercepts ``__call__`` only, while the streamer calls
``forward_tokens`` and ``cross_kv``. Swapping the layers for modules that hold the quantised state works
with any entry point and inside the scan. The numerics are qwix's own: ``tests/test_quantize.py`` checks a
scanned stack of :class:`QuantDense` against the provider for every mode; on the whole tiny DiT the two
agree to 1e-6 for int8 and fp8, while W8A8 differs by ~0.3% of the output where float rounding between
the two programs flips an int8 activation by one step (which later layers and attention spread).

FP8: the ``fp8`` mode is FP8 W8A8 (float8_e4m3fn weights and activations), the form that FP8 tensor
cores run (NVIDIA compute capability 8.9 and later: Ada, Hopper). XLA runs the same program elsewhere by
converting the 8-bit operands up before the matmul: emulated, the same quantised operands (an e4m3 number
is exact in float32) summed in float32 (FP8 tensor cores accumulate with somewhat less precision), the
memory saving but no speed-up (:func:`fp8_execution` says which applies). There is no backend on which it cannot run, so it is never refused.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import qwix
from flax import nnx

from longlive_jax.quant.modes import QuantError, QuantMode, get_mode

Array = jax.Array

# Paths inside a transformer block (``model.blocks``) of the layers that are quantised.
QUANTIZED_LAYERS: tuple[str, ...] = (
  "self_attn.q",
  "self_attn.k",
  "self_attn.v",
  "self_attn.o",
  "cross_attn.q",
  "cross_attn.k",
  "cross_attn.v",
  "cross_attn.o",
  "ffn.fc1",
  "ffn.fc2",
)

# Earliest NVIDIA compute capability with FP8 tensor cores (Ada Lovelace; Hopper is 9.0).
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)


class QuantDense(nnx.Module):
  """``y = x @ dequant(qvalue, scale) + bias`` for kernels ``[..., in, out]`` quantised by qwix.

  Leading axes (the layer axis of stacked blocks) are sliced away by the scan before the call, so in
  ``__call__`` ``qvalue`` is ``[in, out]`` and ``scale`` ``[1, out]``. ``dtype`` is the compute dtype
  (as :class:`~longlive_jax.model.layers.Dense`); ``act_qtype`` (a numpy dtype name, or ``None`` for
  weight-only) is what activations are quantised to, per token, at every call.
  """

  def __init__(self, *, qvalue: Array, scale: Array, bias: Array, dtype, act_qtype: str | None):
    self.qvalue = nnx.Param(qvalue)
    self.scale = nnx.Param(scale)
    self.bias = nnx.Param(bias)
    self.dtype = jnp.dtype(dtype)
    self.act_qtype = act_qtype

  @property
  def weight_qtype(self) -> str:
    return jnp.dtype(self.qvalue.dtype).name

  def __call__(self, x: Array) -> Array:
    x = x.astype(self.dtype)
    w = qwix.QArray(qvalue=self.qvalue[...], scale=self.scale[...].astype(self.dtype))  # [in, out], [1, out]
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    if self.act_qtype is None:  # dequantise the weight into the compute dtype, then the usual matmul
      y = qwix.dot_general(x, w, dims)
    else:  # one scale per token (all leading axes channelwise): 8-bit x 8-bit matmul, 32-bit sums
      xq = qwix.quantize(x, jnp.dtype(self.act_qtype), channelwise_axes=tuple(range(x.ndim - 1)))
      y = qwix.dot_general(xq, w, dims, preferred_element_type=jnp.float32).astype(self.dtype)
    return y + self.bias[...].astype(self.dtype)


@functools.partial(jax.jit, static_argnames="qtype")
def quantize_kernel(kernel: Array, *, qtype: str) -> tuple[Array, Array]:
  """``kernel [..., in, out]`` -> ``(qvalue [..., in, out], scale [..., 1, out] float32)``.

  Absmax in float32 over the input axis: one scale per output channel (and per leading index, i.e.
  per layer of a stacked kernel). One fused pass, so a large kernel needs no float32 temporaries.
  """
  nd = kernel.ndim
  q = qwix.quantize(kernel.astype(jnp.float32), jnp.dtype(qtype), channelwise_axes=(*range(nd - 2), nd - 1))
  return q.qvalue, q.scale


def _layers(blocks: nnx.Module) -> Iterator[tuple[str, nnx.Module, str, nnx.Module]]:
  """``(path, parent, attribute, layer)`` for every entry of :data:`QUANTIZED_LAYERS`."""
  for path in QUANTIZED_LAYERS:
    parent_name, attr = path.split(".")
    parent = getattr(blocks, parent_name)
    yield path, parent, attr, getattr(parent, attr)


def quantize_dit(model: nnx.Module, mode: str | QuantMode) -> nnx.Module:
  """A copy of the DiT ``model`` with :data:`QUANTIZED_LAYERS` quantised as ``mode`` says.

  ``model`` is left unchanged; the copy shares its unquantised arrays (no copy of them is made), so
  dropping ``model`` afterwards frees the float kernels. Cast the parameters to the compute dtype first
  (``load_streamer`` does): the copy computes in each layer's dtype, like the original.

  Raises :class:`~longlive_jax.quant.modes.QuantError` for an unknown mode or a model that is already
  quantised.
  """
  m = get_mode(mode)
  graphdef, state = nnx.split(model)
  out = nnx.merge(graphdef, state)  # new modules and variables, the same arrays
  for path, parent, attr, layer in _layers(out.blocks):
    if isinstance(layer, QuantDense):
      raise QuantError(f"quantisation mode {m.name!r}: blocks.{path} is already quantised ({layer.weight_qtype})")
    qvalue, scale = quantize_kernel(layer.kernel[...], qtype=m.weight_qtype)
    quantized = QuantDense(qvalue=qvalue, scale=scale, bias=layer.bias[...], dtype=layer.dtype, act_qtype=m.act_qtype)
    setattr(parent, attr, quantized)
  return out


def quantized_layers(model: nnx.Module) -> dict[str, nnx.Module]:
  """``{"blocks.self_attn.q": layer, ...}``: the layers :func:`quantize_dit` replaces (quantised or not)."""
  return {f"blocks.{path}": layer for path, _, _, layer in _layers(model.blocks)}


def layer_weight_bytes(model: nnx.Module, *, dtype=None) -> int:
  """Bytes of the weights of :data:`QUANTIZED_LAYERS` (all layers of the stack), biases excluded.

  A quantised layer counts its 8-bit values and its float32 scales; an unquantised one its kernel, in
  ``dtype`` if given (e.g. what a float32 model would take in bfloat16), else as stored.
  """
  total = 0
  for layer in quantized_layers(model).values():
    if isinstance(layer, QuantDense):
      total += layer.qvalue[...].nbytes + layer.scale[...].nbytes
    else:
      k = layer.kernel[...]
      total += k.size * (jnp.dtype(dtype).itemsize if dtype is not None else k.dtype.itemsize)
  return int(total)


def is_quantized(model: nnx.Module) -> bool:
  return any(isinstance(layer, QuantDense) for layer in quantized_layers(model).values())


def fp8_execution(device: jax.Device | None = None) -> str:
  """``"native"`` where FP8 matmuls run on FP8 hardware (NVIDIA compute capability >= 8.9), else
  ``"emulated"`` (XLA converts the float8 operands up first: same values, no speed-up)."""
  device = device or jax.devices()[0]
  cc = getattr(device, "compute_capability", None)
  if device.platform == "gpu" and cc:
    major, minor = (int(v) for v in str(cc).split(".")[:2])
    if (major, minor) >= FP8_MIN_COMPUTE_CAPABILITY:
      return "native"
  return "emulated"
