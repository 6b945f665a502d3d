"""experiments/toyworld's weight tools: ``grow.py`` deepens a DiT without changing what it computes (and the copies
are trainable: they do change it once their output projections move); ``soup.py`` writes the weighted average of
two exports."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "toyworld"))
import grow  # noqa: E402
import soup  # noqa: E402

from longlive_jax import checkpoint  # noqa: E402
from longlive_jax.config import tiny_config  # noqa: E402
from longlive_jax.model.params import model_from_params, params_of  # noqa: E402
from longlive_jax.model.wan import init_model  # noqa: E402


def _inputs(cfg, *, b=2, f=3, h=4, w=6):
  k = jax.random.split(jax.random.key(7), 3)
  x = jax.random.normal(k[0], (b, f, h, w, cfg.in_dim))  # [B, F, H, W, C]
  t = jax.random.uniform(k[1], (b,), minval=0, maxval=1000)
  ctx = jax.random.normal(k[2], (b, cfg.text_len, cfg.text_dim))
  return x, t, ctx


def _grown(tmp_path, monkeypatch, cfg, params):
  checkpoint.save(tmp_path / "a", cfg=cfg, params=params)
  monkeypatch.setattr(sys, "argv", ["grow.py", "--dit", str(tmp_path / "a"), "--out", str(tmp_path / "deep")])
  assert grow.main() == 0
  deep_cfg, deep, _, info = checkpoint.load(tmp_path / "deep", dtype="float32")
  return deep_cfg, deep, info


def test_grown_dit_computes_what_it_grew_from_and_its_copies_can_learn(tmp_path, monkeypatch):
  cfg = tiny_config().replace(dtype="float32")
  params = params_of(init_model(cfg, seed=1))
  deep_cfg, deep, info = _grown(tmp_path, monkeypatch, cfg, params)
  assert deep_cfg.num_layers == 2 * cfg.num_layers
  assert info["meta"]["grown_from"]["num_layers"] == cfg.num_layers
  x = _inputs(cfg)
  want = np.asarray(model_from_params(cfg, params)(*x))
  got = np.asarray(model_from_params(deep_cfg, deep)(*x))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # block i sits at 2i unchanged; its copy at 2i + 1 equals it except for the zeroed output projections
  q = np.asarray(params["blocks"]["self_attn"]["q"]["kernel"])
  np.testing.assert_array_equal(np.asarray(deep["blocks"]["self_attn"]["q"]["kernel"])[1::2], q)
  np.testing.assert_array_equal(np.asarray(deep["blocks"]["self_attn"]["q"]["kernel"])[0::2], q)
  assert not np.any(np.asarray(deep["blocks"]["ffn"]["fc2"]["kernel"])[1::2])
  # a copy whose FFN output moves changes the output: the copies are real blocks, not dead weight
  moved = jax.tree.map(np.array, deep)
  moved["blocks"]["ffn"]["fc2"]["kernel"][1] = np.asarray(params["blocks"]["ffn"]["fc2"]["kernel"])[0]
  assert not np.allclose(np.asarray(model_from_params(deep_cfg, moved)(*x)), want, atol=1e-3)


def test_soup_is_the_weighted_average_of_two_exports(tmp_path, monkeypatch):
  cfg = tiny_config().replace(dtype="float32")
  pa, pb = params_of(init_model(cfg, seed=1)), params_of(init_model(cfg, seed=2))
  checkpoint.save(tmp_path / "a", cfg=cfg, params=pa, meta={"stage": "a"})
  checkpoint.save(tmp_path / "b", cfg=cfg, params=pb)
  argv = ["soup.py", "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--alpha", "0.25"]
  monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path / "s")])
  assert soup.main() == 0
  _, ps, _, info = checkpoint.load(tmp_path / "s", dtype="float32")
  assert info["meta"]["stage"] == "a" and info["meta"]["soup"]["alpha"] == 0.25
  for x, y, z in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), jax.tree.leaves(ps), strict=True):
    np.testing.assert_allclose(np.asarray(z), 0.75 * np.asarray(x) + 0.25 * np.asarray(y), rtol=1e-6, atol=1e-7)


def test_soup_mix_is_the_weighted_mean_of_several_exports(tmp_path, monkeypatch):
  cfg = tiny_config().replace(dtype="float32")
  ps_in = [params_of(init_model(cfg, seed=s)) for s in (1, 2, 3)]
  for name, p in zip("abc", ps_in, strict=True):
    checkpoint.save(tmp_path / name, cfg=cfg, params=p, meta={"stage": name})
  mix = ["--mix", str(tmp_path / "a"), "--mix", f"{tmp_path / 'b'}=2", "--mix", f"{tmp_path / 'c'}=1"]
  monkeypatch.setattr(sys, "argv", ["soup.py", *mix, "--out", str(tmp_path / "s")])
  assert soup.main() == 0
  _, ps, _, info = checkpoint.load(tmp_path / "s", dtype="float32")
  assert info["meta"]["stage"] == "a"
  assert [w for _, w in info["meta"]["soup"]["mix"]] == [0.25, 0.5, 0.25]
  for x, y, z, out in zip(*(jax.tree.leaves(p) for p in (*ps_in, ps)), strict=True):
    want = 0.25 * np.asarray(x) + 0.5 * np.asarray(y) + 0.25 * np.asarray(z)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6, atol=1e-7)


def test_soup_mix_rejects_bad_weights_and_mixed_forms(tmp_path, monkeypatch, capsys):
  for argv, said in (
    (["--mix", "a=x", "--mix", "b"], "must be a number"),
    (["--mix", "a=0", "--mix", "b"], "must be > 0"),
    (["--mix", "a"], "at least two"),
    (["--mix", "a", "--mix", "b", "--alpha", "0.5"], "either --mix"),
  ):
    monkeypatch.setattr(sys, "argv", ["soup.py", *argv, "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as e:
      soup.main()
    assert e.value.code == 2 and said in capsys.readouterr().err, argv
  assert not (tmp_path / "s").exists()


def test_soup_refuses_exports_of_different_models(tmp_path, monkeypatch, capsys):
  cfg = tiny_config().replace(dtype="float32")
  small = cfg.replace(num_layers=cfg.num_layers + 1)
  checkpoint.save(tmp_path / "a", cfg=cfg, params=params_of(init_model(cfg)))
  checkpoint.save(tmp_path / "b", cfg=small, params=params_of(init_model(small)))
  argv = ["soup.py", "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--alpha", "0.5"]
  monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path / "s")])
  assert soup.main() == 2
  assert "different configs" in capsys.readouterr().err
  assert not (tmp_path / "s").exists()
