"""The quantisation modes of ``--quantize``: names and what each stores and computes (no JAX, no qwix).

Kept free of heavy imports so that the command line can list the modes and check an option before
anything is loaded; the qwix-backed code is in :mod:`longlive_jax.quant.dit`.

Conventions: a qtype is a numpy dtype name (``"int8"``, ``"float8_e4m3fn"``); ``act_qtype=None`` means
weight-only (activations stay in the model's compute dtype and the weight is dequantised into it before
the matmul). Every mode is symmetric absmax quantisation: weights with one scale per output channel and
layer, activations (when quantised) with one dynamic scale per token, computed at every call.
"""

from __future__ import annotations

import dataclasses

from longlive_jax.config import ConfigError


class QuantError(ConfigError):
  """A quantisation mode that is unknown or cannot run here; the message names the mode.

  A :class:`~longlive_jax.config.ConfigError`, so the command line reports it in one line (exit status 2).
  """


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantMode:
  """One way of quantising the DiT's large linear layers.

  Attributes:
    name: the ``--quantize`` value.
    weight_qtype: storage type of the quantised kernels.
    act_qtype: type the activations are quantised to before the matmul (``None``: weight-only).
    summary: one line for help texts and result files.
  """

  name: str
  weight_qtype: str
  act_qtype: str | None
  summary: str

  @property
  def weight_only(self) -> bool:
    return self.act_qtype is None


MODES: dict[str, QuantMode] = {
  m.name: m
  for m in (
    QuantMode(
      name="int8",
      weight_qtype="int8",
      act_qtype=None,
      summary="int8 weights (per output channel), dequantised to the compute dtype before each matmul",
    ),
    QuantMode(
      name="w8a8",
      weight_qtype="int8",
      act_qtype="int8",
      summary="int8 weights and int8 activations (dynamic, per token): int8 x int8 matmuls, int32 sums",
    ),
    QuantMode(
      name="fp8",
      weight_qtype="float8_e4m3fn",
      act_qtype="float8_e4m3fn",
      summary="float8_e4m3fn weights and activations (dynamic, per token): FP8 matmuls, float32 sums",
    ),
  )
}

QUANT_MODES: tuple[str, ...] = tuple(MODES)


def get_mode(mode: str | QuantMode) -> QuantMode:
  """The :class:`QuantMode` called ``mode`` (a :class:`QuantMode` is returned as is)."""
  if isinstance(mode, QuantMode):
    return mode
  try:
    return MODES[mode]
  except (KeyError, TypeError):
    raise QuantError(f"quantisation mode {mode!r}: choose one of {', '.join(QUANT_MODES)}") from None
