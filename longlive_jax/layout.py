"""Layout helpers between upstream tensors and ours.

Upstream Wan passes latents as ``[B, C, F, H, W]``; LongLive pipelines keep them as
``[B, T, C, H, W]``. We are channels-last: ``[B, F, H, W, C]``.
"""

from __future__ import annotations


def from_wan(x):
  """``[B, C, F, H, W]`` -> ``[B, F, H, W, C]``."""
  return x.transpose(0, 2, 3, 4, 1)


def to_wan(x):
  """``[B, F, H, W, C]`` -> ``[B, C, F, H, W]``."""
  return x.transpose(0, 4, 1, 2, 3)


def from_longlive(x):
  """``[B, T, C, H, W]`` -> ``[B, T, H, W, C]``."""
  return x.transpose(0, 1, 3, 4, 2)


def to_longlive(x):
  """``[B, T, H, W, C]`` -> ``[B, T, C, H, W]``."""
  return x.transpose(0, 1, 4, 2, 3)
