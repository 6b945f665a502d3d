"""Quantised inference of the DiT (``--quantize``): the modes here, the qwix-backed code in :mod:`.dit`.

``from longlive_jax.quant import QUANT_MODES`` costs no JAX or qwix import (the command line checks the
option before loading anything); ``from longlive_jax.quant.dit import quantize_dit`` does the work.
"""

from longlive_jax.quant.modes import MODES, QUANT_MODES, QuantError, QuantMode, get_mode

__all__ = ["MODES", "QUANT_MODES", "QuantError", "QuantMode", "get_mode"]
