"""TPU splash attention (Pallas, ``jax.experimental.pallas.ops.tpu.splash_attention``) with our masks mapped onto it.

Splash attention is Pallas' block-sparse flash attention for TPU: it never holds the ``[H, Sq, Sk]`` score
tensor and skips key blocks its (static) mask rules out. Ours is a full mask; the dynamic masks go through
its segment ids, a query attending to the keys of its own segment:

  * ``key_mask [B, Sk]`` (streaming cache validity, padding): every query is in segment 1, a valid key in
    segment 1 and an invalid one in segment 0, so invalid keys get zero weight and no score or bias tensor
    is built;
  * no mask: every key in segment 1;
  * ``key_mask [B, Sq, Sk]`` (block-causal teacher forcing) is not a segment pattern: :func:`splash_supports`
    says no and the dispatcher takes the chunked path for it.

Shapes: the kernel works on ``[H, S, Dh]`` per sample (vmapped over the batch) in blocks of
:data:`SEQ_BLOCK` positions, so both sequence lengths are padded up to a multiple of it (padded keys in
segment 0, padded queries sliced off). The softmax scale ``1/sqrt(Dh)`` is applied to ``q`` in float32
before the kernel (which has no scale of its own). A query with no valid key gets the mean of ``v``, as
the reference does.

``interpret=True`` runs the same kernel through the Pallas interpreter on any backend: on CPU the tests
check it against the reference, and lower the compiled form for TPU (``lowering_platforms=("tpu",)``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Array = jax.Array

# Sequence block of the kernel (query and key blocks): TPU vector lanes are 128 wide; 512 is splash's
# usual block for long sequences and is used when the padded length allows it.
SEQ_BLOCK = 128
SPLASH_DTYPES = (jnp.bfloat16, jnp.float32)


def splash_supports(q: Array, k: Array, key_mask: Array | None = None) -> bool:
  """Whether splash takes this call: head size a multiple of 128 (TPU lanes), bfloat16 / float32 inputs of one
  dtype, and no per-query mask."""
  return (
    q.shape[-1] % 128 == 0
    and q.dtype in SPLASH_DTYPES
    and k.dtype == q.dtype
    and (key_mask is None or key_mask.ndim == 2)
  )


def _block(padded: int) -> int:
  return next(b for b in (512, 256, SEQ_BLOCK) if padded % b == 0)


@functools.lru_cache(maxsize=32)
def _kernel(num_heads: int, sq: int, sk_: int, interpret: bool):
  """The splash kernel for padded lengths ``sq x sk_`` (built once per shape: the mask is static)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk  # 0.2 s: on use
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  mask = sm.MultiHeadMask([sm.FullMask((sq, sk_)) for _ in range(num_heads)])
  bq, bkv = _block(sq), _block(sk_)
  sizes = sk.BlockSizes(
    block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
    block_q_dq=bq, block_kv_dq=bkv,
  )  # fmt: skip
  with jax.ensure_compile_time_eval():  # concrete mask metadata even when first built inside a trace (cached)
    return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _pad(x: Array, length: int, axis: int) -> Array:
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, pad)


def splash_attention(q: Array, k: Array, v: Array, *, key_mask: Array | None = None, interpret: bool = False) -> Array:
  """Softmax attention through the splash kernel (see the module docstring).

  Args:
    q: ``[B, Sq, H, Dh]``.
    k, v: ``[B, Sk, H, Dh]``, the dtype of ``q``.
    key_mask: optional bool ``[B, Sk]`` (the batch axis may be 1), True = attend.
    interpret: run the kernel in the Pallas interpreter (any backend; tests).

  Returns:
    ``[B, Sq, H, Dh]`` in ``v.dtype``.
  """
  if key_mask is not None and key_mask.ndim != 2:
    raise ValueError(f"splash attention takes a [B, Sk] key mask, got shape {key_mask.shape}; use 'chunked'")
  b, sq, h, dh = q.shape
  sk_ = k.shape[1]
  pq, pk = (SEQ_BLOCK * math.ceil(n / SEQ_BLOCK) for n in (sq, sk_))
  scale = 1.0 / math.sqrt(dh)
  qh = jnp.transpose((q.astype(jnp.float32) * scale).astype(q.dtype), (0, 2, 1, 3))  # [B, H, Sq, Dh]
  kh, vh = (jnp.transpose(x, (0, 2, 1, 3)) for x in (k, v))  # [B, H, Sk, Dh]
  qh, kh, vh = _pad(qh, pq, 2), _pad(kh, pk, 2), _pad(vh, pk, 2)  # [B, H, Pq | Pk, Dh]
  valid = jnp.ones((b, sk_), bool) if key_mask is None else jnp.broadcast_to(key_mask.astype(bool), (b, sk_))
  kv_seg = _pad(valid.astype(jnp.int32), pk, 1)  # [B, Pk]: 1 = valid key, 0 = masked or padding
  q_seg = jnp.ones((b, pq), jnp.int32)  # [B, Pq]
  kernel = _kernel(h, pq, pk, interpret)
  from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import SegmentIds

  out = jax.vmap(lambda qq, kk, vv, a, c: kernel(qq, kk, vv, segment_ids=SegmentIds(q=a, kv=c)))(
    qh, kh, vh, q_seg, kv_seg
  )  # [B, H, Pq, Dh]
  out = jnp.transpose(out[:, :, :sq], (0, 2, 1, 3)).astype(v.dtype)  # [B, Sq, H, Dh]
  if key_mask is None:
    return out
  mean_v = jnp.mean(v.astype(jnp.float32), axis=1)[:, None].astype(v.dtype)  # [B, 1, H, Dh]
  return jnp.where(jnp.any(valid, axis=1)[:, None, None, None], out, mean_v)  # [B, Sq, H, Dh]
