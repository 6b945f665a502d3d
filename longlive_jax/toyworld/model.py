"""The shipped toy-world model: where it lives, and assembling a whole-model checkpoint from trained stages.

The default model (``longlive_jax/toyworld/default_model/``) is an ordinary whole-model checkpoint
folder (:mod:`longlive_jax.checkpoint`): the DiT (``params/``, bfloat16), the VAE (``vae/``), the
frozen tiny umT5 (``umt5/``) and the world's tokenizer (``tokenizer/``), plus, in its metadata,
``native_resolution`` ``[height, width]`` in pixels, the frame rate and the streaming settings it was
trained with. ``generate`` / ``interactive`` use it when no ``--checkpoint`` is given.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import numpy as np

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"


def default_checkpoint() -> Path:
  """The folder of the shipped model; a clear error if this installation lacks it."""
  from longlive_jax.convert.errors import CheckpointError

  if not (DEFAULT_MODEL / "longlive_jax.json").is_file():
    raise CheckpointError(
      f"the default toy-world model is missing from this installation ({DEFAULT_MODEL}); reinstall the package, "
      "train it with experiments/toyworld/train_all.sh, or pass --checkpoint"
    )
  return DEFAULT_MODEL


def assemble(
  out_dir: str | Path,
  *,
  dit_checkpoint: str | Path,
  vae_checkpoint: str | Path,
  size: int,
  fps: float,
  stream: dict,
  dtype: str = "bfloat16",
  meta: dict | None = None,
  overwrite: bool = False,
) -> Path:
  """One whole-model checkpoint from a trained DiT export and a VAE export (see the module docstring).

  The DiT and VAE weights are stored in ``dtype`` (bfloat16 keeps the folder small; the loaders cast
  once to the compute dtype); the text encoder is the world's frozen umT5 in float32.
  """
  from longlive_jax import checkpoint
  from longlive_jax.toyworld.text import TEXT_CONFIG, text_params, write_tokenizer

  cfg, params, adapter, info = checkpoint.load(dit_checkpoint)
  if adapter is not None:
    raise ValueError(f"{dit_checkpoint}: keeps a separate LoRA adapter; export it merged")
  vae_meta = checkpoint.read_meta(vae_checkpoint)["components"]["vae"]["config"]
  from longlive_jax.model.params import params_of
  from longlive_jax.pipeline import load_vae

  vae = load_vae(vae_checkpoint)
  cast = lambda tree: jax.tree.map(lambda x: np.asarray(x).astype(dtype), tree)  # noqa: E731
  vae_params = cast(params_of(vae))
  info_meta = {
    "toyworld": True,
    "native_resolution": [size, size],
    "fps": fps,
    "stream": stream,
    "sources": {"dit": str(dit_checkpoint), "vae": str(vae_checkpoint), "dit_meta": info.get("meta", {})},
    **(meta or {}),
  }
  with tempfile.TemporaryDirectory() as tmp:
    tok = write_tokenizer(Path(tmp) / "tokenizer")
    return checkpoint.save(
      out_dir,
      cfg=cfg.replace(param_dtype=dtype, dtype="float32"),
      params=cast(params),
      meta=info_meta,
      components={
        "vae": (vae_params, {**vae_meta, "param_dtype": dtype}),
        "umt5": (text_params(), TEXT_CONFIG.to_dict()),
      },
      files={"tokenizer": tok},
      overwrite=overwrite,
    )
