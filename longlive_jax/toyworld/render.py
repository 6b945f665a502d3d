"""Rendering the toy world: a scene (seed + prompt segments) -> uint8 video ``[T, H, W, 3]`` at 16 fps.

The world is simulated frame by frame, independently of how it is described: one object with a
position and a velocity. A prompt switch (:class:`Segment`) changes the attributes from a given
video frame on while the world goes on: the object keeps its position when it changes colour, shape
or direction, so a smooth switch has a ground truth. Positions are in pixels, ``y`` pointing down:

  * ``moves <dir>``: constant speed :data:`SPEED` (px / frame at 64 px, scaled with the size), wrapping
    around the edges (the object is drawn on a torus, so it leaves on one side and enters on the other);
  * ``bounces``: diagonal at the same speed, reflecting off the walls (the object stays inside; entering
    ``bounces`` from a wrapped position clamps it inside). It always sets off down and to the right (+x, +y):
    the direction is then a function of what a video shows (where the object is, where it went), as for
    every other motion, so a prompt determines a video up to its start position and a switch into
    ``bounces`` has one ground truth. (Until 2026-12-04 the seed drew the diagonal's signs: four equally
    likely paths per prompt that no frame reveals, whose average is a still or axis-moving object; the
    teacher drew diagonals in 21-44% of windows and the students in 10%.)
  * ``stays still``: zero velocity.

Edges are anti-aliased analytically (coverage from a signed distance). Everything is a pure function
of the :class:`Scene`, so the same scene always renders the same pixels (numpy only, no JAX).

Video frame ``f`` belongs to latent frame ``0`` if ``f == 0`` and to ``(f + 3) // 4`` otherwise (Wan's
causal VAE: 1 + 4k frames). :func:`latent_to_video_frame` maps a LongLive switch index (a latent
frame) to the first video frame it changes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from longlive_jax.toyworld.grammar import COLOURS, DIRECTIONS, Attributes, parse

FPS = 16
DEFAULT_SIZE = 64
VAE_STRIDE = 4  # the world's VAE (configs/toyworld/vae.yaml): 3 levels, 4x in space
LATENT_SIZE = DEFAULT_SIZE // VAE_STRIDE  # 16: latents of a clip at the default size
SPEED = 0.75  # px per frame at 64 px
RADIUS = 10.0  # object radius (circle) / half side (square) at 64 px
TRIANGLE_CIRCUMRADIUS = 1.5  # in units of RADIUS (area within 10% of the circle's)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Segment:
  """The attributes in force from video frame ``start`` on."""

  start: int
  attrs: Attributes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scene:
  """One video of the world: a seed (start position) and its prompt segments.

  The start is uniform over the frame (away from the walls), or with ``start_spread`` a Gaussian of that
  standard deviation (px at 64 px, scaled with ``size``) around the centre. With ``lead_in`` > 0 the video is a
  window of a longer one: the world starts there and runs ``lead_in`` frames under the first segment's
  attributes before frame 0, so a bouncing object may enter the video along any diagonal (what the windows of a
  long generated video show) rather than setting off (+x, +y).

  ``segments[0].start`` is 0; later starts increase strictly.
  """

  seed: int
  segments: tuple[Segment, ...]
  size: int = DEFAULT_SIZE
  start_spread: float | None = None  # None: start uniform over the frame; else Gaussian around the centre (px at 64)
  lead_in: int = 0  # frames the world ran (under segments[0]) before this video's frame 0

  def __post_init__(self):
    object.__setattr__(self, "segments", tuple(self.segments))
    if not self.segments or self.segments[0].start != 0:
      raise ValueError("a scene's first segment must start at frame 0")
    starts = [s.start for s in self.segments]
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
      raise ValueError(f"segment starts must increase strictly, got {starts}")
    if self.size < 16 or self.size % 8:
      raise ValueError(f"size must be a multiple of 8 and >= 16, got {self.size}")
    if self.start_spread is not None and not self.start_spread >= 0:
      raise ValueError(f"start_spread must be >= 0 px, got {self.start_spread}")
    if self.lead_in < 0:
      raise ValueError(f"lead_in must be >= 0 frames, got {self.lead_in}")

  @classmethod
  def from_prompts(
    cls, prompts: Sequence[str | Attributes], *, seed: int, switch_frames: Sequence[int] = (), size: int = DEFAULT_SIZE
  ) -> Scene:
    """A scene from prompts (text or attributes) and the video frames where prompts 1, 2, ... start."""
    if len(switch_frames) != len(prompts) - 1:
      raise ValueError(f"{len(prompts)} prompts need {len(prompts) - 1} switch frames, got {len(switch_frames)}")
    attrs = [p if isinstance(p, Attributes) else parse(p) for p in prompts]
    starts = [0, *[int(f) for f in switch_frames]]
    return cls(
      seed=seed, segments=tuple(Segment(start=s, attrs=a) for s, a in zip(starts, attrs, strict=True)), size=size
    )

  @property
  def scale(self) -> float:
    return self.size / DEFAULT_SIZE

  @property
  def radius(self) -> float:
    return RADIUS * self.scale

  @property
  def margin(self) -> float:
    """Distance from the centre to the walls a bouncing object reflects at (the triangle's apex reach)."""
    return TRIANGLE_CIRCUMRADIUS * self.radius

  def attrs_at(self, frame: int) -> Attributes:
    cur = self.segments[0].attrs
    for s in self.segments:
      if s.start <= frame:
        cur = s.attrs
    return cur


def num_video_frames(latent_frames: int) -> int:
  """Video frames of ``latent_frames`` latents (Wan's causal VAE: 1 + 4 (F - 1))."""
  return 1 + 4 * (latent_frames - 1)


def latent_to_video_frame(latent_index: int) -> int:
  """First video frame of latent frame ``latent_index`` (0 -> 0, k -> 4k - 3)."""
  return 0 if latent_index == 0 else 4 * latent_index - 3


def simulate(scene: Scene, num_frames: int) -> np.ndarray:
  """float64 ``[T, 2]`` object centre (x, y) in pixels per frame."""
  rng = np.random.default_rng(scene.seed)
  size, r = float(scene.size), scene.margin
  if scene.start_spread is None:
    pos = rng.uniform(r, size - r, size=2)
  else:  # near the centre: where an object starts is then part of what a caption predicts
    pos = np.clip(size / 2 + scene.start_spread * scene.scale * rng.standard_normal(2), r, size - r)
  bounce = np.asarray(DIRECTIONS["bounces"]) / math.sqrt(2.0)  # every entry into `bounces` sets off (+, +)
  speed = SPEED * scene.scale
  lead = scene.lead_in
  out = np.empty((lead + num_frames, 2))
  vel = np.zeros(2)
  motion = None
  for f in range(lead + num_frames):
    attrs = scene.attrs_at(max(f - lead, 0))  # the lead-in runs under the first segment
    if attrs.motion != motion:  # a switch: same position, new velocity
      motion = attrs.motion
      if motion == "bounces":
        vel = bounce * speed  # a copy: reflections below flip this segment's velocity only
        pos = np.clip(pos, r, size - r)
      else:
        vel = np.asarray(DIRECTIONS[motion]) * speed
    if f > 0:
      pos = pos + vel
      if motion == "bounces":
        for i in range(2):
          if pos[i] < r:
            pos[i], vel[i] = 2 * r - pos[i], -vel[i]
          elif pos[i] > size - r:
            pos[i], vel[i] = 2 * (size - r) - pos[i], -vel[i]
      else:
        pos = np.mod(pos, size)
    out[f] = pos
  return out[lead:]


def coverage(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
  """Anti-aliased coverage in [0, 1] of ``shape`` centred at the origin, at offsets ``dx, dy`` (pixels)."""
  if shape == "circle":
    sd = np.sqrt(dx * dx + dy * dy) - radius
  elif shape == "square":
    sd = np.maximum(np.abs(dx), np.abs(dy)) - radius
  elif shape == "triangle":  # equilateral, pointing up, centred on its circumcentre
    ri = 0.5 * TRIANGLE_CIRCUMRADIUS * radius  # inradius
    normals = ((0.0, 1.0), (-math.sqrt(3) / 2, -0.5), (math.sqrt(3) / 2, -0.5))
    sd = np.max(np.stack([nx * dx + ny * dy for nx, ny in normals]), axis=0) - ri
  else:
    raise ValueError(f"unknown shape {shape!r}")
  return np.clip(0.5 - sd, 0.0, 1.0)


def render(scene: Scene, num_frames: int) -> np.ndarray:
  """uint8 ``[T, H, W, 3]`` video of ``scene`` (see the module docstring)."""
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  pos = simulate(scene, num_frames)
  size = scene.size
  grid = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
  out = np.empty((num_frames, size, size, 3), np.uint8)
  for f in range(num_frames):
    attrs = scene.attrs_at(f)
    # torus offsets: the object wraps around the edges
    dx = (grid[None, :] - pos[f, 0] + size / 2) % size - size / 2  # [1, W]
    dy = (grid[:, None] - pos[f, 1] + size / 2) % size - size / 2  # [H, 1]
    a = coverage(attrs.shape, dx, dy, scene.radius)[..., None]  # [H, W, 1]
    fg = np.asarray(COLOURS[attrs.colour], np.float64)
    bg = np.asarray(COLOURS[attrs.background], np.float64)
    out[f] = np.round(a * fg + (1.0 - a) * bg).astype(np.uint8)
  return out
