"""Untrusted checkpoint files: crafted, truncated and bit-flipped .pt / .safetensors files and NaN weights.

Every case must either load exactly the original values or raise :class:`CheckpointError` naming the
file (and the tensor where there is one): never read outside a storage, never crash, never another
exception type, never different values.
"""

from __future__ import annotations

import collections
import io
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from longlive_jax import cli
from longlive_jax.convert import CheckpointError, lora, sources, torch_pickle, torch_save, whole

# ----------------------------------------------------------------------------------------------------------------
# Building files


class _View:
  """Pickles as ``_rebuild_tensor_v2(storage, offset, size, stride)`` with any (bad) values."""

  def __init__(self, key, stype, numel, offset, size, stride):
    self.storage = ("storage", torch_save._Global("torch", stype), key, "cpu", numel)
    self.args = (offset, size, stride)

  def __reduce__(self):
    return torch_save._Global("torch._utils", "_rebuild_tensor_v2"), (
      self.storage,
      *self.args,
      False,
      collections.OrderedDict(),
    )


def _write_pt(path: Path, obj, storages: dict[str, bytes]) -> Path:
  buf = io.BytesIO()
  torch_save._Pickler(buf, protocol=2).dump(obj)
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr("archive/version", "3\n")
    for key, data in storages.items():
      zf.writestr(f"archive/data/{key}", data)
  return path


def _one_view_pt(path: Path, *, numel=16, offset=0, size=(4, 4), stride=(4, 1), data_numel=None) -> Path:
  data = np.arange(numel if data_numel is None else data_numel, dtype=np.float32).tobytes()
  return _write_pt(path, {"w": _View("0", "FloatStorage", numel, offset, size, stride)}, {"0": data})


def _small_state_dict() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
    "blocks.0.a.weight": rng.standard_normal((4, 8)).astype(np.float32),
    "blocks.0.b.weight": rng.standard_normal((16,)).astype(ml_dtypes.bfloat16),
    "c.bias": rng.standard_normal((3, 1, 5)).astype(np.float16),
    "step": np.arange(3, dtype=np.int64),
  }


def _st_file(path: Path, header: dict, data: bytes, *, length: int | None = None) -> Path:
  raw = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
  return path


def _outcome(path: Path, want: dict[str, np.ndarray]) -> str:
  """``"same"`` (identical keys, shapes, dtypes, bits) or ``"error"`` (a CheckpointError naming the file)."""
  try:
    src = sources.open_state_dict(path)
    sources.check_shapes({k: v.shape for k, v in want.items()}, src, origin=str(path), what="the original")
    got = {k: src[k] for k in src}
  except CheckpointError as e:
    assert path.name in str(e), e
    return "error"
  for k, v in want.items():
    assert got[k].dtype == v.dtype, (k, got[k].dtype, v.dtype)
    assert got[k].tobytes() == v.tobytes(), f"silently different values for {k!r}"
  return "same"


# ----------------------------------------------------------------------------------------------------------------
# .pt: tensor views against their storage


@pytest.mark.parametrize(
  "view, match",
  [
    (dict(size=(64,), stride=(1,)), r"reaches element 63, outside the storage"),
    (dict(size=(4, 4), stride=(1 << 40, 1)), r"reaches element \d+, outside the storage"),
    (dict(size=(4, 4), stride=(4, 1), offset=1), r"reaches element 16, outside the storage"),
    (dict(size=(2,), stride=(1,), offset=-1), r"negative offset"),
    (dict(size=(4, -4), stride=(4, 1)), r"negative offset, size or stride"),
    (dict(size=(4, 4), stride=(-4, 1)), r"negative offset, size or stride"),
    (dict(size=(4, 4), stride=(4,)), r"different lengths"),
    (dict(size=(0,), stride=(1,), offset=17), r"offset lies past the storage"),
    (dict(size=("4", 4), stride=(4, 1)), r"not integers"),
    (dict(size=(4, 4), stride=(4, 1), data_numel=8), r"holds 32 bytes, its record says 16 x float32"),
    (dict(numel=1 << 62, size=(1 << 62,), stride=(1,), data_numel=16), r"its record says"),
  ],
)
def test_pt_view_outside_its_storage_is_refused(tmp_path, view, match):
  p = _one_view_pt(tmp_path / "crafted.pt", **view)
  with pytest.raises(CheckpointError, match=match) as err:
    sources.open_state_dict(p)
  assert str(p) in str(err.value) and "tensor 'w'" in str(err.value)


