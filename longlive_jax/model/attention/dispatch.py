"""The attention dispatcher: every attention call of the DiT goes through :func:`attention`.

Implementations (``WanConfig.attention_impl``, the names in :data:`ATTENTION_IMPLS`):

  * "xla": :func:`~.reference.reference_attention`, one einsum softmax holding the whole
    ``[B, H, Sq, Sk]`` score tensor (the golden-parity path).
  * "chunked": :func:`~.chunked.chunked_attention`, online softmax over key chunks in plain XLA.
  * "cudnn": :func:`~.fused.fused_attention`, cuDNN flash attention (GPU, bfloat16 / float16).
  * "splash": :func:`~.splash.splash_attention`, Pallas splash attention (TPU; on other backends it
    runs in the Pallas interpreter: correct, slow). A block-causal ``[B, Sq, Sk]`` mask is not a
    splash segment pattern: such calls take "chunked".
  * "auto" (the default): resolved per call at trace time by :func:`resolve_impl`: "cudnn" on a
    CUDA GPU when the dtype and head size allow it, "splash" on a TPU when they allow it;
    otherwise "chunked" when the score tensor would hold at least :data:`AUTO_CHUNK_MIN_SCORES`
    elements, else "xla" (small calls, e.g. the golden cases and cross-attention to 512 text rows
    of a small grid, stay on the reference path).

Masks (all implementations, see :mod:`.reference`): bool ``key_mask`` ``[B, Sk]`` (streaming
cache validity, padding) or ``[B, Sq, Sk]`` (block-causal), True = attend; a query with no valid
key gets the mean of ``v``.

:func:`override` forces one implementation for everything traced inside it (scripts; the ``--attention``
option of the command line sets ``StreamOptions.attention``, i.e. the loaded config); a model's config chooses otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
from jax.extend import backend as jex_backend

from longlive_jax.config import ATTENTION_IMPLS
from longlive_jax.model.attention.chunked import chunked_attention
from longlive_jax.model.attention.fused import FUSED_DTYPES, fused_attention
from longlive_jax.model.attention.reference import reference_attention
from longlive_jax.model.attention.splash import splash_attention, splash_supports

Array = jax.Array

# "auto" leaves the reference path once B * H * Sq * Sk reaches this (1 MiB of float32 scores). On one
# CPU core the chunked kernel already wins at peer_bench's small self-attention (4 heads, 192 x 960:
# 3.5 ms against 5.0 ms); below this size both take well under a millisecond. The 1.3B streaming block
# (1 * 12 * 4680 * 18720 = 1.05e9) is far above it.
AUTO_CHUNK_MIN_SCORES = 1 << 18

_override: str | None = None


@contextlib.contextmanager
def override(impl: str | None) -> Iterator[None]:
  """Runs the body with every attention call traced as ``impl`` (None: no override).

  Process-wide (threads included), for command-line tools; jitted functions traced earlier keep
  the implementation they were traced with.
  """
  global _override
  if impl is not None and impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention implementation must be one of {', '.join(ATTENTION_IMPLS)}, got {impl!r}")
  previous, _override = _override, impl
  try:
    yield
  finally:
    _override = previous


def _cuda_backend(backend: str) -> bool:
  if backend not in ("gpu", "cuda"):
    return False
  try:
    return "cuda" in jex_backend.get_backend(backend).platform_version.lower()
  except RuntimeError:  # no such backend: a lowering for a platform that is not here
    return backend == "cuda"


def cudnn_supports(q: Array, k: Array) -> bool:
  """Whether cuDNN flash attention takes these shapes/dtypes (16-bit, head size a multiple of 8, <= 128)."""
  dh = q.shape[-1]
  return q.dtype in FUSED_DTYPES and k.dtype == q.dtype and dh % 8 == 0 and dh <= 128


def splash_interpret() -> bool:
  """Whether splash runs in the Pallas interpreter (every backend but TPU)."""
  return jax.default_backend() != "tpu"


def resolve_impl(impl: str, *, q: Array, k: Array, key_mask: Array | None = None, backend: str | None = None) -> str:
  """The concrete implementation ("xla", "chunked", "cudnn" or "splash") that ``impl`` means for this call.

  Args:
    impl: one of :data:`ATTENTION_IMPLS`.
    q: ``[B, Sq, H, Dh]`` (only its shape and dtype are read).
    k: ``[B, Sk, H, Dh]``.
    key_mask: the call's mask (only its rank is read: splash takes none or ``[B, Sk]``).
    backend: platform to decide for (default: ``jax.default_backend()``).
  """
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention implementation must be one of {', '.join(ATTENTION_IMPLS)}, got {impl!r}")
  if impl == "splash" and key_mask is not None and key_mask.ndim == 3:
    return "chunked"
  if impl != "auto":
    return impl
  backend = jax.default_backend() if backend is None else backend
  if _cuda_backend(backend) and cudnn_supports(q, k):
    return "cudnn"
  if backend == "tpu" and splash_supports(q, k, key_mask):
    return "splash"
  b, sq, h, _ = q.shape
  return "chunked" if b * h * sq * k.shape[1] >= AUTO_CHUNK_MIN_SCORES else "xla"


def attention(q: Array, k: Array, v: Array, *, key_mask: Array | None = None, impl: str = "auto") -> Array:
  """Softmax attention with scale ``1/sqrt(Dh)``, float32 softmax statistics.

  Args:
    q: ``[B, Sq, H, Dh]``.
    k, v: ``[B, Sk, H, Dh]``.
    key_mask: optional bool ``[B, Sk]`` or ``[B, Sq, Sk]`` (the batch axis may be 1); False keys
      get zero weight.
    impl: one of :data:`ATTENTION_IMPLS` (an active :func:`override` wins).

  Returns:
    ``[B, Sq, H, Dh]`` in ``v.dtype``.
  """
  impl = resolve_impl(_override if _override is not None else impl, q=q, k=k, key_mask=key_mask)
  if impl == "cudnn":
    return fused_attention(q, k, v, key_mask=key_mask, implementation="cudnn")
  if impl == "splash":
    return splash_attention(q, k, v, key_mask=key_mask, interpret=splash_interpret())
  if impl == "chunked":
    return chunked_attention(q, k, v, key_mask=key_mask)
  return reference_attention(q, k, v, key_mask=key_mask)
