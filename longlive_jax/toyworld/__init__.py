"""The toy world: procedural captioned videos, their language, a pixel judge and the default model.

A small world in which the whole LongLive recipe can be trained on a CPU and every claim tested in
minutes: one object (colour, shape, motion) on a plain background, 64x64 at 16 fps.

  * :mod:`.grammar`: prompts <-> attributes, the held-out split, sampling;
  * :mod:`.render`: a scene (seed + prompt segments with switches) -> uint8 video;
  * :mod:`.judge`: scores any video against its prompt(s) from pixels alone.
"""
