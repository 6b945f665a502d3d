"""tensorflow-datasets builders writing LongLive's training data as ArrayRecord files (no TensorFlow).

Three builders, each configured by constructor arguments (the source path and options):

* :class:`Prompts` (``prompts``): a prompt list, one prompt per line -> ``{"prompt", "index", "line"}``.
* :class:`PromptPairs` (``prompt_pairs``): prompt pairs for Stage-2 switching (jsonl, tsv, or
  upstream's two line-paired txt files) -> ``{"prompt_a", "prompt_b", "index", "line"}``.
* :class:`VideoLatents` (``video_latents``): captioned videos, each encoded ONCE through injected
  ``encode_video(frames [F, H, W, 3] uint8) -> latents [F', h, w, C]`` and
  ``encode_text(list[str]) -> [N, L, D]`` callables -> ``{"latents", "text_embedding", "caption",
  "file", "index"}``. Latents and embeddings are stored float32, or (``store_dtype="bfloat16"``) as
  the uint16 bit patterns of bfloat16: a uint16 array in these datasets always means bfloat16 bits.

``index`` is the record's 0-based position among the built records in source order and ``line``
its 1-based source line. The dataset lands in ``<data_dir>/<name>/1.0.0/`` with
``build_report.json`` (counts, every skipped source with file, line and reason, the source
fingerprint). Building again over the same source reuses the folder (with ``on_error="fail"`` it
raises if that build skipped bad records); over a changed source (or options) it fails unless
``overwrite=True``. Build once (one process) before multi-host training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import tensorflow_datasets as tfds

from longlive_jax.data import text_sources, video_sources
from longlive_jax.data.report import BLANK_LINE, REPORT_FILE, BadRecord, DataError, Tally, check_on_error, write_report
from longlive_jax.data.video import ClipError, read_clip

STORE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class BuildResult:
  """What a build produced; ``num_built + num_skipped == num_sources``."""

  dataset_dir: Path
  name: str
  num_sources: int
  num_built: int
  num_skipped: int
  skipped: tuple[BadRecord, ...]
  report_path: Path
  reused: bool


class _SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared machinery: bad-record tally, build report, fingerprint check, ArrayRecord output."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}

  def __init__(self, *, data_dir: str | Path, on_error: str = "skip", overwrite: bool = False, **kwargs):
    self.on_error = check_on_error(on_error)
    self.overwrite = overwrite
    self.tally: Tally | None = None
    kwargs.setdefault("file_format", "array_record")
    super().__init__(data_dir=str(data_dir), **kwargs)

  # Subclasses provide these.
  def _features(self) -> tfds.features.FeaturesDict:
    raise NotImplementedError

  def _describe(self) -> dict[str, Any]:
    """Source paths and options: written to the report and hashed into the fingerprint."""
    raise NotImplementedError

  def _source_hash(self) -> str:
    raise NotImplementedError

  def _records(self, tally: Tally) -> Iterator[tuple[Any, dict[str, Any]]]:
    raise NotImplementedError

  # tfds hooks.
  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=(self.__doc__ or "").strip(), features=self._features())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for key, example in self._records(self.tally):
      self.tally.built()
      yield key, example
    if self.tally.num_built == 0:
      head = "; ".join(str(r) for r in self.tally.skipped[:5])
      raise DataError(f"{self.name}: no usable record in {self._describe()['source']}: {head}")

  def _download_and_prepare(self, dl_manager, download_config):
    self.tally = Tally(name=self.name, on_error=self.on_error)
    fingerprint = self.fingerprint()  # of the source as it was when the build started
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    written = self.info.splits["train"].num_examples
    if written != self.tally.num_built:
      raise DataError(f"{self.name}: internal: wrote {written} records but counted {self.tally.num_built}")
    report = self.tally.to_json(version=str(self.version), **self._describe(), fingerprint=fingerprint)
    write_report(Path(self.data_dir) / REPORT_FILE, report)  # data_dir is the temporary folder here

  def fingerprint(self) -> str:
    desc = json.dumps(self._describe(), sort_keys=True, default=str)
    return hashlib.sha256(f"{desc}\0{self._source_hash()}".encode()).hexdigest()

  def build(self) -> BuildResult:
    """Builds (or reuses an identical earlier build of) the dataset; returns the counts."""
    out = Path(self.data_dir)
    report_path = out / REPORT_FILE
    mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    reused = out.exists() and not self.overwrite
    if reused:
      old = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
      if old.get("fingerprint") != self.fingerprint():
        raise DataError(
          f"{out}: holds a dataset built from {old.get('source', 'an unknown source')} with other contents or "
          "options than this build; pass overwrite=True to rebuild it, or choose another data_dir"
        )
    elif out.exists():
      mode = tfds.download.GenerateMode.FORCE_REDOWNLOAD
    if not reused:
      with tempfile.TemporaryDirectory(prefix="longlive-tfds-") as tmp:
        self.download_and_prepare(download_dir=tmp, download_config=tfds.download.DownloadConfig(download_mode=mode))
      self.tally.warn(report_path)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    skipped = tuple(BadRecord(**r) for r in report["skipped"])
    bad = [r for r in skipped if r.kind != BLANK_LINE]
    if reused and self.on_error == "fail" and bad:
      raise DataError(f"{self.name}: {bad[0]} (the existing build at {out} skipped {len(bad)} bad source(s))")
    return BuildResult(
      out, self.name, report["num_sources"], report["num_built"], report["num_skipped"], skipped, report_path, reused
    )


class Prompts(_SourceBuilder, skip_registration=True):
  """LongLive prompt list: one prompt per line (blank lines skipped and counted)."""

  name = "prompts"

  def __init__(self, *, source: str | Path, **kwargs):
    self.source = Path(source)
    super().__init__(**kwargs)

  def _features(self):
    return tfds.features.FeaturesDict({"prompt": tfds.features.Text(), "index": np.int64, "line": np.int64})

  def _describe(self):
    return {"source": str(self.source.absolute())}

  def _source_hash(self):
    return text_sources.file_sha256(self.source) if self.source.is_file() else ""

  def _records(self, tally):
    for i, (line, prompt) in enumerate(text_sources.parse_prompts(self.source, tally)):
      yield line, {"prompt": prompt, "index": i, "line": line}


class PromptPairs(_SourceBuilder, skip_registration=True):
  """Prompt pairs for prompt-switch training (first prompt, then the switch prompt)."""

  name = "prompt_pairs"

  def __init__(self, *, source: str | Path, switch_source: str | Path | None = None, fmt: str | None = None, **kw):
    self.source = Path(source)
    self.switch_source = None if switch_source is None else Path(switch_source)
    self.fmt = fmt
    super().__init__(**kw)

  def _features(self):
    text = tfds.features.Text
    return tfds.features.FeaturesDict({"prompt_a": text(), "prompt_b": text(), "index": np.int64, "line": np.int64})

  def _describe(self):
    switch = None if self.switch_source is None else str(self.switch_source.absolute())
    return {"source": str(self.source.absolute()), "switch_source": switch, "fmt": self.fmt}

  def _source_hash(self):
    paths = [p for p in (self.source, self.switch_source) if p is not None and p.is_file()]
    return text_sources.file_sha256(*paths)

  def _records(self, tally):
    pairs = text_sources.parse_prompt_pairs(self.source, tally, fmt=self.fmt, switch_source=self.switch_source)
    for i, (line, a, b) in enumerate(pairs):
      yield line, {"prompt_a": a, "prompt_b": b, "index": i, "line": line}


@dataclasses.dataclass(frozen=True)
class VideoLatentsConfig:
  """Clip and storage options of :class:`VideoLatents` (LongLive: 81 frames of 480x832 at 16 fps)."""

  num_frames: int = 81
  height: int = 480
  width: int = 832
  fps: float | None = 16.0
  store_dtype: str = "float32"
  text_batch_size: int = 8

  def __post_init__(self):
    if self.store_dtype not in STORE_DTYPES:
      raise ValueError(f"VideoLatentsConfig.store_dtype={self.store_dtype!r}: expected one of {STORE_DTYPES}")
    if min(self.num_frames, self.height, self.width, self.text_batch_size) < 1:
      raise ValueError(f"VideoLatentsConfig: sizes must be positive, got {self}")


def _stored(x: np.ndarray, store_dtype: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x.astype(ml_dtypes.bfloat16).view(np.uint16) if store_dtype == "bfloat16" else x


class VideoLatents(_SourceBuilder, skip_registration=True):
  """Captioned videos encoded once to latents and caption embeddings by injected encoders."""

  name = "video_latents"

  def __init__(
    self,
    *,
    source: str | Path,
    encode_video: Callable[[np.ndarray], np.ndarray],
    encode_text: Callable[[list[str]], np.ndarray],
    config: VideoLatentsConfig | None = None,
    encoder_id: str = "",
    **kwargs,
  ):
    self.source = Path(source)
    self.encode_video, self.encode_text = encode_video, encode_text
    self.config, self.encoder_id = config or VideoLatentsConfig(), encoder_id
    self._shapes: dict[str, tuple[int, ...]] = {}
    super().__init__(**kwargs)

  def _features(self):
    dtype = np.uint16 if self.config.store_dtype == "bfloat16" else np.float32
    tensor = tfds.features.Tensor
    return tfds.features.FeaturesDict(
      {
        "latents": tensor(shape=(None, None, None, None), dtype=dtype, encoding=tfds.features.Encoding.BYTES),
        "text_embedding": tensor(shape=(None, None), dtype=dtype, encoding=tfds.features.Encoding.BYTES),
        "caption": tfds.features.Text(),
        "file": tfds.features.Text(),
        "index": np.int64,
      }
    )

  def _describe(self):
    return {
      "source": str(self.source.absolute()),
      "config": dataclasses.asdict(self.config),
      "encoder_id": self.encoder_id,
    }

  def _source_hash(self):
    scratch = Tally(name=self.name, on_error="skip")
    return video_sources.folder_fingerprint(self.source, video_sources.scan_folder(self.source, scratch))

  def _check_shape(self, what: str, x: np.ndarray, rank: int, src: str) -> None:
    if x.ndim != rank or not np.all(np.isfinite(x)):
      raise DataError(f"{self.name}: {what} of {src}: expected a finite rank-{rank} array, got shape {x.shape}")
    first = self._shapes.setdefault(what, x.shape)
    if x.shape != first:
      raise DataError(f"{self.name}: {what} of {src} has shape {x.shape}, earlier records {first}: shapes must agree")

  def _encode_clip(self, src: video_sources.VideoSource, frames: np.ndarray) -> np.ndarray:
    try:
      latents = np.asarray(self.encode_video(frames))
    except Exception as e:
      raise DataError(f"{self.name}: encode_video failed on {src.path}: {type(e).__name__}: {e}") from e
    self._check_shape("latents", latents, 4, str(src.path))
    return latents

  def _flush(self, pending: list, start: int) -> Iterator[tuple[str, dict[str, Any]]]:
    captions = [src.caption for src, _ in pending]
    try:
      emb = np.asarray(self.encode_text(captions))
    except Exception as e:
      raise DataError(f"{self.name}: encode_text failed on captions of {pending[0][0].path}...: {e}") from e
    if emb.ndim != 3 or emb.shape[0] != len(captions):
      raise DataError(f"{self.name}: encode_text returned shape {emb.shape} for {len(captions)} captions")
    dt = self.config.store_dtype
    for j, ((src, latents), e) in enumerate(zip(pending, emb, strict=True)):
      self._check_shape("text_embedding", e, 2, str(src.caption_source))
      record = {"latents": _stored(latents, dt), "text_embedding": _stored(e, dt), "caption": src.caption}
      yield src.rel, {**record, "file": src.rel, "index": start + j}

  def _records(self, tally):
    cfg = self.config
    pending, n = [], 0
    for src in video_sources.scan_folder(self.source, tally):
      if src.problem is not None:
        tally.bad(src.path, None, *src.problem)
        continue
      try:
        frames = read_clip(src.path, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width, fps=cfg.fps)
      except ClipError as e:
        tally.bad(src.path, None, e.kind, e.reason)
        continue
      pending.append((src, self._encode_clip(src, frames)))
      if len(pending) == cfg.text_batch_size:
        yield from self._flush(pending, n)
        n, pending = n + len(pending), []
    if pending:
      yield from self._flush(pending, n)
    tally.notes.update(
      latent_shape=self._shapes.get("latents"), text_embedding_shape=self._shapes.get("text_embedding")
    )


def build_prompts(source: str | Path, *, data_dir: str | Path, on_error: str = "skip", overwrite: bool = False):
  """Builds the ``prompts`` dataset of a prompt txt file; returns a :class:`BuildResult`."""
  return Prompts(source=source, data_dir=data_dir, on_error=on_error, overwrite=overwrite).build()


def build_prompt_pairs(
  source: str | Path,
  *,
  data_dir: str | Path,
  switch_source: str | Path | None = None,
  fmt: str | None = None,
  on_error: str = "skip",
  overwrite: bool = False,
) -> BuildResult:
  """Builds the ``prompt_pairs`` dataset (jsonl, tsv, or ``source`` + ``switch_source`` txt files)."""
  kw = {"switch_source": switch_source, "fmt": fmt, "on_error": on_error, "overwrite": overwrite}
  return PromptPairs(source=source, data_dir=data_dir, **kw).build()


def build_video_latents(
  source: str | Path,
  *,
  data_dir: str | Path,
  encode_video: Callable[[np.ndarray], np.ndarray],
  encode_text: Callable[[list[str]], np.ndarray],
  config: VideoLatentsConfig | None = None,
  encoder_id: str = "",
  on_error: str = "skip",
  overwrite: bool = False,
) -> BuildResult:
  """Builds the ``video_latents`` dataset of a captioned video folder (``encoder_id`` names the encoders)."""
  kw = {"config": config, "encoder_id": encoder_id, "on_error": on_error, "overwrite": overwrite}
  return VideoLatents(
    source=source, data_dir=data_dir, encode_video=encode_video, encode_text=encode_text, **kw
  ).build()
