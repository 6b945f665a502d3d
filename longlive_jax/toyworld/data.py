"""Training data of the toy world: a random-access clip source for grain, and ``.npz`` record sets.

:class:`ClipSource` renders record ``i`` on demand, deterministically from ``(seed, i)``: a scene of
the requested split with, with probability ``switch_prob``, one prompt switch at a random latent
boundary (a natural edit of one or two attributes). It is a grain random-access source, so the train
loop's pipeline shards, shuffles and checkpoints it like a built dataset (:func:`longlive_jax.data.pipeline.batched`).

The other stages read ``.npz`` files of stacked records (``data.source: X.npz``):

  * :func:`build_latents` (teacher, forced stage): ``latents [N, F, h, w, C]`` encoded with a trained VAE and
    ``text_embedding [N, L, D]`` (with prompt switches, also ``switch_latent`` and ``prompt_before``); a ``caption_dropout`` fraction of records get the empty prompt's
    embedding (the unconditional branch that classifier-free guidance needs), ``prompt`` records which,
    ``centred`` which clips start near the centre (:func:`select_centred` keeps those);
  * :func:`build_prompts` (ODE pairs, Self-Forcing): ``prompt [N]``;
  * :func:`build_prompt_pairs` (streaming long tuning): ``prompt_a [N]``, ``prompt_b [N]`` (a natural
    edit of ``prompt_a``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from longlive_jax.data.pipeline import save_npz_records
from longlive_jax.toyworld import grammar
from longlive_jax.toyworld.render import Scene, Segment, latent_to_video_frame, render


def clip_rng(seed: int, index: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), int(index)])


# Standard deviation (px at 64 px) of a centred start. Why centred starts exist: with starts uniform over the
# frame, the mean clip of a caption has no object anywhere, so at high noise the flow-matching loss rewards a
# caption's colours but not its motion or shape (the toy teacher learnt colour and ignored the motion word,
# experiments/toyworld/motion_text.py); near the centre, a caption's mean clip is its object's path.
CENTRE_SPREAD = 6.0


def sample_scene(
  rng: np.random.Generator,
  *,
  latent_frames: int,
  size: int,
  split: str = "train",
  switch_prob: float = 0.0,
  switch_block: int = 1,
  start_spread: float | None = None,
  lead_in: int = 0,
  motion_weights: Mapping[str, float] | None = None,
) -> Scene:
  """A random scene of ``split`` with at most one switch at a latent boundary (never at latent 0; at a multiple
  of ``switch_block`` latents, e.g. 3 for the generator's block boundaries, where LongLive switches); its start
  is uniform, or near the centre with ``start_spread``, ``lead_in`` frames before the clip (see
  :class:`~longlive_jax.toyworld.render.Scene`); ``motion_weights`` weights the first prompt's motion
  (:func:`~longlive_jax.toyworld.grammar.sample_attributes`)."""
  if switch_block < 1:
    raise ValueError(f"switch_block must be >= 1 latent, got {switch_block}")
  attrs = grammar.sample_attributes(rng, split=split, motion_weights=motion_weights)
  segments = [Segment(start=0, attrs=attrs)]
  if latent_frames > max(2, switch_block) and rng.random() < switch_prob:
    at = switch_block * int(rng.integers(1, (latent_frames - 1) // switch_block + 1))  # latent of the switch
    segments.append(Segment(start=latent_to_video_frame(at), attrs=grammar.sample_switch(rng, attrs, split=split)))
  return Scene(
    seed=int(rng.integers(2**31)), segments=tuple(segments), size=size, start_spread=start_spread, lead_in=lead_in
  )


class ClipSource:
  """Random access to ``num_records`` rendered clips: ``{"video" uint8 [T, H, W, 3], "caption", "index"}``.

  ``T = 1 + 4 (latent_frames - 1)``; ``caption`` is the first prompt.

  A fraction ``centre_fraction`` of the clips start a video near the centre (the first window of a video). The
  others start anywhere in space and, with ``lead_in_frames`` > 0, in time: the world runs a lead-in drawn from
  ``0 .. lead_in_frames`` before the clip, so they are windows from anywhere in a long video. Why: a model that
  scores the windows of long rollouts (the DMD teacher of the student stages) must know what such windows look
  like; a bouncing object sets off (+x, +y) only at the start of a video, later windows show every diagonal
  (one full bounce cycle at 64 px is 128 frames: ``2 * (64 - 2 * 15) / (0.75 / sqrt 2)``).
  """

  def __init__(
    self,
    *,
    num_records: int,
    latent_frames: int,
    size: int = 64,
    split: str = "train",
    switch_prob: float = 0.0,
    switch_block: int = 1,
    seed: int = 0,
    centre_fraction: float = 0.0,
    centre_spread: float = CENTRE_SPREAD,
    lead_in_frames: int = 0,
    motion_weights: Mapping[str, float] | None = None,
  ):
    if num_records < 1 or latent_frames < 1:
      raise ValueError(f"ClipSource needs num_records >= 1 and latent_frames >= 1, got {num_records}, {latent_frames}")
    if not 0.0 <= centre_fraction <= 1.0:
      raise ValueError(f"centre_fraction must be in [0, 1], got {centre_fraction}")
    if lead_in_frames < 0:
      raise ValueError(f"lead_in_frames must be >= 0, got {lead_in_frames}")
    self.num_records, self.latent_frames, self.size = num_records, latent_frames, size
    self.split, self.switch_prob, self.switch_block, self.seed = split, switch_prob, switch_block, seed
    self.centre_fraction, self.centre_spread = centre_fraction, centre_spread
    self.lead_in_frames = lead_in_frames
    self.motion_weights = dict(motion_weights) if motion_weights else None

  def __len__(self) -> int:
    return self.num_records

  def centred(self, index: int) -> bool:
    """Whether clip ``index`` starts near the centre (drawn from ``(seed, index)``, independent of the scene)."""
    return self.centre_fraction > 0 and np.random.default_rng([self.seed, index, 7]).random() < self.centre_fraction

  def lead_in(self, index: int) -> int:
    """Frames the world runs before clip ``index`` (0 for a centred clip; drawn from ``(seed, index)``)."""
    if self.lead_in_frames == 0 or self.centred(index):
      return 0
    return int(np.random.default_rng([self.seed, index, 11]).integers(0, self.lead_in_frames + 1))

  def scene(self, index: int) -> Scene:
    rng = clip_rng(self.seed, index)
    centred = self.centred(index)
    return sample_scene(
      rng, latent_frames=self.latent_frames, size=self.size, split=self.split, switch_prob=self.switch_prob,
      switch_block=self.switch_block, start_spread=self.centre_spread if centred else None, lead_in=self.lead_in(index),
      motion_weights=self.motion_weights,
    )  # fmt: skip

  def __getitem__(self, index: int) -> dict[str, Any]:
    scene = self.scene(index)
    frames = 1 + 4 * (self.latent_frames - 1)
    return {"video": render(scene, frames), "caption": scene.segments[0].attrs.caption, "index": np.int64(index)}


def build_prompts(
  path: str | Path, *, num: int, seed: int, split: str = "train", motion_weights: Mapping[str, float] | None = None
) -> Path:
  """``prompt [num]``: captions of uniformly drawn combinations of ``split`` (``motion_weights``: each combination
  drawn with its motion's weight, :func:`grammar.sample_attributes`; without it the draws are unchanged)."""
  rng = np.random.default_rng([seed, 1])
  prompts = [grammar.sample_attributes(rng, split=split, motion_weights=motion_weights).caption for _ in range(num)]
  return save_npz_records(path, prompt=np.asarray(prompts))


def build_prompt_pairs(
  path: str | Path, *, num: int, seed: int, split: str = "train", motion_weights: Mapping[str, float] | None = None
) -> Path:
  """``prompt_a [num]``, ``prompt_b [num]``: a combination and a natural edit of it (1-2 attributes);
  ``motion_weights`` weights the first prompt's motion (:func:`build_prompts`)."""
  rng = np.random.default_rng([seed, 2])
  a, b = [], []
  for _ in range(num):
    attrs = grammar.sample_attributes(rng, split=split, motion_weights=motion_weights)
    a.append(attrs.caption)
    b.append(grammar.sample_switch(rng, attrs, split=split).caption)
  return save_npz_records(path, prompt_a=np.asarray(a), prompt_b=np.asarray(b))


def build_latents(
  path: str | Path,
  *,
  vae,
  encode_text,
  num: int,
  latent_frames: int,
  size: int,
  seed: int,
  caption_dropout: float = 0.1,
  centre_fraction: float = 0.0,
  lead_in_frames: int = 0,
  switch_prob: float = 0.0,
  switch_block: int = 1,
  motion_weights: Mapping[str, float] | None = None,
  batch: int = 8,
  progress: bool = True,
) -> Path:
  """Encodes ``num`` rendered clips with ``vae``; see the module docstring. A fraction ``centre_fraction`` of the
  clips start near the centre (:data:`CENTRE_SPREAD`), the others anywhere (in time too with ``lead_in_frames``:
  :class:`ClipSource`).

  With ``switch_prob`` > 0 that fraction of the clips switch prompts once, at a multiple of ``switch_block``
  latents (:func:`sample_scene`), and the records say so: ``switch_latent [N]`` int32 (the first latent under the
  new prompt; 0: no switch), ``prompt`` / ``text_embedding`` of the prompt the clip ends under (what a KV-recache
  re-encodes the past with) and ``prompt_before`` the one it starts under (the forced stage's switch clips).
  Without switches the file is as before (no switch arrays; ``prompt`` is the clip's one prompt).
  ``motion_weights`` oversamples motions (:func:`sample_scene`)."""
  import jax.numpy as jnp
  from tqdm.auto import tqdm

  from longlive_jax.vae.stream import encode

  src = ClipSource(
    num_records=num, latent_frames=latent_frames, size=size, seed=seed, centre_fraction=centre_fraction,
    lead_in_frames=lead_in_frames, switch_prob=switch_prob, switch_block=switch_block,
    motion_weights=motion_weights,
  )  # fmt: skip
  drop = np.random.default_rng([seed, 3]).random(num) < caption_dropout
  scenes = [src.scene(i) for i in range(num)]  # no render
  captions = [sc.segments[-1].attrs.caption if not drop[i] else "" for i, sc in enumerate(scenes)]
  switches = {}
  if switch_prob > 0:
    switches = {
      "prompt_before": np.asarray([sc.segments[0].attrs.caption if not drop[i] else "" for i, sc in enumerate(scenes)]),
      "switch_latent": np.asarray([(sc.segments[-1].start + 3) // 4 for sc in scenes], np.int32),  # 4k - 3 -> k
    }
  lat = []
  for s in tqdm(range(0, num, batch), desc="encode clips", unit="batch", disable=not progress):
    video = np.stack([src[i]["video"] for i in range(s, min(s + batch, num))])  # [b, T, H, W, 3]
    x = jnp.asarray(video, jnp.float32) / 127.5 - 1.0
    lat.append(np.asarray(encode(vae, x), np.float32))  # [b, F, h, w, C]
  emb = encode_text(captions)  # [N, L, D]
  centred = np.asarray([src.centred(i) for i in range(num)])
  return save_npz_records(
    path,
    latents=np.concatenate(lat),
    text_embedding=np.asarray(emb, np.float32),
    prompt=np.asarray(captions),
    centred=centred,
    lead_in=np.asarray([src.lead_in(i) for i in range(num)], np.int32),
    **switches,
  )


def select_centred(path: str | Path, out: str | Path, *, frames: int | None = None) -> tuple[Path, int, int]:
  """Writes the records of ``path`` (a :func:`build_latents` file) whose clips start near the centre to ``out``;
  returns ``(out, kept, total)``. A teacher can go on training on them alone (``data.source``): there a caption's
  mean clip holds a whole object, not the faint one of a mixed set.

  ``frames``: keep only each clip's first ``frames`` latents (``latents [N, F, H, W, C]`` cut to ``F = frames``).
  The toy teacher learnt to take an object's motion from the text on 9-latent clips, which it had not in 10000
  steps on 21 (README).
  """
  from longlive_jax.data.pipeline import NpzRecords

  arrays = NpzRecords(path).arrays  # names the file when it is not a readable .npz of records
  if "centred" not in arrays:
    raise ValueError(f"{path} has no 'centred' array (arrays: {sorted(arrays)}); write it with `toyworld latents`")
  keep = np.asarray(arrays["centred"], bool)
  if not keep.any():
    raise ValueError(f"{path}: no clip starts near the centre (made with --centre-fraction 0?)")
  kept = {k: v[keep] for k, v in arrays.items()}
  if frames is not None:
    have = kept["latents"].shape[1]
    if not 1 <= frames <= have:
      raise ValueError(f"{path}: frames must be in [1, {have}] (its clips have {have} latents), got {frames}")
    kept["latents"] = kept["latents"][:, :frames]  # [N, frames, H, W, C]
  return save_npz_records(out, **kept), int(keep.sum()), int(keep.size)
