"""The judge's constants: the frame rate, the judged attributes, thresholds and the palette."""

from __future__ import annotations

import numpy as np

from longlive_jax.toyworld import render as _render
from longlive_jax.toyworld.grammar import COLOURS

FPS = _render.FPS
ATTRIBUTES = ("background", "colour", "shape", "motion")  # judged attributes; accuracies also have "all"

FG_THRESHOLD = 50.0  # RGB distance from the background colour above which a pixel is foreground
ARTEFACT_THRESHOLD = 32.0  # RGB distance from the background -> object colour line that makes an artefact
MIN_QUALITY = 0.5  # a window is right ("all") only if at most half its sampled pixels are artefacts
OUTLIER_DISTANCE = 40.0  # core pixels farther than this from their mean are dropped from the object colour
# The world's shapes' normalised complex moments (module docstring): |E z^3| / area^1.5 of the equilateral
# triangle and |E z^4| / area^2 of the square (exact for the continuous shapes; the other shapes have ~0 of
# each). Rendered shapes have relative moments ~1 / ~0; the world's VAE rounds corners. On its round trips of
# true clips (experiments/results/toyworld_shape_ceiling*.json, 48 + 96 clips, two draws) triangles keep
# 0.30-0.85 of the triangle's moment (circles and squares <= 0.10) and squares 0.36-0.79 of the square's
# (circles <= 0.28, triangles <= 0.27). The thresholds sit between those ranges, so the judge reads decoded
# video (every model's output) as it reads renders; at 1/2 it read 15% of the round trips' shapes as circles.
TRIANGLE_MOMENT = 0.0675
SQUARE_MOMENT = 1.0 / 60.0
TRIANGLE_THRESHOLD = 0.2  # relative triangle moment at and above which a window can be a triangle
SQUARE_THRESHOLD = 0.32  # relative square moment at and above which a window can be a square
STILL_SPEED = 0.2  # below this fraction of the world speed an object stays still (0.15 px/frame at 64 px)
BOUNCE_COMPONENT = 0.3  # both velocity components above this fraction of the world speed: diagonal (bounces)
BOUNCE_RATIO = 0.4  # ... and the smaller at least this fraction of the larger
JUMP_TOLERANCE = 2.0  # a switch jump beyond the expected step by more than this many world steps is a teleport
SPIKE_FLOOR = 0.1  # intensity floor of the denominators of the spike ratios
_LAG = 4  # frames between the track points of one velocity estimate
_CHUNK = 64  # frames per vectorised chunk

_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _NAMES], np.float32)
