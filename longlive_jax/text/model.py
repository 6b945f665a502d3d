"""umT5 encoder (Flax NNX): the text encoder of Wan2.1 (upstream ``wan/modules/t5.py``, ``T5Encoder``).

Computation, in upstream order (dropout is inactive at inference)::

  x = token_embedding[ids]
  for each block:  x += o(Attn(norm1(x)))              # relative position bias, key-padding mask
                   x += fc2(fc1(h) * gelu_tanh(gate(h)))   with h = norm2(x)
  hidden = norm(x)

T5 quirks kept on purpose (each one changes the numbers):
  * attention logits are ``q . k`` with **no** ``1/sqrt(head_dim)`` scaling, plus a learned bias
    looked up from bidirectional relative-position buckets (:func:`relative_position_bucket`);
    with ``shared_pos=False`` (umT5) every layer has its own ``[num_buckets, num_heads]`` table;
  * padded keys get ``finfo(float32).min`` (queries at padded positions are still computed and
    attend to the real keys only);
  * T5 RMSNorm (upstream ``T5LayerNorm``): ``x * rsqrt(mean(x^2) + eps) * weight`` with no mean
    subtraction, in float32: the DiT's :class:`~longlive_jax.model.layers.RMSNorm`;
  * gated GELU (tanh approximation) feed-forward, no biases anywhere.

Layouts: ``ids``/``mask`` ``[B, L]``; activations ``[B, L, dim]``; heads ``[B, L, H, Dh]`` from a
``view`` of the ``[dim_attn]`` projection; Dense kernels are ``[in, out]``. The residual stream
is float32 whatever ``cfg.dtype`` (matmuls run in ``cfg.dtype``; norms, logits, softmax in float32).
Blocks are created with ``nnx.vmap`` (leading layer axis on every block parameter) and run with
``jax.lax.scan``, so compile time does not grow with depth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longlive_jax.model.layers import RMSNorm
from longlive_jax.model.params import module_from_params
from longlive_jax.model.params import params_of as params_of  # re-exported: the generic NNX helpers
from longlive_jax.model.wan import count_params as count_params
from longlive_jax.text.config import UMT5Config

Array = jax.Array


def relative_position_bucket(rel_pos, *, num_buckets: int, max_dist: int) -> np.ndarray:
  """Upstream ``T5RelativeEmbedding._relative_position_bucket`` (bidirectional), on the host.

  ``rel_pos = key_pos - query_pos`` (ints). Half the buckets per direction (offset ``num_buckets // 2``
  when the key comes after the query); ``|rel|`` below ``half // 2`` is its own bucket, larger
  distances are binned logarithmically up to ``max_dist``. The logarithm runs in float32 exactly
  like upstream (``rel.float()``); the truncation makes float64 give a different answer at some
  bucket edges, so do not "improve" this.

  Returns:
    int64 array of ``rel_pos``'s shape, values in ``[0, num_buckets)``.
  """
  rel = np.asarray(rel_pos, np.int64)
  half = num_buckets // 2
  exact = half // 2
  buckets = (rel > 0).astype(np.int64) * half
  dist = np.abs(rel)
  ratio = np.maximum(dist, 1).astype(np.float32) / np.float32(exact)
  scaled = np.log(ratio) / np.float32(math.log(max_dist / exact)) * np.float32(half - exact)
  large = np.minimum(exact + scaled.astype(np.int64), half - 1)
  return buckets + np.where(dist < exact, dist, large)


def bucket_matrix(length: int, *, num_buckets: int, max_dist: int) -> np.ndarray:
  """Buckets ``[L, L]`` of ``key - query`` for query row i, key column j (what every layer uses)."""
  pos = np.arange(length)
  return relative_position_bucket(pos[None, :] - pos[:, None], num_buckets=num_buckets, max_dist=max_dist)


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, dtype) -> Array:
  return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class Linear(nnx.Module):
  """``y = x @ kernel`` with kernel ``[in, out]`` (no bias), in the compute dtype."""

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype, param_dtype):
    self.kernel = nnx.Param(_normal(rngs, (in_features, out_features), in_features**-0.5, param_dtype))
    self.dtype = dtype

  def __call__(self, x: Array) -> Array:
    return jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))  # [..., out]


class Attention(nnx.Module):
  """T5 self-attention: no scaling, additive position bias, padded keys masked."""

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs):
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    self.q = Linear(cfg.dim, cfg.dim_attn, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.k = Linear(cfg.dim, cfg.dim_attn, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.v = Linear(cfg.dim, cfg.dim_attn, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.o = Linear(cfg.dim_attn, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.num_heads = cfg.num_heads

  def __call__(self, x: Array, *, bias: Array, key_mask: Array) -> Array:
    """``x [B, L, dim]``, float32 ``bias [H, L, L]``, bool ``key_mask [B, L]`` -> ``[B, L, dim]``."""
    b, s, _ = x.shape
    shape = (b, s, self.num_heads, -1)
    q, k, v = self.q(x).reshape(shape), self.k(x).reshape(shape), self.v(x).reshape(shape)  # [B, L, H, Dh]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)  # [B, H, L, L]
    logits = jnp.where(key_mask[:, None, None, :], logits + bias[None], jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, H, L, L]
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32)  # [B, L, H, Dh]
    return self.o(out.reshape(b, s, -1).astype(v.dtype))  # [B, L, dim]


class FeedForward(nnx.Module):
  """``fc2(fc1(x) * gelu_tanh(gate(x)))`` (upstream ``T5FeedForward``; ``gate`` is ``ffn.gate.0``)."""

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs):
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    self.gate = Linear(cfg.dim, cfg.dim_ffn, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.fc1 = Linear(cfg.dim, cfg.dim_ffn, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.fc2 = Linear(cfg.dim_ffn, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)

  def __call__(self, x: Array) -> Array:
    gate = jax.nn.gelu(self.gate(x).astype(jnp.float32), approximate=True)  # [B, L, dim_ffn]
    return self.fc2((self.fc1(x).astype(jnp.float32) * gate).astype(self.fc2.dtype))  # [B, L, dim]


class Block(nnx.Module):
  """Pre-norm block: ``x += attn(norm1(x)); x += ffn(norm2(x))`` (upstream ``T5SelfAttention``).

  The norms return float32 (the residual stream's dtype); the projections cast to ``cfg.dtype``.
  """

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs):
    pdt = jnp.dtype(cfg.param_dtype)
    self.norm1 = RMSNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pdt)
    self.attn = Attention(cfg, rngs=rngs)
    self.norm2 = RMSNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pdt)
    self.ffn = FeedForward(cfg, rngs=rngs)
    if not cfg.shared_pos:
      self.pos_embedding = nnx.Param(_normal(rngs, (cfg.num_buckets, cfg.num_heads), 0.1, pdt))  # [nb, H]

  def __call__(self, x: Array, *, buckets: Array, key_mask: Array, shared_bias: Array | None) -> Array:
    """float32 ``x [B, L, dim]``; int ``buckets [L, L]``; ``shared_bias [H, L, L]`` when ``shared_pos``."""
    if shared_bias is None:
      bias = jnp.take(self.pos_embedding[...].astype(jnp.float32), buckets, axis=0)  # [L, L, H]
      bias = bias.transpose(2, 0, 1)  # [H, L, L]
    else:
      bias = shared_bias
    x = x + self.attn(self.norm1(x), bias=bias, key_mask=key_mask).astype(jnp.float32)
    return x + self.ffn(self.norm2(x)).astype(jnp.float32)


class UMT5Encoder(nnx.Module):
  """The umT5 encoder. ``model(ids, mask) -> hidden [B, L, dim]`` (float32, padded rows included)."""

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pdt = jnp.dtype(cfg.param_dtype)
    self.token_embedding = nnx.Param(_normal(rngs, (cfg.vocab, cfg.dim), 1.0, pdt))  # [vocab, dim]
    if cfg.shared_pos:
      self.pos_embedding = nnx.Param(_normal(rngs, (cfg.num_buckets, cfg.num_heads), 0.1, pdt))  # [nb, H]

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_blocks(rngs):
      return Block(cfg, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.norm = RMSNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pdt)

  def __call__(self, ids: Array, mask: Array) -> Array:
    """Encodes token ``ids [B, L]`` with attention ``mask [B, L]`` (nonzero = real token).

    Returns:
      float32 ``[B, L, dim]``: upstream ``T5Encoder(ids, mask)``, rows at padded positions included.
    """
    cfg = self.cfg
    length = ids.shape[1]
    key_mask = jnp.asarray(mask) > 0  # [B, L]
    buckets = jnp.asarray(bucket_matrix(length, num_buckets=cfg.num_buckets, max_dist=cfg.max_dist), jnp.int32)
    shared_bias = None
    if cfg.shared_pos:
      shared_bias = jnp.take(self.pos_embedding[...].astype(jnp.float32), buckets, axis=0).transpose(2, 0, 1)
    x = jnp.take(self.token_embedding[...], jnp.asarray(ids, jnp.int32), axis=0).astype(jnp.float32)  # [B, L, dim]
    graphdef, state = nnx.split(self.blocks)

    def body(x, layer_state):
      blk = nnx.merge(graphdef, layer_state)
      return blk(x, buckets=buckets, key_mask=key_mask, shared_bias=shared_bias), None

    x, _ = jax.lax.scan(body, x, state)
    return self.norm(x)


def init_model(cfg: UMT5Config, *, seed: int = 0) -> UMT5Encoder:
  """A randomly initialised encoder (tests); real weights come from :mod:`longlive_jax.convert.umt5`."""
  return UMT5Encoder(cfg, rngs=nnx.Rngs(seed))


def abstract_model(cfg: UMT5Config) -> UMT5Encoder:
  """The encoder with ``jax.ShapeDtypeStruct`` leaves: full-size structure without allocating."""
  return nnx.eval_shape(lambda: UMT5Encoder(cfg, rngs=nnx.Rngs(0)))


def model_from_params(cfg: UMT5Config, params: Mapping, *, sharding: jax.sharding.Sharding | None = None):
  """An :class:`UMT5Encoder` holding the arrays of ``params`` (nested dict), each checked against ``cfg``."""
  return module_from_params(abstract_model(cfg), params, origin="umT5 parameter tree", sharding=sharding)
