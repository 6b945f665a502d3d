"""A pixel judge for the toy world: what a video shows, scored against its prompt(s), from pixels alone.

The judge is meant for *generated* videos (blurry, noisy, tinted, imperfect), so it never assumes a
pixel is exactly a palette colour; it only assumes the world's structure: one compact object on a
plain background, on a square frame, drawn on a torus (an object may wrap across the edges).

Conventions:

  * a video is ``uint8 [T, H, W, 3]`` RGB with ``H == W >= 16`` (the world's size), at :data:`FPS`;
  * positions are ``(x, y)`` in pixels, ``y`` pointing down, pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``
    (the convention of :func:`longlive_jax.toyworld.render.simulate`), wrapped into ``[0, size)``;
  * object sizes and speeds scale with the frame: radius ``render.RADIUS * size / 64``, world speed
    ``render.SPEED * size / 64`` px/frame; the judge's speed thresholds are fractions of that speed;
  * colour distances are Euclidean in RGB (0..255 per channel); frame differences are mean absolute
    differences over pixels and channels, in 0..255 intensity units;
  * switch frames are video frames (the first frame of the new prompt), as in ``Scene.from_prompts``.

Per frame (vectorised over frames, in chunks of 64 frames):

  * background: the per-channel median colour (of one pixel per 2x2 block; the object covers ~4 %);
  * foreground: 2x2 block means farther than :data:`FG_THRESHOLD` from the background (block means halve
    pixel noise); the object is located at the peak of a torus tent filter of the foreground and cropped
    around it (torus indices, so an object wrapping across the edges is whole);
  * object colour: the mean of the crop's core foreground pixels (eroded by ~R/3.5 px, past a blurred
    edge), pixels farther than :data:`OUTLIER_DISTANCE` from it dropped;
  * alpha: every pixel's projection on the background -> object colour line, which is the exact coverage
    of the renderer's anti-aliased mix and of any linear blur of it; kept raw (noise stays zero-mean) on
    the object's support (3x3 mean alpha > 1/4, dilated by a pixel). The centre is its centroid;
  * shape: normalised complex moments about the centroid (``z = x + iy``): ``|E z^3| / area^1.5`` is
    :data:`TRIANGLE_MOMENT` for the triangle and ~0 for 4-fold or round shapes, ``|E z^4| / area^2`` is
    :data:`SQUARE_MOMENT` for the square and ~0 for 3-fold or round shapes. Both are invariant to
    translation, rotation, scale and (nearly) blur: a centred symmetric blur kernel adds nothing to
    ``E z^3``, and nothing to ``E z^4`` when isotropic since these shapes have ``E z^2 = 0``;
  * artefacts: pixels (one per 2x2 block) farther than :data:`ARTEFACT_THRESHOLD` from the segment
    between the observed background and object colours (neither of them nor a mix: noise, smears, ghosts).
    Quality is relative to the observed colours; palette fidelity is ``Observation.colour_error``.

  * presence: the object differs from the background by at least :data:`FG_THRESHOLD`, its area is within
    [1/4, 4] times the world's circle's, and fewer foreground pixels lie outside the crop than in the
    object (scattered noise or a second blob is not one compact object).

Per window (:func:`judge_window`): the background and object colours are the palette colours nearest to
the median observed colours (the background's excluded for the object); the shape is the triangle or
the square by the larger median relative moment over its threshold if one reaches it
(:data:`TRIANGLE_THRESHOLD`, :data:`SQUARE_THRESHOLD`, calibrated on the world VAE's round trips), else the circle; the motion comes from
4-frame displacements of the torus-unwrapped centre track: still below :data:`STILL_SPEED`, bounces if
both components are large (:data:`BOUNCE_COMPONENT`, :data:`BOUNCE_RATIO`) or a component reverses,
else the dominant axis and its sign. A window is right on "all" when every attribute is and its quality is at
least :data:`MIN_QUALITY` (content seen through heavy noise is not a right video). :func:`judge_video` splits a video into windows within prompt
segments and scores them; :func:`switch_smoothness` measures a prompt switch (position continuity and
frame-difference spike, against what the world itself does).
"""

from longlive_jax.toyworld.judge.constants import (
  ARTEFACT_THRESHOLD,
  ATTRIBUTES,
  BOUNCE_COMPONENT,
  BOUNCE_RATIO,
  FG_THRESHOLD,
  FPS,
  JUMP_TOLERANCE,
  MIN_QUALITY,
  OUTLIER_DISTANCE,
  SPIKE_FLOOR,
  SQUARE_MOMENT,
  SQUARE_THRESHOLD,
  STILL_SPEED,
  TRIANGLE_MOMENT,
  TRIANGLE_THRESHOLD,
)
from longlive_jax.toyworld.judge.helpers import _wrap as _wrap  # private, used by tests/test_judge.py
from longlive_jax.toyworld.judge.records import Drift, Observation, Smoothness, SwitchScore, VideoScore, WindowRecord
from longlive_jax.toyworld.judge.switches import switch_smoothness
from longlive_jax.toyworld.judge.video import judge_video
from longlive_jax.toyworld.judge.window import judge_window

__all__ = [
  "ARTEFACT_THRESHOLD",
  "ATTRIBUTES",
  "BOUNCE_COMPONENT",
  "BOUNCE_RATIO",
  "FG_THRESHOLD",
  "FPS",
  "JUMP_TOLERANCE",
  "MIN_QUALITY",
  "OUTLIER_DISTANCE",
  "SPIKE_FLOOR",
  "SQUARE_MOMENT",
  "SQUARE_THRESHOLD",
  "STILL_SPEED",
  "TRIANGLE_MOMENT",
  "TRIANGLE_THRESHOLD",
  "Drift",
  "Observation",
  "Smoothness",
  "SwitchScore",
  "VideoScore",
  "WindowRecord",
  "judge_video",
  "judge_window",
  "switch_smoothness",
]
