"""One converter for the whole model: Wan2.1 folder (+ LongLive folder) -> one Orbax checkpoint folder.

Inputs, as the user downloads them:

  wan_models/Wan2.1-T2V-1.3B/            ``hf download Wan-AI/Wan2.1-T2V-1.3B``
    config.json, diffusion_pytorch_model.safetensors   (the DiT; used when no LongLive folder)
    Wan2.1_VAE.pth                                       (the VAE)
    models_t5_umt5-xxl-enc-bf16.pth                      (the umT5-XXL encoder)
    google/umt5-xxl/                                     (tokenizer files)
  longlive_models/                        ``hf download Efficient-Large-Model/LongLive-1.3B``
    models/longlive_base.pt, models/lora.pt              (the generator and its LoRA)

Output folder: ``params/`` (the DiT, LoRA merged), ``vae/``, ``umt5/`` (bfloat16 by default:
the encoder runs once per prompt), ``tokenizer/`` (copied files) and ``longlive_jax.json``
with every config. Written to a temporary sibling and renamed at the end. Every missing input
is listed in ONE error, with where the user gets it.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import time
from pathlib import Path

import jax

from longlive_jax.convert import sources, umt5, wan_vae, writer
from longlive_jax.convert.errors import CheckpointError
from longlive_jax.convert.run import build_dit, progress_bar
from longlive_jax.text.config import UMT5_XXL, UMT5Config

WAN_HINT = "hf download Wan-AI/Wan2.1-T2V-1.3B --local-dir {dir}"
LONGLIVE_HINT = "hf download Efficient-Large-Model/LongLive-1.3B --local-dir {dir}"
VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = "google/umt5-xxl"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


@dataclasses.dataclass(frozen=True)
class Inputs:
  dit: Path
  dit_container: str | None
  lora: Path | None
  vae: Path
  t5: Path
  tokenizer: Path


def _first(folder: Path, names) -> Path | None:
  return next((folder / n for n in names if (folder / n).exists()), None)


def find_inputs(
  wan_dir: str | Path, longlive_dir: str | Path | None, *, lora: bool = True, ema: bool = False
) -> Inputs:
  """Locates every input file; raises one :class:`CheckpointError` listing all that are missing."""
  wan_dir = Path(wan_dir)
  missing: list[str] = []
  if not wan_dir.is_dir():
    raise CheckpointError(f"--wan-dir {wan_dir}: no such folder (get it with: {WAN_HINT.format(dir=wan_dir)})")
  wan_hint = WAN_HINT.format(dir=wan_dir)

  def need(path: Path | None, shown: Path, hint: str) -> Path:
    if path is None or not path.exists():
      missing.append(f"  - {shown}  (from: {hint})")
    return path or shown

  vae = need(wan_dir / VAE_FILE, wan_dir / VAE_FILE, wan_hint)
  t5 = need(wan_dir / T5_FILE, wan_dir / T5_FILE, wan_hint)
  tok_dir = wan_dir / TOKENIZER_DIR
  tok = tok_dir if tok_dir.is_dir() and _first(tok_dir, TOKENIZER_FILES) else None
  need(tok, tok_dir / TOKENIZER_FILES[0], wan_hint)
  lora_path = None
  container = None
  if longlive_dir is not None:
    ll = Path(longlive_dir)
    ll_hint = LONGLIVE_HINT.format(dir=ll)
    dit = need(_first(ll, ("models/longlive_base.pt", "longlive_base.pt")), ll / "models/longlive_base.pt", ll_hint)
    container = "generator_ema" if ema else None
    if lora:
      lora_path = need(_first(ll, ("models/lora.pt", "lora.pt")), ll / "models/lora.pt", ll_hint)
  else:
    weights = _first(wan_dir, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"))
    dit = need(weights, wan_dir / "diffusion_pytorch_model.safetensors", wan_hint)
    need(wan_dir / "config.json", wan_dir / "config.json", wan_hint)
  if missing:
    raise CheckpointError("missing input files:\n" + "\n".join(missing))
  return Inputs(dit, container, lora_path, vae, t5, tok)


def infer_umt5_config(src, *, base: UMT5Config = UMT5_XXL) -> UMT5Config:
  """Sizes of an upstream umT5 encoder state dict from its tensor shapes."""
  shape = sources.shape_of(src)
  origin = getattr(src, "origin", "state dict")
  keys = set(src)  # iterate: a TensorSource's lookup of a missing key raises CheckpointError, not KeyError
  if "token_embedding.weight" not in keys:
    raise CheckpointError(f"{origin}: not a umT5 encoder checkpoint (no 'token_embedding.weight')")
  vocab, dim = shape("token_embedding.weight")
  layers = 1 + max(int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k)))
  shared = "pos_embedding.embedding.weight" in keys
  buckets, heads = shape("pos_embedding.embedding.weight" if shared else "blocks.0.pos_embedding.embedding.weight")
  return base.replace(
    vocab=int(vocab),
    dim=int(dim),
    dim_attn=int(shape("blocks.0.attn.q.weight")[0]),
    dim_ffn=int(shape("blocks.0.ffn.fc1.weight")[0]),
    num_heads=int(heads),
    num_layers=layers,
    num_buckets=int(buckets),
    shared_pos=shared,
  )


@dataclasses.dataclass
class WholeSummary:
  out: Path
  inputs: Inputs
  num_params: dict
  seconds: float
  peak_rss_mb: float


def convert_model(
  *,
  wan_dir: str | Path,
  longlive_dir: str | Path | None,
  out: str | Path,
  config: str | None = None,
  lora: bool = True,
  ema: bool = False,
  dtype: str | None = None,
  text_dtype: str = "bfloat16",
  overwrite: bool = False,
  progress: bool = True,
) -> WholeSummary:
  """DiT (+ merged LoRA) + VAE + umT5 + tokenizer -> one checkpoint folder."""
  t0 = time.time()
  out = Path(out)
  if out.exists() and not overwrite:
    raise CheckpointError(f"{out}: already exists (pass --overwrite to replace it)")
  inp = find_inputs(wan_dir, longlive_dir, lora=lora, ema=ema)
  # the LongLive generator has no config.json of its own: the Wan folder's describes it
  dit_config = config or (str(Path(wan_dir) / "config.json") if (Path(wan_dir) / "config.json").is_file() else None)
  # Every input is opened and checked (keys, shapes, sizes) before anything is converted; the
  # parameters are lazy: read, converted and written one layer at a time by writer.save.
  with progress_bar(progress, "converting DiT") as tick, progress_bar(progress, "converting umT5") as t5_tick:
    dit = build_dit(inp.dit, config=dit_config, container=inp.dit_container, lora=inp.lora, dtype=dtype, progress=tick)
    vae_src = sources.open_state_dict(inp.vae)
    vae_cfg = wan_vae.infer_config(vae_src)
    vae_params = wan_vae.convert_lazy(vae_src, vae_cfg, dtype=dtype)
    t5_src = sources.open_state_dict(inp.t5)
    t5_cfg = infer_umt5_config(t5_src).replace(param_dtype=text_dtype)
    if t5_cfg.dim != dit.cfg.text_dim:
      raise CheckpointError(
        f"{inp.t5}: the text encoder's width {t5_cfg.dim} does not match the DiT's text_dim {dit.cfg.text_dim}"
      )
    t5_params = umt5.convert_lazy(t5_src, t5_cfg, dtype=text_dtype, progress=t5_tick)
    counts = {
      "dit": sum(x.size for x in jax.tree.leaves(dit.params)),
      "vae": sum(x.size for x in jax.tree.leaves(vae_params)),
      "umt5": sum(x.size for x in jax.tree.leaves(t5_params)),
    }
    writer.save(
      out,
      cfg=dit.cfg,
      params=dit.params,
      adapter_meta=dit.adapter_meta,
      meta={
        "source": {"wan_dir": str(wan_dir), "longlive_dir": str(longlive_dir) if longlive_dir else None},
        "dit_source": str(inp.dit),
        "config_source": dit.config_source,
        "num_params": counts,
      },
      components={"vae": (vae_params, vae_cfg.to_dict()), "umt5": (t5_params, t5_cfg.to_dict())},
      files={"tokenizer": inp.tokenizer},
      overwrite=overwrite,
    )
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  return WholeSummary(out, inp, counts, time.time() - t0, peak)