def test_pt_missing_storage_and_bad_records(tmp_path):
  p = _write_pt(tmp_path / "nostorage.pt", {"w": _View("7", "FloatStorage", 4, 0, (4,), (1,))}, {})
  with pytest.raises(CheckpointError, match=r"tensor 'w': storage '7' is missing from the archive"):
    torch_pickle.load(p)
  bad = _View("0", "FloatStorage", 4, 0, (4,), (1,))
  bad.storage = ("storage", bad.storage[1], "0", "cpu", -4)
  p = _write_pt(tmp_path / "negnumel.pt", {"w": bad}, {"0": bytes(16)})
  with pytest.raises(CheckpointError, match=r"negnumel.pt: malformed storage record"):
    torch_pickle.load(p)
  p = _write_pt(tmp_path / "nested.pt", {"generator": {"model.x": _View("0", "FloatStorage", 4, 0, (8,), (1,))}}, {})
  with pytest.raises(CheckpointError, match=r"nested.pt: tensor 'generator/model.x'"):
    torch_pickle.load(p)


def test_pt_valid_views_still_load(tmp_path):
  data = np.arange(24, dtype=np.float32)
  views = {
    "t": _View("0", "FloatStorage", 24, 0, (4, 6), (1, 4)),  # a transposed [6, 4]
    "s": _View("0", "FloatStorage", 24, 5, (3,), (2,)),  # a strided slice
    "huge_stride_on_size_1": _View("0", "FloatStorage", 24, 2, (1, 3), (1 << 60, 1)),
    "scalar": _View("0", "FloatStorage", 24, 23, (), ()),
    "empty_at_end": _View("0", "FloatStorage", 24, 24, (0, 5), (5, 1)),
  }
  obj = torch_pickle.load(_write_pt(tmp_path / "views.pt", views, {"0": data.tobytes()}))
  np.testing.assert_array_equal(obj["t"].numpy(), data.reshape(6, 4).T)
  np.testing.assert_array_equal(obj["s"].numpy(), data[5:11:2])
  np.testing.assert_array_equal(obj["huge_stride_on_size_1"].numpy(), data[2:5][None])
  assert obj["scalar"].numpy() == 23 and obj["scalar"].numpy().shape == ()
  assert obj["empty_at_end"].numpy().shape == (0, 5)


def test_pt_huge_stride_cli_exits_cleanly_in_a_subprocess(tmp_path):
  # Before the checks this segfaulted (exit 139) inside numpy's as_strided.
  p = _one_view_pt(tmp_path / "stride.pt", size=(4, 4), stride=(1 << 40, 1))
  code = f"from longlive_jax.convert import torch_pickle; torch_pickle.load({str(p)!r})['w'].numpy()"
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert r.returncode == 1, r  # a Python exception, not a signal
  assert "CheckpointError" in r.stderr and "stride.pt: tensor 'w'" in r.stderr


