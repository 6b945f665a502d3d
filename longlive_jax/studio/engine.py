"""The studio's model: the compiled stream step, the VAE decoder and the text encoder of one checkpoint.

Everything here is the library's own path, so a take replays bit for bit with ``longlive-jax interactive``:
the streamer comes from :func:`~longlive_jax.stream.run.load_streamer`, noise from
:class:`~longlive_jax.stream.noise.KeyNoise` (block ``b`` draws from ``fold_in(key(seed), b)``) and text from
:class:`~longlive_jax.pipeline.TextEncoder` called on one prompt, as the command line does.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import checkpoint, pipeline
from longlive_jax.stream import run as srun
from longlive_jax.stream.noise import BlockShape, KeyNoise
from longlive_jax.video_io import to_uint8

EMBEDDING_SUFFIXES = (".npy", ".npz")  # `interactive` reads such prompts as files: the studio takes text only


class PromptRejected(ValueError):
  """A typed prompt that cannot be used (empty, too long, unknown word, ...): shown on the page, the stream goes on."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelDefaults:
  """What a checkpoint says about itself: native latent size, frame rate, whether it is the toy world."""

  height: int
  width: int
  fps: float
  toyworld: bool


def model_defaults(ckpt: str | Path) -> ModelDefaults:
  """The latent size (native resolution / the VAE's stride, else 60 x 104 = 480 x 832) and frame rate (else 16)."""
  info = checkpoint.read_meta(ckpt)
  meta = info.get("meta") or {}
  h, w = checkpoint.native_latent_size(info) or (60, 104)
  return ModelDefaults(height=h, width=w, fps=float(meta.get("fps", 16.0)), toyworld=bool(meta.get("toyworld")))


def video_frames(latent_frames: int) -> int:
  """Pixel frames of ``latent_frames`` decoded latents: latent 0 gives 1 frame, every later one 4."""
  return 0 if latent_frames <= 0 else 1 + 4 * (latent_frames - 1)


def encode_jpeg(img: np.ndarray, *, quality: int = 90) -> bytes:
  """One ``[H, W, 3]`` uint8 frame as JPEG (4:4:4: tiny frames keep their colours)."""
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(img).save(buf, "JPEG", quality=quality, subsampling=0)
  return buf.getvalue()


class Decoder:
  """The VAE decoder of one take: its feature cache is carried across blocks (equal to one full decode)."""

  def __init__(self, engine: Engine):
    self.vae = engine.vae
    self.cache = None
    self.opts = engine.opts

  def __call__(self, x0: jax.Array) -> np.ndarray:
    """Latents ``[1, n, h, w, z]`` -> uint8 frames ``[T, H, W, 3]``."""
    from longlive_jax.vae.stream import decode_step, init_decode_cache

    if self.cache is None:
      self.cache = init_decode_cache(self.vae, batch=1, height=self.opts.height, width=self.opts.width)
    pixels, self.cache = decode_step(self.vae, self.cache, x0)
    return to_uint8(np.asarray(pixels[0]))


