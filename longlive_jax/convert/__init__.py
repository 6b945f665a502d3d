"""Conversion of upstream PyTorch checkpoints (Wan, LongLive, PEFT LoRA) into this project's layout.

Kept apart from the model: nothing in :mod:`longlive_jax.model` knows about torch key names.
"""

from longlive_jax.convert.errors import CheckpointError

__all__ = ["CheckpointError"]
