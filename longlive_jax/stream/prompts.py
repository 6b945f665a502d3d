"""Stream inputs: prompt embeddings, LongLive's jsonl prompt scripts, switch frames and typed live prompts.

Split from :mod:`longlive_jax.stream.run`, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from longlive_jax.stream.options import StreamInputError, StreamOptions

EMBEDDING_KEYS = ("prompt_embeds", "context", "embedding", "embeddings")
QUIT = ":quit"


def check_switch_frames(frames: Sequence[int], *, opts: StreamOptions, where: str = "switch frame") -> None:
  """Switch frames must be block boundaries (multiples of ``opts.block_frames``) inside the video.

  The streaming engine would move a switch at frame 10 to the next block start (12); the command line
  refuses it instead, naming the nearest valid frames.
  """
  bf = opts.block_frames
  for f in frames:
    if f % bf == 0:
      continue
    lo, hi = f // bf * bf, (f // bf + 1) * bf
    near = [str(v) for v in (lo, hi) if 0 < v < opts.frames]
    hint = f"; the nearest valid frames are {' and '.join(near)}" if near else ""
    raise StreamInputError(
      f"{where} {f}: switches happen at block boundaries, i.e. at multiples of the block size "
      f"(--block-frames {bf} latent frames){hint}"
    )


def read_embedding(path: str | Path, *, text_len: int, text_dim: int) -> np.ndarray:
  """A prompt embedding ``[B, text_len, text_dim]`` float32 from ``.npy`` / ``.npz``.

  Shorter sequences are zero-padded to ``text_len`` (the DiT expects zero rows past the prompt).
  """
  path = Path(path)
  if not path.is_file():
    raise StreamInputError(f"{path}: no such embedding file")
  try:
    data = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise StreamInputError(f"{path}: not a .npy/.npz array file ({e})") from e
  if isinstance(data, np.lib.npyio.NpzFile):
    keys = list(data.keys())
    key = next((k for k in EMBEDDING_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
    if key is None:
      raise StreamInputError(f"{path}: holds {keys}; name the embedding one of {EMBEDDING_KEYS} or store one array")
    arr = data[key]
  else:
    arr = data
  want = f"[text_len <= {text_len}, {text_dim}] (or with a batch axis)"
  if arr.ndim not in (2, 3):
    raise StreamInputError(
      f"{path}: embedding is a {arr.ndim}-D array of shape {tuple(arr.shape)}; the model expects {want}"
    )
  if arr.ndim == 2:
    arr = arr[None]
  if arr.shape[2] != text_dim:
    raise StreamInputError(
      f"{path}: embedding has shape {tuple(arr.shape)}; the model expects {want}: "
      f"width {arr.shape[2]} != text_dim {text_dim}"
    )
  if arr.shape[1] > text_len:
    raise StreamInputError(f"{path}: embedding has {arr.shape[1]} tokens; the model takes at most {text_len}")
  if not np.all(np.isfinite(arr)):
    raise StreamInputError(f"{path}: embedding contains NaN or inf")
  out = np.zeros((arr.shape[0], text_len, text_dim), np.float32)
  out[:, : arr.shape[1]] = arr
  return out


@dataclasses.dataclass(frozen=True)
class PromptScript:
  """One line of LongLive's interactive jsonl: segment prompts and the frames where they start."""

  line: int
  prompts: tuple[str, ...]
  switch_frames: tuple[int, ...]


def read_prompt_script(path: str | Path, *, switch_frames: Sequence[int] | None = None) -> list[PromptScript]:
  """Parses ``{"prompts": [...], "switch_frame_indices": [...]?}`` per line (LongLive's ``MultiTextDataset``).

  ``switch_frames`` (LongLive's config ``switch_frame_indices``, the CLI's ``--switch-frames``) applies to
  lines without their own; a line with its own is a conflict (an error). A line with P prompts needs P - 1
  switch frames, integers (a comma-separated string of them is accepted too).
  """
  path = Path(path)
  if not path.is_file():
    raise StreamInputError(f"{path}: no such prompt file")
  out = []
  for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not raw.strip():
      continue
    try:
      rec = json.loads(raw)
    except json.JSONDecodeError as e:
      raise StreamInputError(f"{path}:{i}: not valid JSON ({e.msg})") from e
    prompts = rec.get("prompts") if isinstance(rec, dict) else None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
      raise StreamInputError(f'{path}:{i}: expected {{"prompts": ["...", ...]}} with non-empty strings')
    own = rec.get("switch_frame_indices")
    if own is not None and switch_frames is not None:
      raise StreamInputError(
        f"{path}:{i}: --switch-frames {','.join(map(str, switch_frames))} conflicts with the line's own "
        f"switch_frame_indices {own!r}; give the switch frames in one place only"
      )
    sw = _switch_indices(own, f"{path}:{i}: switch_frame_indices") if own is not None else tuple(switch_frames or ())
    if len(sw) != len(prompts) - 1:
      raise StreamInputError(
        f"{path}:{i}: {len(prompts)} prompts need {len(prompts) - 1} switch frame indices, got {len(sw)} {list(sw)}"
      )
    out.append(PromptScript(i, tuple(prompts), sw))
  if not out:
    raise StreamInputError(f"{path}: no prompts")
  return out


def _switch_indices(value, where: str) -> tuple[int, ...]:
  """Switch frame indices from a jsonl line: a list of integers, or a comma-separated string of them."""
  items = value.replace(",", " ").split() if isinstance(value, str) else value
  if not isinstance(items, list):
    raise StreamInputError(f"{where}: expected a list of latent frame indices (integers), got {value!r}")
  out = []
  for x in items:
    if isinstance(value, str):
      try:
        x = int(x)
      except ValueError:
        raise StreamInputError(f"{where}: {x!r} is not an integer latent frame index") from None
    elif isinstance(x, bool) or not isinstance(x, int):
      raise StreamInputError(f"{where}: {x!r} ({type(x).__name__}) is not an integer latent frame index")
    out.append(x)
  return tuple(out)


class LivePrompts:
  """Prompts typed while generating: a thread reads lines from ``stream`` into a queue.

  Each non-empty line is a new prompt (resolved by the caller); ``:quit`` ends the stream.
  """

  def __init__(self, stream: Iterable[str]):
    self.queue: queue.Queue[str] = queue.Queue()
    self._held: str | None = None
    self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
    self._thread.start()

  def _read(self, stream):
    for line in stream:
      if line.strip():
        self.queue.put(line.strip())

  def poll(self, *, prompts: bool = True) -> str | None:
    """The next line, or None. With ``prompts=False`` only ``:quit`` is taken; a prompt line waits."""
    if self._held is None:
      try:
        self._held = self.queue.get_nowait()
      except queue.Empty:
        return None
    if self._held != QUIT and not prompts:
      return None
    line, self._held = self._held, None
    return line
