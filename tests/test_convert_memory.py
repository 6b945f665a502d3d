"""Streaming conversion: memory bounded by a layer, not the model; same folder as ``checkpoint.save``.

numpy and Python allocations are traced by ``tracemalloc`` (tensorstore's own C++ buffers are not:
``experiments/convert_memory/measure.py`` measures the process RSS of a full-size conversion).
"""

from __future__ import annotations

import json
import tracemalloc

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from longlive_jax import checkpoint
from longlive_jax.config import tiny_config
from longlive_jax.convert import CheckpointError, lazy, wan_dit, writer
from longlive_jax.convert.run import convert_dit

CFG = tiny_config(dim=128, ffn_dim=1024, num_layers=16, text_dim=64, freq_dim=64)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  """A random float32 checkpoint of CFG (about 26 MB; its largest tensor 0.5 MB) and its config file."""
  d = tmp_path_factory.mktemp("synthetic")
  rng = np.random.default_rng(0)
  sd = {k: rng.standard_normal(s, dtype=np.float32) for k, s in wan_dit.expected_shapes(CFG).items()}
  save_file(sd, str(d / "model.safetensors"))
  (d / "cfg.json").write_text(json.dumps(CFG.to_dict()))
  return d, sd


def _traced_peak(fn) -> int:
  tracemalloc.start()
  try:
    fn()
    return tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_conversion_peak_memory_is_bounded_by_a_layer_not_the_model(tmp_path, synthetic):
  d, sd = synthetic
  model_bytes = sum(v.nbytes for v in sd.values())
  largest = max(v.nbytes for v in sd.values())
  warm = {"x": lazy.lazy_leaf((2, 3), np.float32, lambda: iter([(0, np.ones(3)), (1, np.ones(3))]), stacked=True)}
  writer.save(tmp_path / "warm", cfg=CFG, params=warm)  # imports and first-call set-up, outside the trace
  peak = _traced_peak(
    lambda: convert_dit(d / "model.safetensors", tmp_path / "ck", config=str(d / "cfg.json"), progress=False)
  )
  # The materialized path (every leaf, then Orbax's copy of each) held over twice the model.
  assert peak < model_bytes / 4, (peak, model_bytes)
  assert peak < 12 * largest, (peak, largest)
  _, params, _, _ = checkpoint.load(tmp_path / "ck")
  want = wan_dit.convert(sd, CFG)
  for (pa, a), (pb, b) in zip(
    jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves_with_path(want), strict=True
  ):
    assert pa == pb
    np.testing.assert_array_equal(np.asarray(a), b, err_msg=str(pa))


def test_writer_folder_matches_checkpoint_save(tmp_path, synthetic):
  d, _ = synthetic
  cfg = tiny_config(num_layers=3)
  rng = np.random.default_rng(1)
  sd = {k: rng.standard_normal(s, dtype=np.float32) for k, s in wan_dit.expected_shapes(cfg).items()}
  params = wan_dit.convert(sd, cfg, dtype="bfloat16")
  lazy_params = wan_dit.convert_lazy(sd, cfg, dtype="bfloat16")
  comp = {"extra": ({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"k": 1})}
  kw = dict(cfg=cfg, meta={"m": 1}, components=comp, files={"cfg": d / "cfg.json"})
  a = checkpoint.save(tmp_path / "a", params=params, **kw)
  b = writer.save(tmp_path / "b", params=lazy_params, **kw)
  assert json.loads((a / checkpoint.META_FILE).read_text()) == json.loads((b / checkpoint.META_FILE).read_text())
  la, lb = checkpoint.load(a), checkpoint.load(b)
  assert la[0] == lb[0] and la[2] == lb[2] and la[3] == lb[3]
  for x, y in zip(jax.tree.leaves(la[1]), jax.tree.leaves(lb[1]), strict=True):
    assert type(x) is type(y) and x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert checkpoint.load_component(a, "extra")[0] == checkpoint.load_component(b, "extra")[0]
  np.testing.assert_array_equal(checkpoint.load_component(b, "extra")[1]["w"], comp["extra"][0]["w"])
  assert (b / "cfg").read_text() == (d / "cfg.json").read_text()


def test_error_while_writing_leaves_nothing_and_is_raised_as_is(tmp_path, caplog):
  def parts():
    yield 0, np.zeros((3,), np.float32)
    raise CheckpointError("bad.pt: tensor 'x' is broken")

  tree = {"ok": np.ones(2, np.float32), "x": lazy.lazy_leaf((2, 3), np.float32, parts, stacked=True)}
  with pytest.raises(CheckpointError, match="tensor 'x' is broken"):
    writer.save(tmp_path / "ck", cfg=CFG, params=tree)
  assert list(tmp_path.iterdir()) == []
  assert not [r for r in caplog.records if r.levelname == "ERROR"]
  # a part of the wrong shape is refused, not written
  bad = lazy.lazy_leaf((2, 3), np.float32, lambda: iter([(0, np.zeros((4,), np.float32))]), stacked=True)
  with pytest.raises(CheckpointError, match=r"part 0 has shape \(4,\), expected \(3,\)"):
    bad.materialize()
