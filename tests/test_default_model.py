"""The shipped toy-world model: it loads, follows prompts (judged from pixels) and drives the CLI with no flags.

This is the newcomer's path: ``longlive-jax generate "a red circle moves right on a blue background" --out
demo.mp4`` with no checkpoint, at the model's native resolution, and ``interactive`` on a jsonl of world
prompts with a switch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest

from longlive_jax import checkpoint
from longlive_jax.toyworld import judge
from longlive_jax.toyworld.model import DEFAULT_MODEL, default_checkpoint
from longlive_jax.toyworld.render import latent_to_video_frame

MIN_ACCURACY = 0.8  # per attribute, over a handful of short videos (the README's evidence uses 154 prompts)


def _frames(path) -> np.ndarray:
  with av.open(str(path)) as f:
    return np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])


def test_default_model_is_a_whole_small_checkpoint():
  ckpt = default_checkpoint()
  info = checkpoint.read_meta(ckpt)
  assert set(info["components"]) == {"vae", "umt5"} and "tokenizer" in info["files"]
  assert info["meta"]["native_resolution"] == [64, 64] and info["meta"]["fps"] == 16
  size = sum(f.stat().st_size for f in DEFAULT_MODEL.rglob("*") if f.is_file())
  assert size < 25 * 2**20, f"{size / 2**20:.1f} MiB"


def test_default_model_follows_prompts():
  from longlive_jax.toyworld import evaluate as ev

  ckpt = str(default_checkpoint())
  dit, vae, enc = ev.load_models(ckpt, ckpt)
  scripts = [
    ["a red circle moves right on a blue background"],
    ["a yellow square moves down on a purple background"],
    ["a white triangle stays still on a green background"],
    ["a green circle bounces on a white background"],
  ]
  videos, _ = ev.causal_videos(dit, vae, enc, scripts, latent_frames=24, seed=123)
  assert videos.shape == (4, 93, 64, 64, 3)
  res = ev.score(videos, scripts)
  for attr in ("background", "colour", "shape", "motion"):
    assert res["accuracy"][attr] >= MIN_ACCURACY, res["accuracy"]


def test_cli_generate_and_interactive_with_the_default_model(tmp_path):
  demo = tmp_path / "demo.mp4"
  prompt = "a red circle moves right on a blue background"
  cmd = [sys.executable, "-m", "longlive_jax"]
  r = subprocess.run([*cmd, "generate", prompt, "--frames", "15", "--out", str(demo)], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  video = _frames(demo)
  assert video.shape == (57, 64, 64, 3)
  acc = judge.judge_video(video, prompts=[prompt]).accuracy
  assert min(acc[a] for a in ("background", "colour", "shape", "motion")) >= MIN_ACCURACY, acc

  script = tmp_path / "story.jsonl"
  prompts = [prompt, "a red circle moves up on a blue background"]
  script.write_text(json.dumps({"prompts": prompts, "switch_frame_indices": [9]}) + "\n")
  out = tmp_path / "story.mp4"
  r = subprocess.run(
    [*cmd, "interactive", str(script), "--frames", "18", "--out", str(out)], capture_output=True, text=True
  )
  assert r.returncode == 0, r.stderr
  score = judge.judge_video(_frames(out), prompts=prompts, switch_frames=[latent_to_video_frame(9)])
  assert score.accuracy["colour"] >= MIN_ACCURACY and score.accuracy["background"] >= MIN_ACCURACY, score.accuracy

  bad = subprocess.run(
    [*cmd, "generate", "a red circel moves", "--out", str(tmp_path / "x.mp4")], capture_output=True, text=True
  )
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert "unknown word 'circel'" in bad.stderr and "triangle" in bad.stderr  # names the word, lists the vocabulary


@pytest.mark.parametrize("bad", ["a red circle moves right on a red background"])
def test_prompt_outside_the_world_is_still_generated_but_flagged(bad):
  # the model takes any in-vocabulary text; the judge refuses to score a prompt outside the grammar
  with pytest.raises(ValueError, match="must differ"):
    judge.judge_video(np.zeros((16, 64, 64, 3), np.uint8), prompts=[bad])
