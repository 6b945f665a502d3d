"""End to end: tiny checkpoints in the upstream file layouts -> whole-model convert -> text prompts with a switch ->
mp4 + PNG frames written block by block. Also the converter's missing-file report."""

from __future__ import annotations

import json
import re
import shutil

import ml_dtypes
import numpy as np
import pytest

from longlive_jax import checkpoint, cli, layout, pipeline
from longlive_jax.config import WanConfig
from longlive_jax.convert import sources, torch_save
from longlive_jax.video_io import read_video


def jax_dtypes_of(tree) -> set:
  import jax

  return {np.asarray(x).dtype for x in jax.tree.leaves(tree)}


WORDS = ["<pad>", "</s>", "<unk>", "a", "cat", "sat", "on", "the", "mat", "dog", "ran", "in", "park"]


def _tokenizer(folder):
  from tokenizers import Tokenizer, models, pre_tokenizers, processors

  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  folder.mkdir(parents=True)
  tok.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def upstream_dirs(tmp_path_factory, golden_root):
  """A Wan2.1 folder and a LongLive folder as users download them, holding tiny weights (from the golden cases,
  which the upstream code produced), written in the upstream formats (.pth through our torch-free writer)."""
  root = tmp_path_factory.mktemp("upstream")
  wan, ll = root / "Wan2.1-T2V-1.3B", root / "longlive_models"
  (ll / "models").mkdir(parents=True)
  wan.mkdir()
  shutil.copy(golden_root / "longlive_causal_stream" / "longlive_base.pt", ll / "models" / "longlive_base.pt")
  shutil.copy(golden_root / "longlive_lora" / "lora.pt", ll / "models" / "lora.pt")
  model_cfg = json.loads((golden_root / "longlive_causal_stream" / "case.json").read_text())["config"]["model"]
  names = set(WanConfig.__dataclass_fields__) | {"model_type"}
  (wan / "config.json").write_text(json.dumps({k: v for k, v in model_cfg.items() if k in names}))
  vae = sources.open_state_dict(golden_root / "wan_vae" / "weights.safetensors")
  torch_save.save(wan / "Wan2.1_VAE.pth", {k: vae[k] for k in vae})
  t5 = sources.open_state_dict(golden_root / "umt5_encoder" / "weights.safetensors")
  torch_save.save(wan / "models_t5_umt5-xxl-enc-bf16.pth", {k: t5[k] for k in t5}, dtype=ml_dtypes.bfloat16)
  _tokenizer(wan / "google" / "umt5-xxl")
  return wan, ll


@pytest.fixture(scope="module")
def whole_ckpt(upstream_dirs, tmp_path_factory):
  wan, ll = upstream_dirs
  out = tmp_path_factory.mktemp("ckpt") / "longlive"
  assert cli.main(["convert", "--wan-dir", str(wan), "--longlive-dir", str(ll), "--out", str(out), "--quiet"]) == 0
  return out


def test_whole_checkpoint_holds_every_component(whole_ckpt):
  info = checkpoint.read_meta(whole_ckpt)
  assert set(info["components"]) == {"vae", "umt5"} and info["files"] == {"tokenizer": "tokenizer"}
  assert info["lora"]["rank"] == 4 and info["lora"]["mode"] == "merge"
  cfg, params = checkpoint.load_component(whole_ckpt, "umt5")
  assert cfg["param_dtype"] == "bfloat16" and jax_dtypes_of(params) == {np.dtype(ml_dtypes.bfloat16)}
  assert (whole_ckpt / "tokenizer" / "tokenizer.json").is_file()


def test_native_latent_size_follows_the_vae_stride():
  """Pixels / the VAE component's spatial stride: 8 for Wan2.1's 4 levels, 4 for the toy world's 3."""
  meta = {"meta": {"native_resolution": [480, 832]}}
  assert checkpoint.native_latent_size(meta) == (60, 104)  # no VAE component: Wan's 8
  wan = {**meta, "components": {"vae": {"config": {"dim_mult": [1, 2, 4, 4]}}}}
  assert checkpoint.native_latent_size(wan) == (60, 104)
  toy = {"meta": {"native_resolution": [64, 64]}, "components": {"vae": {"config": {"dim_mult": [1, 2, 4]}}}}
  assert checkpoint.native_latent_size(toy) == (16, 16)
  assert checkpoint.native_latent_size({"meta": {}}) is None


