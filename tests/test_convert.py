"""Checkpoint conversion: formats, CLI end to end, round trips, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from longlive_jax import checkpoint, cli, layout
from longlive_jax.config import WanConfig
from longlive_jax.convert import CheckpointError, lora, sources, torch_pickle, wan_dit
from longlive_jax.convert.run import convert_dit
from longlive_jax.model import lora as model_lora
from longlive_jax.model.params import model_from_params


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = np.asarray(v)
  return out


def _assert_trees_equal(a, b):
  fa, fb = _flat(a), _flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


@pytest.fixture
def base_sd(tiny_case):
  src = sources.open_state_dict(tiny_case / "weights.safetensors")
  return {k: src[k] for k in src}


@pytest.fixture
def cfg_file(tmp_path, tiny_cfg):
  p = tmp_path / "tiny.json"
  p.write_text(json.dumps(tiny_cfg.to_dict()))
  return p


def test_torch_reader_matches_known_values(tiny_case, golden_root):
  obj = torch_pickle.load(golden_root / "longlive_causal_stream" / "longlive_base.pt")
  assert list(obj) == ["generator"]
  gen = obj["generator"]
  assert all(k.startswith("model.") for k in gen)
  st = sources.open_state_dict(tiny_case / "weights.safetensors")
  np.testing.assert_array_equal(gen["model.blocks.1.ffn.0.weight"].numpy(), st["blocks.1.ffn.0.weight"])


def test_longlive_container_equals_wan_safetensors(tiny_case, golden_root, tiny_cfg):
  """longlive_base.pt ({'generator': {'model.'+key}}) converts to exactly the safetensors parameters."""
  a = wan_dit.convert(sources.open_state_dict(golden_root / "longlive_causal_stream" / "longlive_base.pt"), tiny_cfg)
  b = wan_dit.convert(sources.open_state_dict(tiny_case / "weights.safetensors"), tiny_cfg)
  _assert_trees_equal(a, b)


def test_sharded_safetensors_and_folder(tmp_path, base_sd, tiny_cfg):
  keys = sorted(base_sd)
  half = len(keys) // 2
  save_file({k: base_sd[k] for k in keys[:half]}, str(tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors"))
  save_file({k: base_sd[k] for k in keys[half:]}, str(tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors"))
  weight_map = {
    k: f"diffusion_pytorch_model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(keys)
  }
  (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  sharded = wan_dit.convert(sources.open_state_dict(tmp_path), tiny_cfg)
  single = wan_dit.convert(base_sd, tiny_cfg)
  _assert_trees_equal(sharded, single)
  # An upstream config.json beside the weights is picked up (num_heads cannot be inferred from shapes).
  up = {
    "_class_name": "WanModel",
    "model_type": "t2v",
    "dim": 32,
    "ffn_dim": 64,
    "num_heads": 2,
    "num_layers": 2,
    "text_dim": 32,
    "text_len": 16,
    "in_dim": 16,
    "out_dim": 16,
    "freq_dim": 256,
    "patch_size": [1, 2, 2],
    "window_size": [-1, -1],
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-6,
  }
  (tmp_path / "config.json").write_text(json.dumps(up))
  s = convert_dit(tmp_path, tmp_path / "ckpt", progress=False)
  cfg, params, adapter, _ = checkpoint.load(s.out)
  assert cfg.num_heads == 2 and adapter is None and s.config_source.endswith("config.json")


def test_bfloat16_safetensors_are_read(tmp_path, base_sd, tiny_cfg):
  import ml_dtypes

  bf = {k: v.astype(ml_dtypes.bfloat16) for k, v in base_sd.items()}
  save_file(bf, str(tmp_path / "w.safetensors"))
  got = wan_dit.convert(sources.open_state_dict(tmp_path / "w.safetensors"), tiny_cfg)
  want = wan_dit.convert({k: v.astype(np.float32) for k, v in bf.items()}, tiny_cfg)
  _assert_trees_equal(got, want)


def test_upstream_round_trip(base_sd, tiny_cfg):
  back = wan_dit.to_upstream(wan_dit.convert(base_sd, tiny_cfg), tiny_cfg)
  assert back.keys() == base_sd.keys()
  for k in base_sd:
    np.testing.assert_array_equal(back[k], base_sd[k], err_msg=k)


def test_cli_convert_safetensors_round_trip(tmp_path, tiny_case, cfg_file, tiny_cfg, base_sd):
  out = tmp_path / "ckpt"
  rc = cli.main(
    ["convert", str(tiny_case / "weights.safetensors"), "--out", str(out), "--config", str(cfg_file), "--quiet"]
  )
  assert rc == 0
  cfg, params, adapter, info = checkpoint.load(out)
  assert cfg == tiny_cfg and adapter is None and info["meta"]["num_params"] == 48032
  _assert_trees_equal(params, wan_dit.convert(base_sd, tiny_cfg))
  # Refuses to overwrite; --overwrite replaces.
  assert (
    cli.main(["convert", str(tiny_case / "weights.safetensors"), "--out", str(out), "--config", str(cfg_file)]) == 2
  )
  assert (
    cli.main(
      [
        "convert",
        str(tiny_case / "weights.safetensors"),
        "--out",
        str(out),
        "--config",
        str(cfg_file),
        "--overwrite",
        "--quiet",
      ]
    )
    == 0
  )


def _first_call(model, noise, ctx):
  x = jnp.asarray(layout.from_longlive(noise))
  ck, cv = model.cross_kv(jnp.asarray(ctx))
  v, _, _ = model.forward_tokens(
    x, jnp.full(x.shape[:2], 1000.0), cross_k=ck, cross_v=cv, frame_pos=jnp.arange(x.shape[1], dtype=jnp.int32)
  )
  return np.asarray(layout.to_longlive(v))


def test_cli_convert_longlive_pt_with_lora_matches_golden(tmp_path, golden_root, tiny_case, cfg_file):
  """A LongLive .pt + lora.pt through the CLI, merged and separate, reproduces the golden LoRA output."""
  case = json.loads((tiny_case / "case.json").read_text())
  inp, out = np.load(tiny_case / "inputs.npz"), np.load(tiny_case / "outputs.npz")
  tol = case["tolerance"]
  pt = golden_root / "longlive_causal_stream" / "longlive_base.pt"
  merged, sep = tmp_path / "merged", tmp_path / "sep"
  common = ["--config", str(cfg_file), "--lora", str(tiny_case / "lora.pt"), "--quiet"]
  assert cli.main(["convert", str(pt), "--out", str(merged), *common]) == 0
  assert cli.main(["convert", str(pt), "--out", str(sep), "--lora-mode", "separate", *common]) == 0
  cfg, params, adapter, info = checkpoint.load(merged)
  assert adapter is None and info["lora"]["rank"] == 4 and info["lora"]["mode"] == "merge"
  with jax.default_matmul_precision("highest"):
    y = _first_call(model_from_params(cfg, params), inp["noise"], inp["prompt_embeds"])
  np.testing.assert_allclose(y, out["flow_pred"], atol=tol["atol"], rtol=tol["rtol"])
  cfg, params, adapter, info = checkpoint.load(sep)
  assert adapter is not None and info["lora"]["mode"] == "separate"
  with jax.default_matmul_precision("highest"):
    y_base = _first_call(model_from_params(cfg, params), inp["noise"], inp["prompt_embeds"])
    y_sep = _first_call(
      model_from_params(cfg, model_lora.merge(params, adapter, scale=info["lora"]["scale"])),
      inp["noise"],
      inp["prompt_embeds"],
    )
  np.testing.assert_allclose(y_base, out["flow_pred_no_lora"], atol=tol["atol"], rtol=tol["rtol"])
  np.testing.assert_allclose(y_sep, out["flow_pred"], atol=tol["atol"], rtol=tol["rtol"])


def test_lora_alpha_scales_the_delta(tiny_case, base_sd):
  p1 = lora.read_peft_lora(tiny_case / "lora.pt")
  p2 = lora.read_peft_lora(tiny_case / "lora.pt", alpha=8.0)
  assert p1.scale == 1.0 and p2.scale == 2.0
  name = "blocks.0.self_attn.q"
  m1, m2 = lora.MergedSource(base_sd, p1), lora.MergedSource(base_sd, p2)
  w = base_sd[f"{name}.weight"]
  np.testing.assert_allclose(m2[f"{name}.weight"] - w, 2 * (m1[f"{name}.weight"] - w), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- bad inputs


def test_missing_key_is_named(base_sd, tiny_cfg):
  sd = dict(base_sd)
  del sd["blocks.1.cross_attn.norm_k.weight"]
  with pytest.raises(CheckpointError, match=r"missing key\(s\): 'blocks\.1\.cross_attn\.norm_k\.weight' \(shape"):
    wan_dit.convert(sd, tiny_cfg)


def test_unexpected_key_is_named(base_sd, tiny_cfg):
  sd = dict(base_sd, **{"blocks.0.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(CheckpointError, match=r"unexpected key\(s\): blocks\.0\.extra\.weight"):
    wan_dit.convert(sd, tiny_cfg)


def test_shape_mismatch_names_key_and_both_shapes(base_sd, tiny_cfg):
  sd = dict(base_sd)
  sd["blocks.0.ffn.0.weight"] = np.zeros((65, 32), np.float32)
  with pytest.raises(CheckpointError, match=r"blocks\.0\.ffn\.0\.weight.*\(65, 32\).*\(64, 32\)"):
    wan_dit.convert(sd, tiny_cfg)


def test_wrong_config_for_checkpoint(tmp_path, tiny_case):
  with pytest.raises(CheckpointError, match="shape mismatch"):
    convert_dit(tiny_case / "weights.safetensors", tmp_path / "o", config="wan2.1-t2v-1.3b", progress=False)
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content", [b"hello, I am not a checkpoint", b"", b"PK\x03\x04garbage-zip"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin2"])
def test_not_a_checkpoint(tmp_path, content, suffix, capsys):
  p = tmp_path / f"file{suffix}"
  p.write_bytes(content)
  with pytest.raises(CheckpointError, match=str(p.name)):
    sources.open_state_dict(p)
  assert cli.main(["convert", str(p), "--out", str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err
  assert "error:" in err and p.name in err and "Traceback" not in err


def test_truncated_safetensors(tmp_path, tiny_case):
  data = (tiny_case / "weights.safetensors").read_bytes()
  p = tmp_path / "cut.safetensors"
  p.write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match="truncated"):
    sources.open_state_dict(p)


def test_missing_file_and_folder_without_weights(tmp_path):
  with pytest.raises(CheckpointError, match="no such file"):
    sources.open_state_dict(tmp_path / "nope.safetensors")
  with pytest.raises(CheckpointError, match="no DiT weights found"):
    sources.open_state_dict(tmp_path)


def test_container_without_requested_entry(golden_root):
  with pytest.raises(CheckpointError, match="no 'generator_ema' entry"):
    sources.open_state_dict(golden_root / "longlive_causal_stream" / "longlive_base.pt", container="generator_ema")


def test_lora_does_not_match_base(tiny_case, golden_root):
  big = sources.open_state_dict(golden_root / "wan_dit_t2v" / "weights.safetensors")  # dim 64, LoRA is dim 32
  peft = lora.read_peft_lora(tiny_case / "lora.pt")
  with pytest.raises(CheckpointError, match=r"does not match the base model: 'blocks\.\d\.[a-z_]+\.\w+': LoRA gives"):
    lora.MergedSource(big, peft)


def test_lora_with_missing_half_and_unknown_module(tmp_path, tiny_case, base_sd):
  peft = lora.read_peft_lora(tiny_case / "lora.pt")
  a, b = peft.modules["blocks.0.self_attn.q"]
  save_file({"base_model.model.blocks.0.self_attn.q.lora_A.weight": a()}, str(tmp_path / "half.safetensors"))
  with pytest.raises(CheckpointError, match="has no lora_B"):
    lora.read_peft_lora(tmp_path / "half.safetensors")
  save_file(
    {
      "base_model.model.blocks.0.nothere.lora_A.default.weight": a(),
      "base_model.model.blocks.0.nothere.lora_B.default.weight": b(),
    },
    str(tmp_path / "bad.safetensors"),
  )
  odd = lora.read_peft_lora(tmp_path / "bad.safetensors")
  with pytest.raises(CheckpointError, match="'blocks.0.nothere' has no weight"):
    lora.MergedSource(base_sd, odd)
  save_file({"blocks.0.self_attn.q.weight": a()}, str(tmp_path / "notlora.safetensors"))
  with pytest.raises(CheckpointError, match="is not a LoRA tensor"):
    lora.read_peft_lora(tmp_path / "notlora.safetensors")


def test_interrupted_save_leaves_no_checkpoint(tmp_path, base_sd, tiny_cfg, monkeypatch):
  params = wan_dit.convert(base_sd, tiny_cfg)

  def boom(*a, **k):
    raise KeyboardInterrupt

  monkeypatch.setattr(checkpoint.ocp.StandardCheckpointer, "wait_until_finished", boom)
  with pytest.raises(KeyboardInterrupt):
    checkpoint.save(tmp_path / "ck", cfg=tiny_cfg, params=params)
  assert not (tmp_path / "ck").exists()
  assert not list(tmp_path.glob(".ck.partial-*"))
  # A folder without metadata (e.g. copied half-way) is rejected with a clear message.
  (tmp_path / "ck").mkdir()
  with pytest.raises(CheckpointError, match="not a longlive-jax checkpoint"):
    checkpoint.load(tmp_path / "ck")


def test_checkpoint_params_must_match_config(tmp_path, base_sd, tiny_cfg):
  params = wan_dit.convert(base_sd, tiny_cfg)
  out = checkpoint.save(tmp_path / "ck", cfg=tiny_cfg, params=params)
  meta = json.loads((out / checkpoint.META_FILE).read_text())
  meta["config"]["ffn_dim"] = 128
  (out / checkpoint.META_FILE).write_text(json.dumps(meta))
  with pytest.raises(CheckpointError, match=r"\['fc1'\]\['bias'\] has shape \(2, 64\).*implies \(2, 128\)"):
    checkpoint.load(out)


@pytest.mark.parametrize("sub", ["convert", "inspect", "parity"])
def test_every_subcommand_has_help(sub, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main([sub, "--help"])
  assert e.value.code == 0
  assert "usage: longlive-jax " + sub in capsys.readouterr().out


def test_inspect_and_parity_cli(tmp_path, tiny_case, cfg_file, capsys, golden_root):
  out = tmp_path / "ck"
  assert (
    cli.main(
      ["convert", str(tiny_case / "weights.safetensors"), "--out", str(out), "--config", str(cfg_file), "--quiet"]
    )
    == 0
  )
  assert cli.main(["inspect", str(out)]) == 0
  assert '"dim": 32' in capsys.readouterr().out
  assert (
    cli.main(["parity", "--golden", str(golden_root), "--case", "wan_dit_t2v", "--json", str(tmp_path / "r.json")]) == 0
  )
  res = json.loads((tmp_path / "r.json").read_text())
  assert res[0]["status"] == "ok" and res[0]["comparisons"][0]["max_abs_err"] < 4e-5
  shutil.rmtree(out)
  assert cli.main(["inspect", str(out)]) == 2


def test_infer_config_from_shapes(base_sd):
  cfg = wan_dit.infer_config(
    sources.TensorSource({k: (v.shape, lambda v=v: v) for k, v in base_sd.items()}, origin="x"),
    base=WanConfig(dim=32, num_heads=2),
  )
  assert (cfg.dim, cfg.ffn_dim, cfg.num_layers, cfg.text_dim, cfg.num_heads) == (32, 64, 2, 32, 2)
