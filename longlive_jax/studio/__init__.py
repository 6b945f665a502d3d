"""The studio: steer a live LongLive stream from a web page (``longlive-jax serve``).

Layers, lowest first (nothing outside this package imports it except the command line):

* :mod:`~longlive_jax.studio.engine`: the loaded model (compiled block step, VAE decoder, text encoder) and
  prompt checks; no threads, no web.
* :mod:`~longlive_jax.studio.recording`: one take's files in the recordings folder (fragmented mp4, latents
  ``.npz``, LongLive jsonl that ``longlive-jax interactive`` replays bit for bit).
* :mod:`~longlive_jax.studio.session`: :class:`~longlive_jax.studio.session.Studio`, the generator thread that
  runs takes block by block, applies typed prompts at block boundaries, paces itself to real time, pauses,
  restarts and publishes frames and figures through one callback.
* :mod:`~longlive_jax.studio.hub`: the viewers on the event loop, each with a bounded frame queue (a slow
  viewer loses frames, never slows generation).
* :mod:`~longlive_jax.studio.server`: the FastAPI app (page, WebSocket, downloads) and uvicorn.
* ``static/``: the page (plain HTML / JS, no build step).
"""
