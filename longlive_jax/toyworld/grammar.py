"""The toy world's language: attributes, captions, parsing, the held-out split and prompt sampling.

A scene is one object on a plain background, described by one sentence of the grammar

    a <colour> <shape> <motion> on a <colour> background

with colours red, green, blue, yellow, purple, white (the background's differs from the object's),
shapes circle, square, triangle, and motions ``moves left`` / ``moves right`` / ``moves up`` /
``moves down`` (constant speed, wrapping around the edges), ``bounces`` (diagonal, setting off down and
to the right, reflecting off the walls) and ``stays still``. That is 6 x 5 x 3 x 6 = 540 combinations of (colour, shape, motion,
background); :data:`HELD_OUT` is a fixed ~10% of them (54) that never appear in training, so that
generalisation to unseen combinations can be measured (:func:`is_held_out`).

Parsing is forgiving about case, punctuation and spacing ("A red circle moves right on a blue
background.") and strict about words: :func:`parse` raises :class:`PromptError` naming what is
wrong. Colour and word choices are part of the released model: do not reorder them.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
  "red": (220, 45, 45),
  "green": (45, 175, 70),
  "blue": (45, 85, 220),
  "yellow": (235, 205, 40),
  "purple": (150, 65, 190),
  "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "bounces", "stays still")
# Velocity direction of each motion in (dx, dy) per frame, y pointing down. "bounces" sets off along
# (+1, +1) (normalised to the world speed) and reflects off the walls (see :mod:`longlive_jax.toyworld.render`).
DIRECTIONS: dict[str, tuple[float, float]] = {
  "moves left": (-1.0, 0.0),
  "moves right": (1.0, 0.0),
  "moves up": (0.0, -1.0),
  "moves down": (0.0, 1.0),
  "bounces": (1.0, 1.0),
  "stays still": (0.0, 0.0),
}
VOCABULARY: tuple[str, ...] = tuple(
  sorted({"a", "on", "background", *COLOURS, *SHAPES, *(w for m in MOTIONS for w in m.split())})
)
HELD_OUT_FRACTION = 0.1
_HELD_OUT_SEED = 20251201


class PromptError(ValueError):
  """A prompt outside the world's grammar; the message names the offending word or part."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attributes:
  """What one prompt asks for."""

  colour: str
  shape: str
  motion: str
  background: str

  def __post_init__(self):
    for name, value, valid in (
      ("colour", self.colour, COLOURS),
      ("shape", self.shape, SHAPES),
      ("motion", self.motion, MOTIONS),
      ("background", self.background, COLOURS),
    ):
      if value not in valid:
        raise PromptError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    if self.colour == self.background:
      raise PromptError(f"the object and the background are both {self.colour}; they must differ")

  @property
  def caption(self) -> str:
    return f"a {self.colour} {self.shape} {self.motion} on a {self.background} background"

  @property
  def combo(self) -> tuple[str, str, str, str]:
    return (self.colour, self.shape, self.motion, self.background)

  def replace(self, **changes: str) -> Attributes:
    return dataclasses.replace(self, **changes)


def all_combinations() -> list[Attributes]:
  """Every valid (colour, shape, motion, background), in a fixed order (540)."""
  return [
    Attributes(colour=c, shape=s, motion=m, background=b)
    for c, s, m, b in itertools.product(COLOURS, SHAPES, MOTIONS, COLOURS)
    if c != b
  ]


def _held_out() -> frozenset[tuple[str, str, str, str]]:
  combos = all_combinations()
  order = np.random.default_rng(_HELD_OUT_SEED).permutation(len(combos))
  n = round(HELD_OUT_FRACTION * len(combos))
  return frozenset(combos[i].combo for i in order[:n])


HELD_OUT: frozenset[tuple[str, str, str, str]] = _held_out()


def is_held_out(attrs: Attributes) -> bool:
  return attrs.combo in HELD_OUT


