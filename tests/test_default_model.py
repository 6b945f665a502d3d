"""The shipped toy-world model: it loads from the package, streams a few blocks with the engine users run, and
the world's pixel judge reads every prompt back from the video, including after a prompt switch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longlive_jax import checkpoint
from longlive_jax.toyworld import evaluate as ev
from longlive_jax.toyworld import judge
from longlive_jax.toyworld.model import default_checkpoint

# Every colour, shape, background and motion but `bounces` (the cell the model misses, README), all from the training
# split's grammar. Eight videos give 24 judged windows: with the four of the first version (12 windows) one window
# moved the score by 8 points, and a model at ~82% shape (README) sat exactly on the 75% bar.
PROMPTS = [
  "a red circle moves right on a blue background",
  "a yellow square moves up on a purple background",
  "a white triangle moves left on a green background",
  "a green circle stays still on a red background",
  "a blue square moves down on a yellow background",
  "a purple triangle stays still on a white background",
  "a white circle moves up on a purple background",
  "a red square moves left on a green background",
]


@pytest.fixture(scope="module")
def model():
  ck = default_checkpoint()
  return ck, ev.load_models(ck, ck)


def test_default_model_is_a_whole_model_checkpoint(model):
  ck, _ = model
  info = checkpoint.read_meta(ck)
  assert info["meta"]["toyworld"] is True
  assert info["meta"]["native_resolution"] == [64, 64]
  assert set(info["components"]) == {"vae", "umt5"}
  assert (ck / "tokenizer").exists()
  size = sum(f.stat().st_size for f in ck.rglob("*") if f.is_file())
  assert size <= 25 * 2**20, f"the shipped model takes {size / 2**20:.1f} MiB (budget: 25)"
  json.dumps(info)  # metadata stays plain JSON


def test_default_model_follows_its_prompts(model):
  ck, (dit, vae, enc) = model
  settings = ev.checkpoint_settings(ck)  # as `generate` streams it
  videos, _ = ev.causal_videos(dit, vae, enc, [[p] for p in PROMPTS], latent_frames=12, seed=11, settings=settings)
  assert videos.shape == (len(PROMPTS), 45, 64, 64, 3)
  res = ev.score(videos, [[p] for p in PROMPTS])
  for attr in ("background", "colour", "shape", "motion"):
    assert res["accuracy"][attr] >= 0.75, (attr, res["accuracy"])


def test_default_model_keeps_moving_past_the_rope_aliasing_distance(model):
  """With absolute RoPE this DiT's sink frames alias as recent ones when a block is 25-32 latents in (its frame
  axis has 6 RoPE frequencies, one of period 29 frames): objects that move along an axis stall or turn back
  there (README: motion right in 46-74% of those windows). The checkpoint's RoPE horizon keeps the sink where
  the model was trained to see it; the windows over latents 25-32 (video frames 96-127) must move as asked."""
  ck, (dit, vae, enc) = model
  settings = ev.checkpoint_settings(ck)
  assert settings.rope_horizon > 0, "the shipped model streams with a RoPE horizon (toyworld assemble --rope-horizon)"
  prompts = [p for p in PROMPTS if "moves" in p]
  videos, _ = ev.causal_videos(dit, vae, enc, [[p] for p in prompts], latent_frames=33, seed=13, settings=settings)
  right = [
    w.correct["motion"]
    for v, p in zip(videos, prompts, strict=True)
    for w in judge.judge_video(v, prompts=[p]).windows
    if 96 <= w.start < 128
  ]
  assert len(right) == 2 * len(prompts) and np.mean(right) >= 0.9, right


def test_default_model_switches_prompt(model):
  _, (dit, vae, enc) = model
  scripts = [
    ["a red circle moves right on a blue background", "a red circle moves down on a blue background"],
    ["a yellow square stays still on a purple background", "a white square stays still on a purple background"],
  ]
  videos, _ = ev.causal_videos(dit, vae, enc, scripts, latent_frames=18, switch_frames=[9], seed=12)
  res = ev.score(videos, scripts, switch_frames=[9])
  # Background and colour are solved (100% on 154 prompts, README); shape and motion are not (about 70% on 32
  # random switches at this length), so they only have to be clearly above chance here (shapes 1/3, motions 1/6).
  acc = res["accuracy"]
  assert acc["background"] >= 0.9 and acc["colour"] >= 0.9, acc
  assert acc["shape"] >= 0.5 and acc["motion"] >= 0.5, acc
  frames = videos.astype(np.float32)
  assert np.abs(frames[:, 1:] - frames[:, :-1]).mean() < 20.0  # a video, not noise


def test_generate_without_a_checkpoint_writes_the_prompt_as_an_mp4(tmp_path):
  """The README's first command, in process: no --checkpoint, so the shipped model at its native size; the mp4
  read back shows the prompt (judged from its decoded pixels)."""
  from longlive_jax.cli import main
  from longlive_jax.toyworld import judge
  from longlive_jax.video_io import read_video

  out = tmp_path / "demo.mp4"
  prompt = "a red circle moves right on a blue background"
  assert main(["generate", prompt, "--frames", "12", "--out", str(out), "--quiet"]) == 0
  video = read_video(out)
  assert video.shape == (45, 64, 64, 3)  # 12 latents -> 1 + 4 * 11 frames at the native 64x64
  acc = judge.judge_video(video, prompts=[prompt]).accuracy
  assert acc["background"] == 1.0 and acc["colour"] == 1.0, acc