class Engine:
  """A loaded checkpoint ready to stream: ``streamer``, ``vae``, ``text`` and the stream options.

  Text encoding is serialised by a lock (the page may send prompts from several viewers at once).
  """

  def __init__(
    self,
    ckpt: str | Path,
    opts: srun.StreamOptions,
    *,
    fps: float,
    max_frames: int | None = None,
    max_prompt_chars: int = 300,
  ):
    pipeline.require_components(ckpt, ["vae", "umt5"], why="the studio (video from text)")
    checkpoint.component_file(ckpt, "tokenizer")  # a clear error now rather than at the first prompt
    t0 = time.perf_counter()
    self.ckpt, self.opts, self.fps, self.max_prompt_chars = str(ckpt), opts, float(fps), int(max_prompt_chars)
    self._max_frames = max_frames
    self.streamer = srun.load_streamer(ckpt, opts)
    self.cfg = self.streamer.cfg
    srun.check_length(opts, self.cfg.rope_max_len)
    self.vae = pipeline.load_vae(ckpt)
    self.text = pipeline.TextEncoder(ckpt, text_len=self.cfg.text_len)
    self._text_lock = threading.Lock()
    self._noise: KeyNoise | None = None
    self.load_seconds = time.perf_counter() - t0
    self.warm_seconds: float | None = None

  @property
  def block_frames(self) -> int:
    return self.opts.block_frames

  @property
  def max_frames(self) -> int | None:
    """Latent frames one take may last: as given, else the absolute-RoPE table (rounded to blocks); unbounded
    in relative mode or with a RoPE horizon."""
    if self._max_frames is not None:
      return self._max_frames
    if self.opts.unbounded:
      return None
    return self.cfg.rope_max_len // self.block_frames * self.block_frames

  def check_prompt(self, text: object) -> str:
    """The prompt, stripped; :class:`PromptRejected` naming what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
      raise PromptRejected("empty prompt: type a description of the video")
    text = text.strip()
    if len(text) > self.max_prompt_chars:
      raise PromptRejected(f"prompt too long: {len(text)} characters, at most {self.max_prompt_chars}")
    if Path(text).suffix in EMBEDDING_SUFFIXES:
      raise PromptRejected(f"{text!r} looks like an embedding file name; the studio takes text prompts")
    return text

  def encode(self, text: object) -> tuple[str, np.ndarray]:
    """``(prompt, embedding [1, text_len, text_dim])``; :class:`PromptRejected` for an unusable prompt."""
    from longlive_jax.text.tokenizer import TokenizerError

    text = self.check_prompt(text)
    n = self.cfg.text_len
    with self._text_lock:
      try:
        _, mask = self.text.tokenizer(text, text_len=n + 1)  # one row more than the model reads: tells "too long"
        if int(mask.sum()) > n:
          raise PromptRejected(f"prompt too long: the model reads at most {n} tokens (with the end token)")
        return text, self.text([text])
      except TokenizerError as e:  # e.g. a word outside a closed vocabulary: names it and lists the vocabulary
        raise PromptRejected(str(e)) from e

  def draws(self, seed: int) -> KeyNoise:
    """The noise of a take: block ``b`` from ``fold_in(key(seed), b)``, as ``run_stream`` draws it (the key is
    an argument of the compiled draw, so every take reuses one program)."""
    if self._noise is None:
      shape = BlockShape(
        batch=1, frames=self.block_frames, height=self.opts.height, width=self.opts.width, channels=self.cfg.in_dim
      )
      st = self.streamer
      self._noise = KeyNoise(jax.random.key(0), shape=shape, num_steps=st.num_steps, context_eps=st.renoise_context)
    draws = copy.copy(self._noise)
    draws.key = jax.random.key(seed)
    return draws

  def session(self, seed: int, context: np.ndarray, *, switch_mode: str):
    """A fresh :class:`~longlive_jax.stream.driver.StreamSession` for one take."""
    self.streamer.switch_mode = switch_mode  # read when a switch is applied; one take runs at a time
    return self.streamer.session(self.draws(seed), jnp.asarray(context), batch=1)

  def decoder(self) -> Decoder:
    return Decoder(self)

  def warm_up(self, prompt: str | None = None) -> None:
    """Compiles the block step, the VAE programs and the text encoder (one throwaway block), so a take's time to
    first frame is generation, not compilation. Without a prompt the DiT runs on a zero text context."""
    t0 = time.perf_counter()
    if prompt is not None:
      _, ctx = self.encode(prompt)
    else:
      ctx = np.zeros((1, self.cfg.text_len, self.cfg.text_dim), np.float32)
    sess = self.session(0, ctx, switch_mode=self.streamer.switch_mode)
    _, x0, _ = sess.next_block()
    encode_jpeg(self.decoder()(x0)[0])
    self.warm_seconds = time.perf_counter() - t0
