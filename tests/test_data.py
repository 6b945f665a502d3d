"""Training data: tfds builders (ArrayRecord, no TensorFlow), bad-record policy, grain pipelines, resume."""

from __future__ import annotations

import json
import sys
import warnings

import grain
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest

from longlive_jax.data import (
  DataError,
  VideoLatentsConfig,
  build_prompt_pairs,
  build_prompts,
  build_video_latents,
  make_iterator,
  open_source,
  read_clip,
  read_report,
  synthetic_clip,
  write_synthetic_videos,
)
from longlive_jax.data.pipeline import npz_dataset
from longlive_jax.data.video import write_video

H, W, F = 32, 48, 9  # tiny clips: 9 pixel frames -> 3 latent frames of 4x6


def fake_encode_video(frames: np.ndarray) -> np.ndarray:
  """Wan-VAE-shaped stand-in: 1 + (F-1)/4 latent frames, 8x8 spatial pooling, 16 channels."""
  x = frames.astype(np.float32) / 127.5 - 1.0  # [F, H, W, 3]
  f, h, w, _ = x.shape
  groups = [x[:1]] + [x[1 + 4 * i : 5 + 4 * i] for i in range((f - 1) // 4)]
  t = np.stack([g.mean(0) for g in groups])  # [F', H, W, 3]
  t = t.reshape(len(groups), h // 8, 8, w // 8, 8, 3).mean((2, 4))  # [F', h, w, 3]
  proj = np.linspace(-1, 1, 3 * 16, dtype=np.float32).reshape(3, 16)
  return t @ proj  # [F', h, w, 16]


def fake_encode_text(texts: list[str]) -> np.ndarray:
  """umT5-shaped stand-in: [N, L=6, D=4] from character codes (distinct for distinct prompts)."""
  out = np.zeros((len(texts), 6, 4), np.float32)
  for i, s in enumerate(texts):
    codes = np.frombuffer(s.encode()[:24].ljust(24, b"\0"), np.uint8).astype(np.float32)
    out[i] = codes.reshape(6, 4) / 255.0 + len(s)
  return out


def _records(dataset_dir) -> list[dict]:
  _, src = open_source(dataset_dir)
  return sorted((src[i] for i in range(len(src))), key=lambda r: int(r["index"]))


def test_no_tensorflow():
  assert "tensorflow" not in sys.modules
  with pytest.raises(ImportError):
    import tensorflow  # noqa: F401


def test_prompts_builder(tmp_path):
  src = tmp_path / "prompts.txt"
  src.write_bytes(
    b"\xef\xbb\xbfa cat surfing\r\n\nthe dog runs\na cat surfing\n   \n  caf\xc3\xa9 at night \nlast line"
  )
  res = build_prompts(src, data_dir=tmp_path / "ds")
  assert (res.num_sources, res.num_built, res.num_skipped) == (7, 5, 2)
  assert res.num_built + res.num_skipped == res.num_sources
  assert [(r.line, r.kind) for r in res.skipped] == [(2, "blank_line"), (5, "blank_line")]
  recs = _records(res.dataset_dir)
  want = ["a cat surfing", "the dog runs", "a cat surfing", "caf\u00e9 at night", "last line"]
  assert [r["prompt"].decode() for r in recs] == want
  assert [int(r["line"]) for r in recs] == [1, 3, 4, 6, 7]
  assert [int(r["index"]) for r in recs] == list(range(5))
  report = read_report(res.dataset_dir)
  assert report["num_sources"] == 7 and report["notes"]["num_duplicates"] == 1
  assert sorted(p.name for p in res.dataset_dir.iterdir() if "array_record" in p.name)  # ArrayRecord output
  assert build_prompts(src, data_dir=tmp_path / "ds").reused
  src.write_text("changed\n")
  with pytest.raises(DataError, match="overwrite=True"):
    build_prompts(src, data_dir=tmp_path / "ds")
  assert build_prompts(src, data_dir=tmp_path / "ds", overwrite=True).num_built == 1


def test_prompts_fail_mode_names_line(tmp_path):
  src = tmp_path / "p.txt"
  src.write_bytes(b"fine\n\nbad \xff byte\n")
  with pytest.raises(DataError, match=rf"{src}:3: line is not valid UTF-8"):
    build_prompts(src, data_dir=tmp_path / "ds", on_error="fail")
  with pytest.warns(UserWarning, match=r"skipped 1 bad source"):
    res = build_prompts(src, data_dir=tmp_path / "ds2")
  assert (res.num_built, res.num_skipped, res.num_sources) == (1, 2, 3)
  with pytest.raises(DataError, match=rf"{src}:3: line is not valid UTF-8 \(the existing build"):
    build_prompts(src, data_dir=tmp_path / "ds2", on_error="fail")  # reusing a build with skips still fails


def test_prompt_pairs_jsonl(tmp_path):
  src = tmp_path / "pairs.jsonl"
  lines = [
    json.dumps({"prompts": ["a fox", "a fox jumps"]}),
    json.dumps({"first": "sea", "second": "storm at sea"}),
    "{not json",
    json.dumps({"prompts": ["x", "y", "z"]}),
    "",
    json.dumps({"first": "ok", "second": "  "}),
    json.dumps({"prompt": "wrong key"}),
  ]
  src.write_text("\n".join(lines) + "\n")
  with pytest.warns(UserWarning, match="skipped 4 bad source"):
    res = build_prompt_pairs(src, data_dir=tmp_path / "ds")
  assert (res.num_sources, res.num_built, res.num_skipped) == (7, 2, 5)
  kinds = [(r.line, r.kind) for r in res.skipped]
  assert kinds == [(3, "invalid_json"), (4, "bad_pair"), (5, "blank_line"), (6, "empty_prompt"), (7, "bad_pair")]
  recs = _records(res.dataset_dir)
  got = [(r["prompt_a"].decode(), r["prompt_b"].decode(), int(r["line"])) for r in recs]
  assert got == [("a fox", "a fox jumps", 1), ("sea", "storm at sea", 2)]
  with pytest.raises(DataError, match=rf"{src}:3: invalid JSON"):
    build_prompt_pairs(src, data_dir=tmp_path / "ds_fail", on_error="fail")


def test_prompt_pairs_tsv_and_two_txt(tmp_path):
  tsv = tmp_path / "pairs.tsv"
  tsv.write_text("a\tb\nthree\tcols\there\n\tempty first\nc\td\n")
  with pytest.warns(UserWarning, match="skipped 2 bad source"):
    res = build_prompt_pairs(tsv, data_dir=tmp_path / "tsv")
  assert (res.num_built, res.num_skipped) == (2, 2)
  assert [(r.line, r.kind) for r in res.skipped] == [(2, "bad_columns"), (3, "empty_prompt")]
  recs = _records(res.dataset_dir)
  assert [(r["prompt_a"].decode(), r["prompt_b"].decode()) for r in recs] == [("a", "b"), ("c", "d")]

  # Upstream's layout: line i of the prompt file pairs with line i of the switch file.
  first, second = tmp_path / "first.txt", tmp_path / "switch.txt"
  first.write_text("p0\np1\n\np3\n")
  second.write_text("s0\n\n\ns3\n")
  with pytest.warns(UserWarning, match=r"switch\.txt:2: empty prompt"):
    res = build_prompt_pairs(first, switch_source=second, data_dir=tmp_path / "txt")
  assert [(r.source, r.line, r.kind) for r in res.skipped] == [
    (str(second), 2, "empty_prompt"),
    (str(first), 3, "blank_line"),
  ]
  assert [(r["prompt_a"].decode(), r["prompt_b"].decode()) for r in _records(res.dataset_dir)] == [
    ("p0", "s0"),
    ("p3", "s3"),
  ]
  second.write_text("s0\n")
  with pytest.raises(DataError, match="same number of lines"):
    build_prompt_pairs(first, switch_source=second, data_dir=tmp_path / "txt2")
  with pytest.raises(DataError, match="switch_source"):
    build_prompt_pairs(first, data_dir=tmp_path / "txt3")


def test_read_clip_resize_crop_and_fps(tmp_path):
  (v,) = write_synthetic_videos(tmp_path, 1, frames=12, height=48, width=64, seed=7)
  ref, caption = synthetic_clip(frames=12, height=48, width=64, seed=(7, 0))
  assert caption == v.caption and v.path.with_suffix(".txt").read_text().strip() == caption
  full = read_clip(v.path, num_frames=12, height=48, width=64, fps=None)
  assert np.abs(full.astype(int) - ref).mean() < 1.5  # H.264 at crf 10
  # Cover-resize 48x64 -> 24x32 (2x2 area), center-crop to 24x24 = source columns 8..56.
  small = read_clip(v.path, num_frames=12, height=24, width=24, fps=None).astype(float)
  want = ref[:, :, 8:56].reshape(12, 24, 2, 24, 2, 3).mean((2, 4))
  assert small.shape == (12, 24, 24, 3) and np.abs(small - want).mean() < 3.0
  half = read_clip(v.path, num_frames=6, height=48, width=64, fps=8.0)  # 16 fps -> every 2nd frame
  assert np.abs(half.astype(int) - ref[::2]).mean() < 1.5
  assert np.abs(half.astype(int) - ref[1::2]).mean() > 5 * np.abs(half.astype(int) - ref[::2]).mean()


def _video_folder(tmp_path):
  folder = tmp_path / "videos"
  vids = write_synthetic_videos(folder, 4, frames=F, height=H, width=W, seed=1)
  (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
  (folder / "corrupt.txt").write_text("a corrupt file")
  vids[3].path.with_suffix(".txt").unlink()  # video_0003: no caption
  short, _ = synthetic_clip(frames=4, height=H, width=W, seed=99)
  write_video(folder / "short.mp4", short)
  (folder / "short.txt").write_text("too short\n")
  return folder, vids


def test_video_latents_skip_and_fail(tmp_path):
  folder, vids = _video_folder(tmp_path)
  cfg = VideoLatentsConfig(num_frames=F, height=H, width=W, fps=16.0, text_batch_size=2)
  enc = {"encode_video": fake_encode_video, "encode_text": fake_encode_text, "config": cfg}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res = build_video_latents(folder, data_dir=tmp_path / "ds", **enc)
  assert any("skipped 3 bad source" in str(w.message) for w in caught)
  assert (res.num_sources, res.num_built, res.num_skipped) == (6, 3, 3)
  got = {(r.source.rsplit("/", 1)[-1], r.kind) for r in res.skipped}
  assert got == {("corrupt.mp4", "unreadable_video"), ("video_0003.mp4", "missing_caption"), ("short.mp4", "too_short")}
  report = read_report(res.dataset_dir)
  assert report["num_built"] + report["num_skipped"] == report["num_sources"] == 6
  assert report["notes"]["latent_shape"] == [3, 4, 6, 16]

  recs = _records(res.dataset_dir)
  assert [r["file"].decode() for r in recs] == ["video_0000.mp4", "video_0001.mp4", "video_0002.mp4"]
  for rec, v in zip(recs, vids, strict=False):
    assert rec["caption"].decode() == v.caption
    np.testing.assert_array_equal(rec["text_embedding"], fake_encode_text([v.caption])[0])
    clip = read_clip(v.path, num_frames=F, height=H, width=W, fps=16.0)
    np.testing.assert_array_equal(rec["latents"], fake_encode_video(clip))  # encoded once, stored exactly
    ref, _ = synthetic_clip(frames=F, height=H, width=W, seed=v.seed)
    # Against the drawn frames: H.264 4:2:0 blurs colour edges (max ~0.07 here), a one-frame shift gives > 0.17.
    err = np.abs(rec["latents"] - fake_encode_video(ref))
    assert err.max() < 0.1 and err.mean() < 0.015, (err.max(), err.mean())

  with pytest.raises(DataError, match=r"corrupt\.mp4: cannot decode video"):
    build_video_latents(folder, data_dir=tmp_path / "ds_fail", on_error="fail", **enc)
  assert not (tmp_path / "ds_fail" / "video_latents" / "1.0.0").exists()  # nothing half-written is left
  (folder / "corrupt.mp4").unlink()
  with pytest.raises(DataError, match=r"short\.mp4: too short: 4 frames .* needs 9 frames at 16 fps"):
    build_video_latents(folder, data_dir=tmp_path / "ds_fail", on_error="fail", **enc)
  (folder / "short.mp4").unlink()
  with pytest.raises(DataError, match=r"video_0003\.mp4: no caption: no video_0003\.txt"):
    build_video_latents(folder, data_dir=tmp_path / "ds_fail", on_error="fail", **enc)


@pytest.mark.parametrize("mapping", ["jsonl", "csv"])
def test_video_latents_mapping_bf16_and_pipeline(tmp_path, mapping):
  folder = tmp_path / "videos"
  vids = write_synthetic_videos(folder, 3, frames=F, height=H, width=W, seed=2, captions=mapping)
  if mapping == "jsonl":  # lines 1-3 are the videos
    with open(folder / "captions.jsonl", "a") as f:
      f.write(json.dumps({"file": "gone.mp4", "caption": "orphan"}) + "\n")
      f.write(json.dumps({"file": "video_0000.mp4", "caption": "again"}) + "\n")
  else:  # line 1 is the header, lines 2-4 the videos
    with open(folder / "metadata.csv", "a") as f:
      f.write('gone.mp4,orphan\n"video_0000.mp4","again, with a comma"\n')
  first_bad = 4 if mapping == "jsonl" else 5
  cfg = VideoLatentsConfig(num_frames=F, height=H, width=W, fps=None, store_dtype="bfloat16")
  with pytest.warns(UserWarning):
    res = build_video_latents(
      folder, data_dir=tmp_path / "ds", encode_video=fake_encode_video, encode_text=fake_encode_text, config=cfg
    )
  assert (res.num_sources, res.num_built, res.num_skipped) == (5, 3, 2)
  assert [(r.line, r.kind) for r in res.skipped] == [(first_bad, "missing_video"), (first_bad + 1, "duplicate_caption")]
  assert all(r.source.endswith(f"captions.{mapping}" if mapping == "jsonl" else "metadata.csv") for r in res.skipped)
  batch = next(make_iterator(res.dataset_dir, batch_size=3, seed=0, shuffle=False))
  assert batch["latents"].shape == (3, 3, 4, 6, 16) and batch["latents"].dtype == ml_dtypes.bfloat16
  assert batch["text_embedding"].shape == (3, 6, 4)
  for i, name in enumerate(batch["file"]):
    v = vids[int(name[6:10])]
    assert batch["caption"][i] == v.caption
    clip = read_clip(v.path, num_frames=F, height=H, width=W, fps=None)
    want = fake_encode_video(clip).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(batch["latents"][i].view(np.uint16), want.view(np.uint16))


@pytest.fixture(scope="module")
def prompt_set(tmp_path_factory):
  d = tmp_path_factory.mktemp("prompts")
  (d / "p.txt").write_text("".join(f"prompt number {i}\n" for i in range(23)))
  return build_prompts(d / "p.txt", data_dir=d / "ds").dataset_dir


def _indices(batches):
  return [b["index"].tolist() for b in batches]


def test_pipeline_deterministic_and_exact_resume(prompt_set, tmp_path):
  kw = {"batch_size": 4, "seed": 11, "shard_index": 0, "shard_count": 1}
  a, b = make_iterator(prompt_set, **kw), make_iterator(prompt_set, **kw)
  first = [next(a) for _ in range(12)]  # 48 records: crosses two epoch boundaries (23 records)
  assert _indices(first) == _indices([next(b) for _ in range(12)])
  assert _indices(first) != _indices([next(make_iterator(prompt_set, **{**kw, "seed": 12})) for _ in range(12)])
  flat = sum(_indices(first), [])
  assert sorted(flat[:23]) == list(range(23)) and flat[:23] != flat[23:46]  # whole epoch, reshuffled next epoch
  for batch in first:
    assert batch["prompt"] == [f"prompt number {i}" for i in batch["index"]]

  it = make_iterator(prompt_set, **kw)
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  cont = [next(it) for _ in range(3)]
  resumed = make_iterator(prompt_set, **kw)
  resumed.set_state(state)
  assert _indices([next(resumed) for _ in range(3)]) == _indices(cont) == _indices(first[5:8])

  # Orbax round trip through grain's checkpoint handler.
  it = make_iterator(prompt_set, **kw)
  for _ in range(5):
    next(it)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    fresh = make_iterator(prompt_set, **kw)
    mngr.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert _indices([next(fresh) for _ in range(3)]) == _indices(first[5:8])


@pytest.mark.parametrize("even_shards", [True, False])
def test_pipeline_sharding_partitions(prompt_set, even_shards):
  kw = {"batch_size": 1, "seed": 5, "num_epochs": 1, "even_shards": even_shards, "drop_remainder": False}
  shards = [sum(_indices(make_iterator(prompt_set, shard_index=i, shard_count=2, **kw)), []) for i in range(2)]
  assert not set(shards[0]) & set(shards[1])
  assert len(shards[0]) == len(set(shards[0])) and len(shards[1]) == len(set(shards[1]))
  union = set(shards[0]) | set(shards[1])
  if even_shards:
    assert len(shards[0]) == len(shards[1]) == 11 and len(union) == 22
  else:
    assert union == set(range(23))


def test_pipeline_text_encoder(tmp_path, prompt_set):
  batch = next(make_iterator(prompt_set, batch_size=3, seed=0, encode_text=fake_encode_text))
  np.testing.assert_array_equal(batch["text_embedding"], fake_encode_text(batch["prompt"]))
  src = tmp_path / "pairs.tsv"
  src.write_text("".join(f"first {i}\tsecond {i}\n" for i in range(5)))
  res = build_prompt_pairs(src, data_dir=tmp_path / "ds")
  batch = next(make_iterator(res.dataset_dir, batch_size=2, seed=0, encode_text=fake_encode_text))
  np.testing.assert_array_equal(batch["text_embedding_a"], fake_encode_text(batch["prompt_a"]))
  np.testing.assert_array_equal(batch["text_embedding_b"], fake_encode_text(batch["prompt_b"]))
  assert [b.replace("second", "first") for b in batch["prompt_b"]] == batch["prompt_a"]
  with pytest.raises(ValueError, match="shard_index=2"):
    make_iterator(prompt_set, batch_size=1, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(DataError, match="not a built dataset"):
    make_iterator(tmp_path, batch_size=1, seed=0)


def test_npz_pipeline(tmp_path):
  """``.npz`` record files (kinds without a builder, e.g. ``ode_pairs``): row i of every array is record i."""
  path = tmp_path / "pairs.npz"
  traj = np.arange(9 * 2 * 3, dtype=np.float32).reshape(9, 2, 3)
  np.savez(path, trajectory=traj, prompt=np.array([f"prompt {i}" for i in range(9)]), index=np.arange(9))
  kw = {"batch_size": 2, "seed": 3, "num_epochs": 1, "shard_count": 2}
  shards = [list(npz_dataset(path, shard_index=i, **kw)) for i in range(2)]
  for batches in shards:
    assert len(batches) == 2  # 9 records -> 8 (even shards) -> 4 per shard -> 2 batches of 2
    for b in batches:
      assert b["prompt"] == [f"prompt {i}" for i in b["index"]]  # unicode rows become str
      np.testing.assert_array_equal(b["trajectory"], traj[b["index"]])
  got = [sum((b["index"].tolist() for b in batches), []) for batches in shards]
  assert sorted(got[0] + got[1]) == list(range(8)) and not set(got[0]) & set(got[1])
  again = [b["index"].tolist() for b in npz_dataset(path, shard_index=0, **kw)]
  assert sum(again, []) == got[0]  # deterministic in the seed
  np.savez(tmp_path / "bad.npz", a=np.zeros(3), b=np.zeros(4))
  with pytest.raises(DataError, match=r"bad\.npz: arrays must share their leading"):
    npz_dataset(tmp_path / "bad.npz", **kw, shard_index=0)
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz"):
    npz_dataset(tmp_path / "junk.npz", **kw, shard_index=0)
