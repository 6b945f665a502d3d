"""Training data: tfds builders writing ArrayRecord files (no TensorFlow) and grain pipelines.

Build once, then stream::

  res = build_prompts("prompts/vidprom_filtered_extended.txt", data_dir="data")
  it = make_iterator(res.dataset_dir, batch_size=1, seed=0, encode_text=umt5)  # checkpointable

See :mod:`longlive_jax.data.builders` (formats, bad-record policy, report) and
:mod:`longlive_jax.data.pipeline` (sharding, shuffling, exact resume).
"""

from longlive_jax.data.builders import (
  BuildResult,
  PromptPairs,
  Prompts,
  VideoLatents,
  VideoLatentsConfig,
  build_prompt_pairs,
  build_prompts,
  build_video_latents,
)
from longlive_jax.data.pipeline import make_dataset, make_iterator, open_source
from longlive_jax.data.report import BadRecord, DataError, read_report
from longlive_jax.data.video import read_clip, synthetic_clip, write_synthetic_videos

__all__ = [
  "BadRecord",
  "BuildResult",
  "DataError",
  "PromptPairs",
  "Prompts",
  "VideoLatents",
  "VideoLatentsConfig",
  "build_prompt_pairs",
  "build_prompts",
  "build_video_latents",
  "make_dataset",
  "make_iterator",
  "open_source",
  "read_clip",
  "read_report",
  "synthetic_clip",
  "write_synthetic_videos",
]