def test_text_prompts_with_a_switch_to_mp4_and_pngs(whole_ckpt, tmp_path):
  script = tmp_path / "prompts.jsonl"
  script.write_text(json.dumps({"prompts": ["a cat sat on the mat", "the dog ran in the park"]}) + "\n")
  video, pngs, lat = tmp_path / "video.mp4", tmp_path / "png", tmp_path / "latents.npz"
  args = ["interactive", str(script), "--checkpoint", str(whole_ckpt), "--switch-frames", "3", "--frames", "9"]
  args += ["--height", "4", "--width", "4", "--window", "9", "--quiet", "--out", str(video)]
  assert cli.main([*args, "--png-dir", str(pngs), "--latents", str(lat)]) == 0

  frames = read_video(video)
  assert frames.shape == (1 + 4 * (9 - 1), 32, 32, 3)  # latent 0 -> 1 frame, every later latent -> 4
  png = sorted(pngs.glob("frame_*.png"))
  assert len(png) == frames.shape[0]
  with np.load(lat) as z:
    latents = layout.from_longlive(z["latents"])
    meta = json.loads(str(z["meta"]))
  assert meta["switch_frames"] == [3] and meta["prompts"] == ["a cat sat on the mat", "the dog ran in the park"]

  # the frames written block by block equal ONE full decode of the saved latents (lossless PNGs, uint8 rounding)
  from longlive_jax.vae.stream import decode
  from longlive_jax.video_io import to_uint8

  vae = pipeline.load_vae(whole_ckpt)
  want = to_uint8(np.asarray(decode(vae, latents))[0])
  got = np.stack([read_video(p)[0] for p in png])
  assert np.max(np.abs(got.astype(int) - want.astype(int))) <= 1
  # the mp4 is lossy (4:2:0 chroma on noise-like random-weight frames), yet each frame is nearest its own frame
  same = np.abs(frames[1:].astype(int) - want[1:].astype(int)).mean()
  shifted = np.abs(frames[1:].astype(int) - want[:-1].astype(int)).mean()
  assert same < 0.7 * shifted, (same, shifted)

  # the prompts really went through the text encoder: the switch changed what came after it
  enc = pipeline.TextEncoder(whole_ckpt, text_len=16)
  a, b = enc(["a cat sat on the mat"]), enc(["the dog ran in the park"])
  assert a.shape == (1, 16, 32) and np.all(a[0, 7:] == 0) and np.max(np.abs(a - b)) > 1e-3


def test_missing_files_are_listed_with_their_source(tmp_path, capsys):
  wan = tmp_path / "wan"
  (wan / "google" / "umt5-xxl").mkdir(parents=True)
  rc = cli.main(
    ["convert", "--wan-dir", str(wan), "--longlive-dir", str(tmp_path / "ll"), "--out", str(tmp_path / "o")]
  )
  err = capsys.readouterr().err
  assert rc == 2 and "Traceback" not in err
  for name in ("Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "tokenizer.json", "longlive_base.pt", "lora.pt"):
    assert name in err, err
  assert "hf download Wan-AI/Wan2.1-T2V-1.3B" in err
  assert "Efficient-Large-Model/LongLive-1.3B" in err
  assert not (tmp_path / "o").exists()


def test_video_output_needs_a_vae(tmp_path, capsys, tiny_cfg):
  from longlive_jax.model.params import params_of
  from longlive_jax.model.wan import init_model

  ckpt = checkpoint.save(tmp_path / "dit_only", cfg=tiny_cfg, params=params_of(init_model(tiny_cfg)))
  np.save(tmp_path / "e.npy", np.zeros((4, tiny_cfg.text_dim), np.float32))
  args = ["generate", str(tmp_path / "e.npy"), "--checkpoint", str(ckpt), "--frames", "3", "--height", "4"]
  assert cli.main([*args, "--width", "4", "--window", "9", "--out", str(tmp_path / "v.mp4")]) == 2
  assert "needs the vae component" in capsys.readouterr().err


def test_non_finite_weights_are_refused_at_load(tmp_path, tiny_cfg):
  """A checkpoint that never went through conversion (a training export, a copied folder) with NaN / inf in it
  is an error naming the parameter, for the DiT and for components alike, not an all-NaN video."""
  import jax

  from longlive_jax import checkpoint
  from longlive_jax.convert.errors import CheckpointError
  from longlive_jax.model.params import params_of
  from longlive_jax.model.wan import init_model

  params = jax.tree.map(np.asarray, params_of(init_model(tiny_cfg, seed=0)))
  good = checkpoint.save(tmp_path / "good", cfg=tiny_cfg, params=params)
  checkpoint.load(good)  # finite: loads
  flat, tree = jax.tree_util.tree_flatten_with_path(params)
  leaves = [np.array(v) for _, v in flat]
  leaves[3].reshape(-1)[:2] = [np.nan, np.inf]
  bad = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), leaves)
  name = jax.tree_util.keystr(flat[3][0])
  out = checkpoint.save(tmp_path / "bad", cfg=tiny_cfg, params=bad, components={"extra": (bad, {})})
  with pytest.raises(CheckpointError, match=rf"params: parameter {re.escape(name)} holds 2 non-finite"):
    checkpoint.load(out)
  with pytest.raises(CheckpointError, match="extra: parameter .* holds 2 non-finite"):
    checkpoint.load_component(out, "extra")
