"""Hardening of the command line (issue 13): live sessions survive bad typed lines, outputs are never silently
replaced nor left broken (temporary names, --overwrite, SIGTERM / Ctrl-C keep what was generated), latents stream
to disk, non-finite latents stop with a clear error, every bad argument exits 2 naming the culprit (no traceback)
before any work, and the hints say what to do on the command line."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longlive_jax import checkpoint, cli, layout, pipeline
from longlive_jax.config import tiny_config
from longlive_jax.stream import driver
from longlive_jax.stream import run as srun
from longlive_jax.stream.driver import Switch
from longlive_jax.stream.noise import BlockShape, KeyNoise
from longlive_jax.video_io import VideoWriter, read_video

H, W = 4, 6
SIZE = ["--height", str(H), "--width", str(W), "--window", "9", "--quiet"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_stream_setup):
  root = tmp_path_factory.mktemp("hardening")
  ckpt, embs, st = tiny_stream_setup(root, num_prompts=2, height=H, width=W)
  text_dim = embs[0].shape[-1]
  np.save(root / "wide.npy", np.zeros((5, text_dim + 3), np.float32))
  np.save(root / "vec.npy", np.zeros((text_dim,), np.float32))
  (root / "afile").write_text("not a folder")
  return root, ckpt, embs, st


@pytest.fixture(scope="module")
def video_ckpt(setup):
  """The tiny DiT with a tiny VAE of small random weights: enough to write mp4 / PNG output (``init_vae`` would
  cost most of a minute of CPU; the abstract model's shapes are enough)."""
  from flax import nnx

  from longlive_jax.convert.wan_vae import _abstract_split
  from longlive_jax.vae.config import tiny_vae_config

  root, ckpt, _, _ = setup
  vcfg = tiny_vae_config()
  rng = np.random.default_rng(0)
  shapes = nnx.to_pure_dict(_abstract_split(vcfg)[1])
  vae = jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  cfg, params, _, _ = checkpoint.load(ckpt)
  return checkpoint.save(root / "video_ckpt", cfg=cfg, params=params, components={"vae": (vae, vcfg.to_dict())})


@pytest.fixture
def shared_streamer(setup, monkeypatch):
  """The CLI runs with the module's compiled streamer (same model and stream shape) instead of loading and
  compiling its own: the command line logic under test is the same, the test minutes fewer."""
  st = setup[3]

  def load(ckpt, opts):
    assert opts.spec() == st.spec and opts.context_noise == 0.0
    return st

  monkeypatch.setattr(srun, "load_streamer", load)


def _read(path):
  with np.load(path) as z:
    return layout.from_longlive(z["latents"]), json.loads(str(z["meta"]))


def _expected(st, embs, switches, *, frames, seed=0):
  shape = BlockShape(batch=1, frames=3, height=H, width=W, channels=st.cfg.in_dim)
  draws = KeyNoise(jax.random.key(seed), shape=shape, num_steps=4)
  blocks = [np.asarray(x) for _, x, _ in st.stream(draws, contexts=embs, switches=switches, num_blocks=frames // 3)]
  return np.concatenate(blocks, axis=1)


def partial_path(path):  # where video_io writes a file before renaming it into place
  return path.with_name(f".{path.stem}.partial{path.suffix}")


def _partials(folder):
  return sorted(p.name for p in folder.rglob("*") if "partial" in p.name)


def _no_model_load(monkeypatch):
  def refuse(*a, **k):
    raise AssertionError("the model was loaded before the arguments were checked")

  monkeypatch.setattr(srun, "load_streamer", refuse)


# ------------------------------------------------------------------------------------------ 1. live sessions


def test_live_bad_typed_lines_are_reported_and_ignored(setup, shared_streamer, monkeypatch, capsys):
  root, ckpt, embs, st = setup
  typed = [root / "missing.npy", root / "wide.npy", "a red fox", root / "p1.npy"]
  monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{t}\n" for t in typed)))
  out = root / "live_bad.npz"
  args = ["interactive", str(root / "p0.npy"), "--live", "--checkpoint", str(ckpt), "--frames", "12", *SIZE]
  assert cli.main([*args, "--out", str(out)]) == 0
  err = capsys.readouterr().err
  whys = ["no such embedding file", "width 35 != text_dim 32", "text prompts need the umT5"]
  for line, why in zip(typed[:3], whys, strict=True):
    assert f"live prompt {str(line)!r} ignored" in err and why in err, err
  got, meta = _read(out)
  assert meta["status"] == "complete" and meta["frames"] == 12
  assert meta["prompts"][0].endswith("p0.npy") and meta["prompts"][-1].endswith("p1.npy")
  switches = [Switch(f, i + 1) for i, f in enumerate(meta["switch_frames"])]
  np.testing.assert_allclose(got, _expected(st, embs, switches, frames=12), atol=1e-5)


def test_piped_first_prompt_makes_block_0(setup):
  root, _, embs, st = setup
  opts = srun.StreamOptions(frames=9, height=H, width=W, window_frames=9)
  live = srun.LivePrompts(iter(["p1\n"]))
  live._thread.join()  # the typed line is there before block 0
  out = root / "piped.npz"
  srun.run_stream(
    st, embs[:1], [], opts=opts, out_path=out, prompts=["p0"], live=live, resolve=lambda p: embs[1], progress=False
  )
  got, meta = _read(out)
  assert meta["prompts"] == ["p0", "p1"] and meta["switch_frames"] == [3]
  np.testing.assert_allclose(got, _expected(st, embs, [Switch(3, 1)], frames=9), atol=1e-5)


# ------------------------------------------------------------------------------------------------ 2. outputs


def test_existing_outputs_are_refused_without_overwrite(setup, shared_streamer, capsys):
  root, ckpt, _, _ = setup
  out = root / "exists.npz"
  out.write_bytes(b"precious")
  script = root / "one.jsonl"
  script.write_text(json.dumps({"prompts": ["p0.npy"]}) + "\n")
  (root / "pngs").mkdir()
  (root / "pngs" / "frame_000000.png").write_bytes(b"precious")
  common = ["--checkpoint", str(ckpt), "--frames", "3", *SIZE]
  runs = [
    (["generate", str(root / "p0.npy"), *common, "--out", str(out)], "--out"),
    (["interactive", str(script), *common, "--out", str(out)], "--out"),
    (["generate", str(root / "p0.npy"), *common, "--out", str(root / "new.npz"), "--png-dir", str(root / "pngs")],
     "--png-dir"),
  ]  # fmt: skip
  for argv, culprit in runs:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert culprit in err and "already" in err and "--overwrite" in err, err
  assert out.read_bytes() == b"precious" and (root / "pngs" / "frame_000000.png").read_bytes() == b"precious"
  assert not (root / "new.npz").exists()
  assert cli.main([*runs[0][0], "--overwrite"]) == 0
  assert _read(out)[1]["frames"] == 3


def test_bad_out_paths_fail_before_any_work(setup, monkeypatch, capsys):
  root, ckpt, _, _ = setup
  _no_model_load(monkeypatch)
  (root / "adir.npz").mkdir()
  base = ["generate", str(root / "p0.npy"), "--checkpoint", str(ckpt), "--frames", "3", *SIZE]
  cases = [
    (root / "adir.npz", ["is a folder"]),
    (root / "x.txt", ["'.txt'", ".mp4 or .npz"]),
    (root / "noext", ["no extension", ".mp4 or .npz"]),
    (root / "afile" / "x.npz", ["is a file, not a folder"]),
  ]
  for out, words in cases:
    assert cli.main([*base, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and all(w in err for w in words) and "Traceback" not in err, err
    assert not out.is_file()
  assert _partials(root) == []


def test_video_writer_renames_into_place_when_done(tmp_path):
  final = tmp_path / "v.mp4"
  frames = np.zeros((16, 8, 8, 3), np.uint8)  # enough for the encoder to emit packets (the file to be created)
  w = VideoWriter(final, fps=12.5)
  w.write(frames)
  assert partial_path(final).is_file() and not final.exists()  # never a half-written file under the final name
  w.close()
  assert final.is_file() and not partial_path(final).exists() and len(read_video(final)) == 16
  VideoWriter(tmp_path / "empty.mp4").close()  # no frame: no file
  w = VideoWriter(tmp_path / "gone.mp4")
  w.write(frames)
  w.discard()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
  import av

  with av.open(str(final)) as f:
    assert f.streams.video[0].average_rate == 12.5  # not rounded to 12
  for fps in (0, -5, float("nan")):
    with pytest.raises(ValueError, match="frame rate"):
      VideoWriter(tmp_path / "bad.mp4", fps=fps)


def test_sigterm_during_mp4_keeps_a_playable_video(setup, video_ckpt, shared_streamer, monkeypatch, capsys):
  root = setup[0]
  out, lat = root / "term.mp4", root / "term_latents.npz"
  seen = []
  original = pipeline.VideoSink.__call__

  def call(self, x0):
    original(self, x0)
    seen.append(out.exists())
    if len(seen) == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  def unhandled(signum, frame):
    raise RuntimeError("SIGTERM reached the test: the command did not handle it")

  monkeypatch.setattr(pipeline.VideoSink, "__call__", call)
  old = signal.signal(signal.SIGTERM, unhandled)
  try:
    args = ["generate", str(root / "p0.npy"), "--checkpoint", str(video_ckpt), "--frames", "9", *SIZE]
    rc = cli.main([*args, "--out", str(out), "--latents", str(lat)])
  finally:
    signal.signal(signal.SIGTERM, old)
  assert rc == 128 + signal.SIGTERM
  assert "SIGTERM" in capsys.readouterr().err
  assert seen == [False]  # stopped after the current block; the final name appeared only when finished
  assert len(read_video(out)) == 9  # block 0: 1 + 4 + 4 video frames, a complete, playable file
  assert _read(lat)[1]["status"] == "interrupted" and _read(lat)[1]["frames"] == 3
  assert _partials(root) == []


def test_offline_interrupt_stops_promptly_and_keeps_finished_blocks(setup, shared_streamer, monkeypatch):
  root, ckpt, embs, st = setup
  calls = []
  original = driver.Streamer.generate_keyed

  def keyed(self, *a, **k):
    out = original(self, *a, **k)
    calls.append(k["num_blocks"])
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the first chunk runs
    return out

  monkeypatch.setattr(driver.Streamer, "generate_keyed", keyed)
  out = root / "offline_int.npz"
  args = ["generate", str(root / "p0.npy"), "--checkpoint", str(ckpt), "--frames", "30", "--offline", *SIZE]
  assert cli.main([*args, "--out", str(out)]) == 128 + signal.SIGINT
  assert calls == [5]  # 10 blocks in chunks of 5: stopped after the first
  got, meta = _read(out)
  assert meta["status"] == "interrupted" and meta["frames"] == 15
  np.testing.assert_allclose(got, _expected(st, embs[:1], [], frames=15), atol=1e-5)


def test_npz_latents_go_to_disk_block_by_block(setup):
  root, _, embs, st = setup
  out = root / "flat.npz"
  on_disk = []

  def on_block(x0):  # before block k is appended, blocks 0 .. k-1 are on disk already
    on_disk.append(sum(p.stat().st_size for p in root.glob(f".{out.name}.*.partial")))

  opts = srun.StreamOptions(frames=12, height=H, width=W, window_frames=9)
  srun.run_stream(st, embs[:1], [], opts=opts, out_path=out, prompts=["p0"], on_block=on_block, progress=False)
  block_bytes = 3 * H * W * st.cfg.in_dim * 4
  assert on_disk == [0, block_bytes, 2 * block_bytes, 3 * block_bytes]
  np.testing.assert_allclose(_read(out)[0], _expected(st, embs[:1], [], frames=12), atol=1e-5)
  assert _partials(root) == []


# ------------------------------------------------------------------------------------- 3. non-finite latents


def test_non_finite_latents_stop_naming_the_block_and_keep_what_came_before(
  setup, shared_streamer, monkeypatch, capsys
):
  root, ckpt, embs, st = setup
  original_next, original_keyed = driver.StreamSession.next_block, driver.Streamer.generate_keyed

  def next_block(self):
    blk, x0, info = original_next(self)
    return blk, (x0 * jnp.nan if blk == 2 else x0), info

  def keyed(self, *a, **k):
    out, cache = original_keyed(self, *a, **k)
    return out.at[2].set(jnp.inf), cache

  monkeypatch.setattr(driver.StreamSession, "next_block", next_block)
  monkeypatch.setattr(driver.Streamer, "generate_keyed", keyed)
  base = ["generate", str(root / "p0.npy"), "--checkpoint", str(ckpt), "--frames", "15", *SIZE]
  want = _expected(st, embs[:1], [], frames=6)
  for extra, out in ([], root / "nan.npz"), (["--offline"], root / "nan_offline.npz"):
    assert cli.main([*base, *extra, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "block 2 (latent frames 6-8)" in err and "NaN or infinite" in err and "Traceback" not in err, err
    got, meta = _read(out)
    assert meta["status"] == "failed" and meta["frames"] == 6
    np.testing.assert_allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------------------------------------- 4. validation


def _walk_cases(root, ckpt, golden_src):
  p0 = str(root / "p0.npy")
  gen = ["generate", p0, "--checkpoint", str(ckpt), "--frames", "12", *SIZE, "--out", str(root / "w.npz")]
  (root / "two.jsonl").write_text(json.dumps({"prompts": ["p0.npy"]}) + "\n" + json.dumps({"prompts": ["p1.npy"]}))
  scripts = {
    "str_index": {"prompts": ["p0.npy", "p1.npy"], "switch_frame_indices": ["ten"]},
    "str_in_list": {"prompts": ["p0.npy", "p1.npy"], "switch_frame_indices": ["6"]},
    "own": {"prompts": ["p0.npy", "p1.npy"], "switch_frame_indices": [6]},
    "plain": {"prompts": ["p0.npy", "p1.npy"]},
  }
  for name, rec in scripts.items():
    (root / f"{name}.jsonl").write_text(json.dumps(rec) + "\n")

  def inter(script, *extra, out="w.npz"):
    return ["interactive", str(root / script), "--checkpoint", str(ckpt), "--frames", "12", *SIZE,
            "--out", str(root / out), *extra]  # fmt: skip

  bad_json = root / "bad_config.json"
  bad_json.write_text(json.dumps({**tiny_config().to_dict(), "dim": "thirty-two"}))
  train_yaml = root / "train.yaml"
  train_yaml.write_text(f"stage: teacher\nrun_dir: {root / 'run'}\nsteps: 1\nmodel:\n  preset: tiny\n")
  train = ["train", str(train_yaml)]
  conv = ["convert", str(golden_src), "--quiet", "--out"]
  return [
    (gen + ["--block-frames", "0"], "--block-frames 0"),
    (gen + ["--seed", str(2**40)], f"--seed {2**40}"),
    (gen + ["--seed", "-1"], "--seed -1"),
    (gen + ["--fps", "-5"], "--fps -5"),
    (gen + ["--fps", "0"], "--fps 0"),
    (gen + ["--png-dir", str(root / "afile")], f"--png-dir {root / 'afile'}: is a file"),
    (gen + ["--context-noise", "-50"], "--context-noise -50: must be a timestep in [0, 1000]"),
    (gen + ["--context-noise", "5000"], "--context-noise 5000"),
    (gen + ["--out", str(root / "x.txt")], "accepted: .mp4 or .npz"),
    (gen + ["--latents", str(root / "l.npz")], "--latents"),
    (gen + ["--latents", str(root / "l.txt"), "--out", str(root / "v.mp4")], "--latents"),
    (gen + ["--window", "5"], "--window 5"),
    (gen + ["--sink", "-1"], "--sink -1"),
    (gen + ["--height", "3"], "--height 3"),
    (gen + ["--offline", "--png-dir", str(root / "pngs2")], "--offline"),
    (inter("str_index.jsonl"), "str_index.jsonl:1: switch_frame_indices: 'ten'"),
    (inter("str_in_list.jsonl"), "str_in_list.jsonl:1: switch_frame_indices: '6' (str)"),
    (inter("own.jsonl", "--switch-frames", "3"), "--switch-frames 3 conflicts with the line's own"),
    (inter("plain.jsonl", "--switch-frames", "10"), "switch frame 10: switches happen at block boundaries"),
    (inter("plain.jsonl", "--switch-frames", "10", "--frames", "15"), "the nearest valid frames are 9 and 12"),
    (inter("plain.jsonl", "--switch-frames", "6", "--line", "0"), "--line 0"),
    (inter("two.jsonl"), "has 2 lines"),
    (inter("plain.jsonl", "--live", "--switch-frames", "6"), "--switch-frames"),
    (train + [f"run_dir={root / 'afile'}"], f"run_dir {root / 'afile'}: is a file"),
    (train + [f"run_dir={root / 'afile' / 'run'}"], f"run_dir {root / 'afile' / 'run'}: lies under"),
    (train + ["model.overrides.dim=thirty-two"], "model.overrides.dim: expected int, got 'thirty-two'"),
    (train + [f"model.config={bad_json}"], "dim: expected int, got 'thirty-two'"),
    (train + ["steps=-1"], "steps must be >= 0"),
    (["inspect", str(root / "afile")], "afile"),
    (["inspect", str(root / "nowhere")], "nowhere: no such checkpoint folder"),
    (conv + [str(root / "c1"), "--num-heads", "0"], "--num-heads 0"),
    (conv + [str(root / "c2"), "--lora-alpha", "-1"], "--lora-alpha -1"),
    (conv + [str(root / "c3"), "--config", str(bad_json)], "dim: expected int, got 'thirty-two'"),
    (conv + [str(root / "afile"), "--overwrite"], f"--out {root / 'afile'}: is a file"),
    (conv + [str(root / "afile" / "c4")], f"{root / 'afile'} is a file, not a folder"),
    (conv + [str(root / "c5"), "--ema"], "--ema"),
  ]


def test_every_command_rejects_bad_values_naming_the_culprit(setup, golden_root, monkeypatch, capsys):
  root, ckpt, _, _ = setup
  _no_model_load(monkeypatch)
  cases = _walk_cases(root, ckpt, golden_root / "wan_dit_t2v" / "weights.safetensors")
  failures = []
  for argv, culprit in cases:
    try:
      rc = cli.main(argv)
    except BaseException as e:  # noqa: BLE001 (a traceback in a real run)
      rc = f"{type(e).__name__}: {e}"
    err = capsys.readouterr().err
    if rc != 2 or culprit not in err or "Traceback" in err:
      failures.append(f"{argv[0]} {argv[-2:]}: rc {rc}, want {culprit!r} in {err.strip()!r}")
  assert not failures, "\n".join(failures)
  assert not (root / "run").exists() and _partials(root) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_read_only_run_dir(setup, capsys, tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir(mode=0o500)
  yaml_path = tmp_path / "t.yaml"
  yaml_path.write_text(f"stage: teacher\nrun_dir: {ro / 'run'}\nsteps: 1\n")
  assert cli.main(["train", str(yaml_path)]) == 2
  assert "permission denied" in capsys.readouterr().err


def test_a_real_process_prints_no_traceback(setup):
  root, ckpt, _, _ = setup
  argv = ["generate", str(root / "p0.npy"), "--checkpoint", str(ckpt), "--block-frames", "0", "--out", "x.npz"]
  code = "import sys; from longlive_jax.cli import main; sys.exit(main(sys.argv[1:]))"
  r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "--block-frames 0" in r.stderr and "Traceback" not in r.stderr, r.stderr


# -------------------------------------------------------------------------------------------------- 5. hints


def test_hints_name_the_command_line(setup, capsys):
  root, ckpt, _, _ = setup
  base = ["generate", "--checkpoint", str(ckpt), *SIZE, "--out", str(root / "h.npz")]
  assert cli.main([base[0], str(root / "p0.npy"), *base[1:], "--frames", "1026"]) == 2
  err = capsys.readouterr().err
  assert "--relative-rope" in err and "StreamSpec" not in err, err
  assert cli.main([base[0], str(root / "vec.npy"), *base[1:], "--frames", "3"]) == 2
  err = capsys.readouterr().err
  assert "1-D array of shape (32,)" in err and "width 32 != text_dim 32" not in err, err


def test_inspect_prints_the_parameter_count(setup, capsys):
  _, ckpt, _, st = setup
  assert cli.main(["inspect", str(ckpt)]) == 0
  n = sum(x.size for x in jax.tree.leaves(st.params))
  assert f"parameters: dit {n:,}" in capsys.readouterr().out


def test_stream_progress_bar_never_shows_nan(setup, capsys):
  root, _, embs, st = setup
  opts = srun.StreamOptions(frames=3, height=H, width=W, window_frames=9)
  srun.run_stream(st, embs[:1], [], opts=opts, out_path=None, prompts=["p0"], progress=True)
  err = capsys.readouterr().err
  assert "first block" in err and "nan" not in err, err


def test_train_bar_shows_one_rate(tmp_path, capsys):
  from longlive_jax.train import loop
  from longlive_jax.train.config import CheckpointConfig, ExportConfig, LogConfig, TrainConfig

  class Slow:  # a stage whose steps take 0.6 s (its batches are slow to make)
    data = None

    def init(self, key, *, mesh):
      return {"w": jnp.zeros(())}

    def make_batch(self, records, *, encode_text):
      time.sleep(0.6)
      return {}

    def step(self, state, batch):
      return {"w": state["w"] + 1}, {"loss": state["w"]}

  cfg = TrainConfig(
    stage="teacher",
    run_dir=str(tmp_path / "run"),
    steps=3,
    log=LogConfig(format="none", progress=True),
    checkpoint=CheckpointConfig(interval=100, async_save=False),
    export=ExportConfig(enabled=False),
  )
  loop.train(cfg, stage=Slow())
  err = capsys.readouterr().err
  assert "step/s" in err and "steps/s=" not in err and "s/step" not in err, err
