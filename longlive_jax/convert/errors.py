"""The one error type of the converters: its message always names the file, key or shape at fault."""


class CheckpointError(ValueError):
  """A checkpoint file is missing, unreadable, or does not match the model."""
