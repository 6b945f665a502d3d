"""Prompts in, pixels out: text encoder -> streaming latents -> streaming VAE decode -> video file.

Everything comes from one checkpoint folder written by ``longlive-jax convert --wan-dir ...``:
the DiT (``params/``), the VAE (``vae/``), the umT5 encoder (``umt5/``) and its tokenizer files
(``tokenizer/``). Prompts are encoded once, up front (as upstream), and the encoder's weights
are released afterwards (11 GB for umT5-XXL) unless a live session keeps it for typed prompts.
Each block's latents are decoded with the VAE cache carried across blocks (identical to a full
decode) and appended to the video file at once, so the first frames are on disk while later
blocks are still generating.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import checkpoint
from longlive_jax.convert.errors import CheckpointError
from longlive_jax.video_io import PngWriter, VideoWriter


class TextEncoder:
  """The umT5 encoder and tokenizer of a checkpoint; ``release()`` frees the weights."""

  def __init__(self, ckpt_dir: str | Path, *, text_len: int):
    from longlive_jax.text.config import UMT5Config
    from longlive_jax.text.model import abstract_model, model_from_params, params_of
    from longlive_jax.text.tokenizer import UMT5Tokenizer

    cfg = UMT5Config(**checkpoint.read_meta(ckpt_dir)["components"]["umt5"]["config"])
    _, params = checkpoint.load_component(ckpt_dir, "umt5", target=params_of(abstract_model(cfg)))
    self.model = model_from_params(cfg, params)
    self.tokenizer = UMT5Tokenizer.from_folder(checkpoint.component_file(ckpt_dir, "tokenizer"))
    self.text_len = text_len

  def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
    """``[N, text_len, dim]`` float32 context, zero rows past each prompt (as Wan's text encoder)."""
    from longlive_jax.text.encode import encode_prompts

    if self.model is None:
      raise RuntimeError("the text encoder was released; create a new TextEncoder")
    return encode_prompts(self.model, self.tokenizer, prompts, text_len=self.text_len)

  def release(self) -> None:
    self.model = None


def load_vae(ckpt_dir: str | Path, *, dtype: str | None = None):
  """The :class:`~longlive_jax.vae.model.WanVAE` of a whole-model checkpoint."""
  from flax import nnx

  from longlive_jax.convert.wan_vae import _abstract_split, vae_from_params
  from longlive_jax.vae.config import VAEConfig

  d = checkpoint.read_meta(ckpt_dir)["components"]["vae"]["config"]
  cfg = VAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
  # the target restores the tree's integer (list) keys, which Orbax would otherwise turn into strings
  _, params = checkpoint.load_component(ckpt_dir, "vae", target=nnx.to_pure_dict(_abstract_split(cfg)[1]))
  if dtype is not None:
    cfg = cfg.replace(dtype=dtype)
  # weights cast once to the compute dtype (a bfloat16-stored VAE computing in float32 casts nothing per call)
  params = jax.tree.map(lambda p: jnp.asarray(p, cfg.dtype), params)
  return vae_from_params(cfg.replace(param_dtype=cfg.dtype), params)


def has_component(ckpt_dir: str | Path, name: str) -> bool:
  return name in (checkpoint.read_meta(ckpt_dir).get("components") or {})


class VideoSink:
  """Decodes each block of latents with a carried VAE cache and appends the frames to mp4 / PNG files.

  Call it with ``x0 [B, n, h, w, z]`` (normalised latents, as the generator outputs); sample ``i``
  of the batch goes to ``video_path`` (``stem_i`` when B > 1).
  """

  def __init__(
    self,
    ckpt_dir: str | Path,
    *,
    video_path: str | Path | None,
    png_dir: str | Path | None = None,
    fps: float = 16.0,
    dtype: str | None = None,
  ):
    if video_path is None and png_dir is None:
      raise ValueError("VideoSink needs a video path or a PNG folder")
    self.vae = load_vae(ckpt_dir, dtype=dtype)
    self.video_path = Path(video_path) if video_path else None
    self.png_dir = Path(png_dir) if png_dir else None
    self.fps = fps
    self.cache = None
    self.writers: list[list] = []
    self.frames = 0

  def _open(self, batch: int) -> None:
    for i in range(batch):
      ws = []
      if self.video_path is not None:
        p = self.video_path if batch == 1 else self.video_path.with_name(f"{self.video_path.stem}_{i}.mp4")
        ws.append(VideoWriter(p, fps=self.fps))
      if self.png_dir is not None:
        ws.append(PngWriter(self.png_dir if batch == 1 else self.png_dir / str(i)))
      self.writers.append(ws)

  def __call__(self, x0: jax.Array) -> None:
    from longlive_jax.vae.stream import decode_step, init_decode_cache

    x0 = jnp.asarray(x0)
    b, _, h, w, _ = x0.shape
    if self.cache is None:
      self.cache = init_decode_cache(self.vae, batch=b, height=h, width=w)
      self._open(b)
    pixels, self.cache = decode_step(self.vae, self.cache, x0)
    pixels = np.asarray(pixels)  # [B, T, H, W, 3] in [-1, 1]
    for i, ws in enumerate(self.writers):
      for wr in ws:
        wr.write(pixels[i])
    self.frames += pixels.shape[1]

  def close(self) -> None:
    for ws in self.writers:
      for wr in ws:
        wr.close()


def require_components(ckpt_dir: str | Path, names: Sequence[str], *, why: str) -> None:
  missing = [n for n in names if not has_component(ckpt_dir, n)]
  if missing:
    raise CheckpointError(
      f"{ckpt_dir}: {why} needs the {', '.join(missing)} component(s), which this checkpoint does not hold; "
      "convert the whole model with 'longlive-jax convert --wan-dir DIR --longlive-dir DIR --out CKPT'"
    )