def split_combinations(split: str) -> list[Attributes]:
  """``"train"`` (never held out), ``"held_out"`` or ``"all"`` combinations, in the fixed order."""
  if split not in ("train", "held_out", "all"):
    raise ValueError(f"split must be 'train', 'held_out' or 'all', got {split!r}")
  combos = all_combinations()
  if split == "all":
    return combos
  return [a for a in combos if is_held_out(a) == (split == "held_out")]


def words(prompt: str) -> list[str]:
  """Lower-cased words of a prompt, punctuation dropped (``"A red circle." -> ["a", "red", "circle"]``)."""
  return re.findall(r"[a-z0-9']+", prompt.lower())


def unknown_words(prompt: str) -> list[str]:
  return [w for w in words(prompt) if w not in VOCABULARY]


def parse(prompt: str) -> Attributes:
  """The attributes of a prompt of the grammar; :class:`PromptError` names what does not fit."""
  ws = words(prompt)
  bad = [w for w in ws if w not in VOCABULARY]
  if bad:
    raise PromptError(f"unknown word {bad[0]!r} in {prompt!r}; the world's vocabulary is: {', '.join(VOCABULARY)}")
  pattern = "a <colour> <shape> <motion> on a <colour> background"
  if len(ws) < 8 or ws[0] != "a" or ws[-4:-2] != ["on", "a"] or ws[-1] != "background":
    raise PromptError(f"{prompt!r} does not follow the pattern {pattern!r}")
  colour, shape, motion, background = ws[1], ws[2], " ".join(ws[3:-4]), ws[-2]
  if colour not in COLOURS:
    raise PromptError(f"{prompt!r}: {colour!r} is not a colour ({', '.join(COLOURS)})")
  if shape not in SHAPES:
    raise PromptError(f"{prompt!r}: {shape!r} is not a shape ({', '.join(SHAPES)})")
  if motion not in MOTIONS:
    raise PromptError(f"{prompt!r}: {motion!r} is not a motion ({', '.join(MOTIONS)})")
  if background not in COLOURS:
    raise PromptError(f"{prompt!r}: {background!r} is not a background colour ({', '.join(COLOURS)})")
  return Attributes(colour=colour, shape=shape, motion=motion, background=background)


def sample_attributes(
  rng: np.random.Generator, *, split: str = "train", motion_weights: Mapping[str, float] | None = None
) -> Attributes:
  """A uniformly drawn combination of ``split`` (see :func:`split_combinations`).

  ``motion_weights`` (e.g. ``{"bounces": 2}``) draws each combination with its motion's weight (1 for a motion not
  named) instead: oversampling the motion a model finds hardest. ``None`` keeps the uniform draw (and its random
  stream) unchanged."""
  combos = _SPLITS[split]
  if not motion_weights:
    return combos[int(rng.integers(len(combos)))]
  bad = [m for m in motion_weights if m not in MOTIONS]
  if bad or any(not w >= 0 for w in motion_weights.values()):
    raise ValueError(f"motion_weights: need motions of {', '.join(MOTIONS)} with weights >= 0, got {motion_weights}")
  w = np.asarray([float(motion_weights.get(a.motion, 1.0)) for a in combos])  # [combos]
  if w.sum() <= 0:
    raise ValueError(f"motion_weights: every combination of split {split!r} has weight 0")
  return combos[int(rng.choice(len(combos), p=w / w.sum()))]


def sample_switch(rng: np.random.Generator, attrs: Attributes, *, split: str = "train") -> Attributes:
  """A different combination of ``split`` that changes one or two attributes of ``attrs`` (a natural edit)."""
  combos = _SPLITS[split]
  near = [a for a in combos if 1 <= sum(x != y for x, y in zip(a.combo, attrs.combo, strict=True)) <= 2]
  return near[int(rng.integers(len(near)))]


_SPLITS = {name: split_combinations(name) for name in ("train", "held_out", "all")}