def test_cli_refuses_a_model_with_an_oversized_tensor(tmp_path, tiny_case, tiny_cfg, capsys):
  src = sources.open_state_dict(tiny_case / "weights.safetensors")
  sd = {k: src[k] for k in src}
  views, storages = {}, {}
  for i, (k, v) in enumerate(sd.items()):
    bad = k == "blocks.1.ffn.0.weight"
    numel = v.size // 2 if bad else v.size  # storage half the size the tensor claims
    stride = tuple(s // v.itemsize for s in v.strides)
    views[k] = _View(str(i), "FloatStorage", numel, 0, v.shape, stride)
    storages[str(i)] = v.astype(np.float32).tobytes()[: numel * 4]
  p = _write_pt(tmp_path / "model.pt", {"generator": views}, storages)
  cfg = tmp_path / "cfg.json"
  cfg.write_text(json.dumps(tiny_cfg.to_dict()))
  rc = cli.main(["convert", str(p), "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet"])
  err = capsys.readouterr().err
  assert rc == 2 and "Traceback" not in err, err
  assert "model.pt: tensor 'generator/blocks.1.ffn.0.weight'" in err and "outside the storage" in err
  assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------------
# .pt: truncated and corrupted files


def test_truncated_pt_is_diagnosed_as_truncated(tmp_path):
  data = torch_save.save(tmp_path / "ok.pt", _small_state_dict()).read_bytes()
  for cut in (len(data) - 1, len(data) - 30, len(data) // 2, 100, 4):
    p = tmp_path / "cut.pt"
    p.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt zip") as err:
      sources.open_state_dict(p)
    assert "legacy" not in str(err.value)
  legacy = tmp_path / "legacy.pt"
  legacy.write_bytes(b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.")  # torch's old magic-number pickle
  with pytest.raises(CheckpointError, match="legacy non-zip"):
    sources.open_state_dict(legacy)


def test_fuzz_pt_truncations_and_bit_flips(tmp_path):
  want = _small_state_dict()
  data = torch_save.save(tmp_path / "ok.pt", want).read_bytes()
  assert _outcome(tmp_path / "ok.pt", want) == "same"
  rng = np.random.default_rng(1234)
  counts = collections.Counter()
  p = tmp_path / "fuzz.pt"
  for cut in rng.integers(0, len(data), 150):
    p.write_bytes(data[:cut])
    counts["cut-" + _outcome(p, want)] += 1
  for n_flips in [1] * 300 + [4] * 100:
    buf = bytearray(data)
    for pos in rng.integers(0, len(buf), n_flips):
      buf[pos] ^= 1 << int(rng.integers(0, 8))
    p.write_bytes(bytes(buf))
    counts["flip-" + _outcome(p, want)] += 1
  assert counts["cut-same"] == 0 and counts["flip-error"] > 100, counts


def test_fuzz_pt_pickle_mutations_raise_only_checkpoint_errors(tmp_path):
  # data.pkl altered and its CRC recomputed: a different but well-formed zip. Any view it describes
  # is checked against its storage; whatever the pickle says, only CheckpointError may come out.
  want = _small_state_dict()
  path = torch_save.save(tmp_path / "ok.pt", want)
  with zipfile.ZipFile(path) as zf:
    entries = {n: zf.read(n) for n in zf.namelist()}
  pkl = entries["archive/data.pkl"]
  rng = np.random.default_rng(99)
  counts = collections.Counter()
  p = tmp_path / "mut.pt"
  for _ in range(300):
    buf = bytearray(pkl)
    pos = int(rng.integers(0, len(buf)))
    buf[pos] = int(rng.integers(0, 256)) if rng.random() < 0.5 else buf[pos] ^ (1 << int(rng.integers(0, 8)))
    with zipfile.ZipFile(p, "w") as zf:
      for n, b in entries.items():
        zf.writestr(n, bytes(buf) if n == "archive/data.pkl" else b)
    try:
      src = sources.open_state_dict(p)
      for k in src:
        src[k]
      counts["read"] += 1
    except CheckpointError as e:
      assert p.name in str(e)
      counts["error"] += 1
  assert counts["error"] > 50, counts


# ----------------------------------------------------------------------------------------------------------------
# safetensors headers


def _st_header(**over):
  entry = {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}
  entry.update(over)
  return {"w": entry, "b": {"dtype": "F32", "shape": [4], "data_offsets": [64, 80]}}


@pytest.mark.parametrize(
  "header, data, match",
  [
    (_st_header(data_offsets=[0, 32]), bytes(80), r"tensor 'w': data_offsets \[0, 32\] span 32 bytes.*needs 64"),
    (_st_header(data_offsets=[64, 0]), bytes(80), r"tensor 'w': data_offsets \[64, 0\] are reversed"),
    (_st_header(data_offsets=[16, 80]), bytes(80), r"tensors 'w' and 'b' overlap"),
    (_st_header(data_offsets=[80, 144]), bytes(80), r"tensor 'w': extends past the end of the file"),
    (_st_header(dtype="F8_E4M3"), bytes(80), r"tensor 'w': unknown dtype 'F8_E4M3'"),
    (_st_header(shape=[-4, -4]), bytes(80), r"tensor 'w': malformed shape"),
    (_st_header(shape=[4, 4.0]), bytes(80), r"tensor 'w': malformed shape"),
    (_st_header(data_offsets=[0]), bytes(80), r"tensor 'w': malformed data_offsets"),
    (_st_header(data_offsets=["0", "64"]), bytes(80), r"tensor 'w': malformed data_offsets"),
    ({"w": [1, 2]}, b"", r"tensor 'w': malformed safetensors header entry"),
    ({"__metadata__": "x"}, b"", r"__metadata__ is not an object"),
    ([1, 2], b"", r"header is not a JSON object"),
  ],
)
def test_inconsistent_safetensors_headers_are_refused(tmp_path, header, data, match):
  p = _st_file(tmp_path / "crafted.safetensors", header, data)
  with pytest.raises(CheckpointError, match=match) as err:
    sources.open_state_dict(p)
  assert str(p) in str(err.value)


def test_safetensors_header_length_json_and_duplicates(tmp_path):
  p = _st_file(tmp_path / "len.safetensors", _st_header(), bytes(80), length=10_000)
  with pytest.raises(CheckpointError, match=r"header \(10000 bytes\) runs past the end of the file"):
    sources.open_state_dict(p)
  p = tmp_path / "json.safetensors"
  p.write_bytes(struct.pack("<Q", 12) + b'{"w": {"dty' + bytes(40))
  with pytest.raises(CheckpointError, match=r"json.safetensors: not a readable .safetensors file \(bad JSON"):
    sources.open_state_dict(p)
  raw = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], '
  raw += b'"data_offsets": [4, 8]}}'
  p = tmp_path / "dup.safetensors"
  p.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
  with pytest.raises(CheckpointError, match=r"duplicate key 'w'"):
    sources.open_state_dict(p)


def test_zero_size_safetensors_tensor_loads(tmp_path):
  header = {"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}, **_st_header()}
  header["w"]["data_offsets"], header["b"]["data_offsets"] = [0, 64], [64, 80]
  src = sources.open_state_dict(_st_file(tmp_path / "z.safetensors", header, np.arange(20, dtype="<f4").tobytes()))
  assert src["e"].shape == (0, 3)
  np.testing.assert_array_equal(src["b"], np.arange(16, 20, dtype=np.float32))


def test_fuzz_safetensors_truncations_and_header_flips(tmp_path):
  # safetensors carries no checksum: a flipped bit in the data region is undetectable by any reader,
  # so flips go into the 8-byte length and the JSON header (where every inconsistency must be caught).
  want = {k: v for k, v in _small_state_dict().items() if v.dtype != ml_dtypes.bfloat16}
  path = tmp_path / "ok.safetensors"
  save_file(want, str(path))
  data = path.read_bytes()
  header_end = 8 + struct.unpack("<Q", data[:8])[0]
  assert _outcome(path, want) == "same"
  rng = np.random.default_rng(4321)
  counts = collections.Counter()
  p = tmp_path / "fuzz.safetensors"
  for cut in rng.integers(0, len(data), 150):
    p.write_bytes(data[:cut])
    counts["cut-" + _outcome(p, want)] += 1
  for n_flips in [1] * 300 + [3] * 100:
    buf = bytearray(data)
    for pos in rng.integers(0, header_end, n_flips):
      buf[pos] ^= 1 << int(rng.integers(0, 8))
    p.write_bytes(bytes(buf))
    counts["flip-" + _outcome(p, want)] += 1
  assert counts["cut-same"] == 0 and counts["flip-error"] > 200, counts


# ----------------------------------------------------------------------------------------------------------------
# Non-finite weights


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_non_finite_tensor_is_named_with_its_count(tmp_path, fmt):
  sd = _small_state_dict()
  sd["blocks.0.b.weight"][[1, 5, 6]] = [np.nan, np.inf, -np.inf]
  if fmt == "pt":
    p = torch_save.save(tmp_path / "nan.pt", sd)
  else:
    sd["blocks.0.b.weight"] = sd["blocks.0.b.weight"].astype(np.float32)
    p = tmp_path / "nan.safetensors"
    save_file(sd, str(p))
  src = sources.open_state_dict(p)
  np.testing.assert_array_equal(src["blocks.0.a.weight"], sd["blocks.0.a.weight"])  # the others still read
  with pytest.raises(CheckpointError, match=r"tensor 'blocks.0.b.weight' holds 3 non-finite value\(s\)") as err:
    src["blocks.0.b.weight"]
  assert str(p) in str(err.value)


def test_cli_refuses_a_nan_checkpoint(tmp_path, tiny_case, tiny_cfg, capsys, caplog):
  src = sources.open_state_dict(tiny_case / "weights.safetensors")
  sd = {k: np.array(src[k]) for k in src}
  sd["blocks.1.self_attn.o.weight"][:] = np.nan
  n = sd["blocks.1.self_attn.o.weight"].size
  p = tmp_path / "nan.safetensors"
  save_file(sd, str(p))
  cfg = tmp_path / "cfg.json"
  cfg.write_text(json.dumps(tiny_cfg.to_dict()))
  rc = cli.main(["convert", str(p), "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet"])
  err = capsys.readouterr().err
  assert rc == 2 and "Traceback" not in err, err
  assert f"nan.safetensors: tensor 'blocks.1.self_attn.o.weight' holds {n} non-finite value(s)" in err
  assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.partial-*"))
  assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no traceback logged by Orbax's threads


def test_lora_merge_overflow_is_refused():
  base = {"blocks.0.ffn.0.weight": np.full((2, 3), 65000.0, np.float16)}
  a, b = np.ones((1, 3), np.float32), np.full((2, 1), 1000.0, np.float32)
  peft = lora.PeftLora(
    1, 1.0, {"blocks.0.ffn.0": (lambda: a, lambda: b)}, {"blocks.0.ffn.0": ((1, 3), (2, 1))}, "l.pt", "given"
  )
  merged = lora.MergedSource(base, peft)
  with pytest.raises(CheckpointError, match=r"tensor 'blocks.0.ffn.0.weight' holds 6 non-finite"):
    merged["blocks.0.ffn.0.weight"]


# ----------------------------------------------------------------------------------------------------------------
# Hints


def test_missing_weights_hint_uses_hf_download(tmp_path):
  (tmp_path / "wan").mkdir()
  with pytest.raises(CheckpointError) as err:
    whole.find_inputs(tmp_path / "wan", tmp_path / "ll")
  msg = str(err.value)
  assert f"hf download Wan-AI/Wan2.1-T2V-1.3B --local-dir {tmp_path / 'wan'}" in msg
  assert "hf download Efficient-Large-Model/LongLive-1.3B" in msg and "huggingface-cli" not in msg
