"""Online-softmax ("flash") attention in plain XLA: key chunks in a scan, query chunks in a map.

Never holds the ``[B, H, Sq, Sk]`` score tensor: the largest temporary is one chunk's
``[B, H, query_chunk, key_chunk]`` scores. Runs on any backend (it is the CPU kernel of the
dispatcher) and equals :func:`~longlive_jax.model.attention.reference.reference_attention` to
float32 rounding, masks included:

  * a masked key gets weight exactly 0 (the reference's ``exp(finfo.min - max)`` underflows to 0
    whenever the row has a valid key);
  * a query with no valid key at all gets the mean of ``v`` over all ``Sk`` keys, as the reference
    (whose logits are then all equal) does;
  * a key chunk with no valid key for any query of the query chunk is skipped (``lax.cond``): by
    the two rules above it contributes nothing. This is what makes an empty streaming cache cheap.

Sequence lengths that no chunk size near the target divides are padded; padded keys are masked,
padded queries are cut off.

Layout: q, k and v are transposed once to head-major ``[B, H, S, Dh]`` so that every chunk's two
matmuls are plain batched ``[qc, Dh] x [Dh, kc]`` / ``[qc, kc] x [kc, Dh]`` products over ``B * H``
with contiguous operands; slicing the sequence-major ``[B, S, H, Dh]`` inputs per chunk made XLA:CPU
copy and transpose every chunk again. Default chunks of 256 x 256 (2 MiB of float32 scores for 8
heads) keep a chunk's scores in cache. One call at peer_bench's medium shapes (8 heads, 768 queries,
3072 keys, one pinned CPU core, median of 10): 70-90 ms, against 180-210 ms for the sequence-major
version with 512 x 1024 chunks and about 270-330 ms for the reference; chunk sizes between 128 and 512
are within the run-to-run noise of these figures.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from longlive_jax.model.attention.reference import mask4

Array = jax.Array

QUERY_CHUNK = 256
KEY_CHUNK = 256


def chunking(n: int, target: int) -> tuple[int, int]:
  """``(chunk, count)`` covering ``n`` positions with chunks of at most ``target``.

  One chunk if ``n <= target``; else the largest divisor of ``n`` in ``[target / 2, target]`` (no
  padding); else ``target`` (the last chunk is padded: ``chunk * count >= n``).
  """
  if n <= target:
    return n, 1
  for c in range(target, max(target // 2, 1) - 1, -1):
    if n % c == 0:
      return c, n // c
  return target, -(-n // target)


def _pad_axis(x: Array, axis: int, size: int, value) -> Array:
  if x.shape[axis] == size:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def chunked_attention(
  q: Array,
  k: Array,
  v: Array,
  *,
  key_mask: Array | None = None,
  query_chunk: int = QUERY_CHUNK,
  key_chunk: int = KEY_CHUNK,
  skip_empty_chunks: bool = True,
) -> Array:
  """Softmax attention with scale ``1/sqrt(Dh)`` computed chunk by chunk (float32 statistics).

  Args:
    q: ``[B, Sq, H, Dh]``.
    k, v: ``[B, Sk, H, Dh]``.
    key_mask: optional bool ``[B, Sk]`` or ``[B, Sq, Sk]`` (the batch axis may be 1).
    query_chunk, key_chunk: target chunk sizes (see :func:`chunking`).
    skip_empty_chunks: skip key chunks that have no valid key (needs ``key_mask``); exact either way.

  Returns:
    ``[B, Sq, H, Dh]`` in ``v.dtype``.
  """
  b, sq, h, dh = q.shape
  sk = k.shape[1]
  scale = 1.0 / math.sqrt(dh)
  qc, nq = chunking(sq, query_chunk)
  kc, nk = chunking(sk, key_chunk)
  sq_pad, sk_pad = qc * nq, kc * nk

  mean_v = None
  if key_mask is not None:
    key_mask = key_mask.astype(bool)
    mean_v = jnp.mean(v.astype(jnp.float32), axis=1)[:, :, None]  # [B, H, 1, Dh]: output of an all-masked query
  if sk_pad != sk:  # padded keys are masked out
    k, v = _pad_axis(k, 1, sk_pad, 0), _pad_axis(v, 1, sk_pad, 0)
    if key_mask is None:
      key_mask = jnp.arange(sk_pad)[None, :] < sk  # [1, Sk']
    else:
      key_mask = _pad_axis(key_mask, key_mask.ndim - 1, sk_pad, False)
  if sq_pad != sq:  # padded queries are cut off at the end
    q = _pad_axis(q, 1, sq_pad, 0)
    if key_mask is not None and key_mask.ndim == 3:
      key_mask = _pad_axis(key_mask, 1, sq_pad, True)
  skip = skip_empty_chunks and key_mask is not None and nk > 1
  qh = jnp.transpose(q, (0, 2, 1, 3))  # [B, H, Sq', Dh]
  kh = jnp.transpose(k, (0, 2, 1, 3))  # [B, H, Sk', Dh]
  vh = jnp.transpose(v, (0, 2, 1, 3))  # [B, H, Sk', Dh]

  def one_query_chunk(i: Array) -> Array:
    qi = jax.lax.dynamic_slice_in_dim(qh, i * qc, qc, axis=2)  # [B, H, qc, Dh]
    mi = key_mask
    if mi is not None and mi.ndim == 3:
      mi = jax.lax.dynamic_slice_in_dim(mi, i * qc, qc, axis=1)  # [B|1, qc, Sk']

    def update(carry, j):
      m, denom, acc = carry  # [B, H, qc], [B, H, qc], [B, H, qc, Dh] (float32)
      kj = jax.lax.dynamic_slice_in_dim(kh, j * kc, kc, axis=2)  # [B, H, kc, Dh]
      vj = jax.lax.dynamic_slice_in_dim(vh, j * kc, kc, axis=2)
      s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj, preferred_element_type=jnp.float32) * scale  # [B, H, qc, kc]
      if mi is not None:
        mj = jax.lax.dynamic_slice_in_dim(mi, j * kc, kc, axis=mi.ndim - 1)  # [B|1, kc] or [B|1, qc, kc]
        s = jnp.where(mask4(mj), s, -jnp.inf)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))  # stays >= finfo.min: never -inf, so no inf - inf
      alpha = jnp.exp(m - m_new)  # [B, H, qc]
      p = jnp.exp(s - m_new[..., None])  # [B, H, qc, kc]; masked keys: exp(-inf) = 0
      denom = alpha * denom + jnp.sum(p, axis=-1)
      pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), vj, preferred_element_type=jnp.float32)  # [B, H, qc, Dh]
      return m_new, denom, acc * alpha[..., None] + pv

    def body(carry, j):
      if not skip:
        return update(carry, j), None
      mj = jax.lax.dynamic_slice_in_dim(mi, j * kc, kc, axis=mi.ndim - 1)
      return jax.lax.cond(jnp.any(mj), update, lambda c, _: c, carry, j), None

    init = (
      jnp.full((b, h, qc), jnp.finfo(jnp.float32).min, jnp.float32),  # running max
      jnp.zeros((b, h, qc), jnp.float32),  # running sum of exp
      jnp.zeros((b, h, qc, dh), jnp.float32),  # running weighted sum of v
    )
    if nk == 1:
      (_, denom, acc), _ = body(init, jnp.zeros((), jnp.int32))
    else:
      (_, denom, acc), _ = jax.lax.scan(body, init, jnp.arange(nk, dtype=jnp.int32))
    denom = denom[..., None]  # [B, H, qc, 1]
    out = acc / jnp.where(denom > 0, denom, 1.0)
    if mean_v is not None:
      out = jnp.where(denom > 0, out, mean_v)  # queries without a valid key: the reference's uniform weights
    return out.astype(v.dtype)  # [B, H, qc, Dh]

  if nq == 1:
    out = one_query_chunk(jnp.zeros((), jnp.int32))  # [B, H, Sq, Dh]
  else:
    out = jax.lax.map(one_query_chunk, jnp.arange(nq, dtype=jnp.int32))  # [nq, B, H, qc, Dh]
    out = jnp.transpose(out, (1, 2, 0, 3, 4)).reshape(b, h, sq_pad, dh)  # [B, H, Sq', Dh]
  return jnp.transpose(out[:, :, :sq], (0, 2, 1, 3))  # [B, Sq, H, Dh]
