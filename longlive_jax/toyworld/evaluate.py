"""Evaluating generators on the toy world: batched videos from any stage's DiT, scored by the pixel judge.

* :func:`causal_videos`: the streaming engine (KV cache, sink + window, 4 steps + clean commit per block,
  prompt switches with recache / keep / clear) on a batch of prompt scripts, each block decoded at once
  with the streaming VAE; returns uint8 videos. Block ``b`` draws its noise from ``fold_in(key(seed), b)``.
* :func:`teacher_videos`: the bidirectional teacher's guided many-step ODE sampling
  (:func:`longlive_jax.train.ode_pairs.sample`), decoded in one pass.
* :func:`vae_psnr`: the VAE's streaming reconstruction PSNR against the position in the stream.
* :func:`score`: the judge over a batch: accuracy per attribute (windows of 16 frames, as
  :func:`~longlive_jax.toyworld.judge.judge_video`), per time bin, and switch smoothness.

A "model" is a DiT checkpoint folder (any stage's export, or a whole-model checkpoint) plus the VAE of a
checkpoint that has one; text goes through the world's frozen encoder (the same weights the shipped model
stores). Everything is batched: one compiled block step serves the whole batch and every block.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax.toyworld import judge
from longlive_jax.toyworld.render import FPS, LATENT_SIZE, latent_to_video_frame


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamSettings:
  """How a causal model is run: LongLive's inference settings scaled to the toy recipe, whose teacher and DMD
  windows are 9 latents (configs/toyworld: sink 3, local_attn_size 9; LongLive: 3 and 12 of 21)."""

  block_frames: int = 3
  sink_frames: int = 3
  window_frames: int = 9
  switch_mode: str = "recache"
  global_sink: bool = True
  step_list: tuple[int, ...] = (1000, 750, 500, 250)  # the few-step schedule (LongLive's; a student's own)
  relative_rope: bool = False  # RoPE positions relative to the attention window (StreamSpec.relative_rope)
  rope_horizon: int = 0  # with relative_rope: absolute positions frozen past this frame (StreamSpec.rope_horizon)


def checkpoint_settings(checkpoint_dir: str | Path) -> StreamSettings:
  """How ``generate`` streams a whole-model checkpoint by default: its metadata's block, sink, window and RoPE
  horizon (:func:`longlive_jax.checkpoint.trained_stream`), LongLive's four steps."""
  from longlive_jax import checkpoint

  s = checkpoint.trained_stream(checkpoint.read_meta(checkpoint_dir))
  return StreamSettings(
    block_frames=s["block_frames"],
    sink_frames=s["sink_frames"],
    window_frames=s["window_frames"],
    relative_rope=s["rope_horizon"] > 0,
    rope_horizon=s["rope_horizon"],
  )


def _to_uint8(pixels) -> np.ndarray:
  return np.round((np.clip(np.asarray(pixels, np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def load_models(dit_checkpoint: str | Path, vae_checkpoint: str | Path):
  """``(dit, vae, encode_text)`` for a DiT export and a checkpoint holding a VAE (float32 compute)."""
  from longlive_jax import checkpoint, pipeline
  from longlive_jax.model.params import model_from_params
  from longlive_jax.toyworld.text import TextEncoder

  cfg, params, _, _ = checkpoint.load(dit_checkpoint, dtype="float32")
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
  dit = model_from_params(cfg.replace(param_dtype="float32"), params)
  return dit, pipeline.load_vae(vae_checkpoint, dtype="float32"), TextEncoder()


_STREAMERS: dict = {}  # (id(dit), spec, global_sink, switch_mode) -> (dit, Streamer): compiled steps reused


def streamer(dit, settings: StreamSettings, *, latent_size: int = LATENT_SIZE):
  """The :class:`~longlive_jax.stream.driver.Streamer` of ``dit`` with ``settings`` on square latents of
  ``latent_size``: one per model and settings in this process, since its jitted block steps are per instance
  and a new one per call would compile again (a minute per call on a CPU)."""
  from longlive_jax.stream.cache import StreamSpec
  from longlive_jax.stream.driver import Streamer

  _, ph, pw = dit.cfg.patch_size
  spec = StreamSpec(
    block_frames=settings.block_frames,
    sink_frames=settings.sink_frames,
    window_frames=settings.window_frames,
    tokens_per_frame=(latent_size // ph) * (latent_size // pw),
    relative_rope=settings.relative_rope,
    rope_horizon=settings.rope_horizon,
  )
  key = (id(dit), spec, settings.global_sink, settings.switch_mode, tuple(settings.step_list))
  hit = _STREAMERS.get(key)
  if hit is None or hit[0] is not dit:  # the model object is kept alive with it, so its id stays unique
    st = Streamer(
      dit, spec, step_list=settings.step_list, global_sink=settings.global_sink, switch_mode=settings.switch_mode
    )
    hit = _STREAMERS[key] = (dit, st)
  return hit[1]


def causal_videos(
  dit,
  vae,
  encode_text,
  scripts: Sequence[Sequence[str]],
  *,
  latent_frames: int,
  switch_frames: Sequence[int] = (),
  seed: int = 0,
  settings: StreamSettings = StreamSettings(),
  latent_size: int = LATENT_SIZE,
  progress: bool = False,
) -> tuple[np.ndarray, dict]:
  """uint8 ``[N, T, H, W, 3]`` videos of the scripts (each ``len(switch_frames) + 1`` prompts, switches at the
  given latent frames), and timing ``{"blocks", "seconds"}``."""
  from tqdm.auto import tqdm

  from longlive_jax.stream.driver import Switch
  from longlive_jax.stream.noise import BlockShape, KeyNoise
  from longlive_jax.vae.stream import decode_step, init_decode_cache

  n = len(scripts)
  k = len(switch_frames) + 1
  if any(len(s) != k for s in scripts):
    raise ValueError(f"every script needs {k} prompts for {len(switch_frames)} switches")
  st = streamer(dit, settings, latent_size=latent_size)
  spec = st.spec
  contexts = [jnp.asarray(encode_text([s[i] for s in scripts])) for i in range(k)]  # each [N, L, D]
  shape = BlockShape(batch=n, frames=spec.block_frames, height=latent_size, width=latent_size, channels=dit.cfg.in_dim)
  draws = KeyNoise(jax.random.key(seed), shape=shape, num_steps=len(settings.step_list))
  nb = latent_frames // spec.block_frames
  cache = init_decode_cache(vae, batch=n, height=latent_size, width=latent_size)
  out = []
  t0 = time.perf_counter()
  blocks = st.stream(
    draws, contexts=contexts, switches=[Switch(f, i + 1) for i, f in enumerate(switch_frames)], num_blocks=nb
  )
  for _, x0, _ in tqdm(blocks, total=nb, desc="blocks", disable=not progress):
    pixels, cache = decode_step(vae, cache, x0)
    out.append(pixels)  # kept on device: no host sync per block
  videos = _to_uint8(jnp.concatenate(out, axis=1))
  return videos, {"blocks": nb, "seconds": time.perf_counter() - t0}


def teacher_videos(
  dit,
  vae,
  encode_text,
  prompts: Sequence[str],
  *,
  latent_frames: int,
  seed: int = 0,
  num_steps: int = 48,
  guidance: float = 3.0,
  latent_size: int = LATENT_SIZE,
  batch: int = 25,
) -> tuple[np.ndarray, dict]:
  """uint8 videos of the bidirectional teacher's guided ODE samples (one prompt each, no switches)."""
  from longlive_jax.train.ode_pairs import sample
  from longlive_jax.vae.stream import decode

  key = jax.random.key(seed)
  uncond = np.asarray(encode_text([""]), np.float32)
  out = []
  t0 = time.perf_counter()
  for s in range(0, len(prompts), batch):
    chunk = list(prompts[s : s + batch])
    cond = jnp.asarray(encode_text(chunk))
    shape = (len(chunk), latent_frames, latent_size, latent_size, dit.cfg.in_dim)
    noise = jax.random.normal(jax.random.fold_in(key, s), shape)
    x0, _ = sample(
      dit, noise, cond, jnp.broadcast_to(jnp.asarray(uncond), cond.shape), jnp.float32(guidance), num_steps=num_steps
    )
    out.append(_to_uint8(decode(vae, x0)))
  return np.concatenate(out), {"seconds": time.perf_counter() - t0}


def reconstruct(vae, videos: np.ndarray, *, batch: int = 8) -> np.ndarray:
  """uint8 ``videos [N, T, H, W, 3]`` encoded and decoded by ``vae`` (streaming caches over the whole clip)."""
  from longlive_jax.vae.stream import decode, encode

  recon = []
  for s in range(0, len(videos), batch):
    x = jnp.asarray(videos[s : s + batch], jnp.float32) / 127.5 - 1.0
    recon.append(_to_uint8(decode(vae, encode(vae, x))))
  return np.concatenate(recon)


def vae_psnr(vae, videos: np.ndarray, *, bin_latents: int = 4, batch: int = 8) -> dict:
  """Reconstruction PSNR (dB, peak-to-peak 255) of uint8 ``videos [N, T, H, W, 3]`` through the streaming encode
  and decode (causal caches carried over the whole clip, inference's path), overall and per bin of
  ``bin_latents`` latents (latent 0 is frame 0, latent ``i`` frames ``4i-3 .. 4i``): a stream that degrades
  with its length shows as falling bins."""
  err = np.square(
    reconstruct(vae, videos, batch=batch).astype(np.float64) - videos.astype(np.float64)
  )  # [N, T, H, W, 3]
  per_frame = err.mean(axis=(0, 2, 3, 4))  # [T]

  def psnr(mse: float) -> float:
    return float(10.0 * np.log10(255.0**2 / max(mse, 1e-10)))

  n_lat = 1 + (len(per_frame) - 1) // 4
  bins = []
  for b in range(0, n_lat, bin_latents):
    s, e = (0 if b == 0 else 4 * b - 3), 4 * min(b + bin_latents, n_lat) - 3
    bins.append({"latents": [b, min(b + bin_latents, n_lat)], "psnr": psnr(per_frame[s:e].mean())})
  return {"psnr": psnr(per_frame.mean()), "bins": bins, "videos": len(videos), "frames": len(per_frame)}


def _nanmedian(values) -> float:
  """Median over the finite values; NaN when there are none (without numpy's all-NaN warning)."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(np.median(v)) if v.size else float("nan")


NO_OBJECT = "no object"


def confusion(windows, attrs: Sequence[str] = ("colour", "shape", "motion")) -> dict[str, dict[str, dict[str, int]]]:
  """``{attr: {expected: {observed: count}}}`` over judged windows (:class:`judge.WindowRecord`); a window
  without an object counts as observed :data:`NO_OBJECT` (it is wrong for every object attribute)."""
  out: dict[str, dict[str, dict[str, int]]] = {a: {} for a in attrs}
  for w in windows:
    for a in attrs:
      got = w.observed.attributes()[a] if w.observed.present else NO_OBJECT
      row = out[a].setdefault(getattr(w.expected, a), {})
      row[got] = row.get(got, 0) + 1
  return out


def score(
  videos: np.ndarray, scripts: Sequence[Sequence[str]], *, switch_frames: Sequence[int] = (), bin_s: float = 10.0
) -> dict:
  """Judge every video; mean accuracies per attribute, per time bin, and per switch, and the confusion of the
  object's attributes: ``confusion[attr][expected][observed]`` counts judged windows (observed ``"no object"``
  where the judge found none), so a reader sees which mistakes make up the accuracy."""
  vf = [latent_to_video_frame(f) for f in switch_frames]
  scores = [judge.judge_video(v, prompts=list(s), switch_frames=vf) for v, s in zip(videos, scripts, strict=True)]
  attrs = ("background", "colour", "shape", "motion", "all")

  def mean(dicts):  # NaN (no judged window) is skipped; all NaN stays NaN, without numpy's empty-slice warning
    out = {}
    for a in attrs:
      x = np.asarray([d[a] for d in dicts], np.float64)
      out[a] = float(x[~np.isnan(x)].mean()) if (~np.isnan(x)).any() else float("nan")
    return out

  seconds = videos.shape[1] / FPS
  bins = []
  t = 0.0
  while t < seconds - 1e-6:
    hi = min(t + bin_s, seconds)
    b = mean([s.accuracy_between(t, hi) for s in scores])
    if not all(np.isnan(v) for v in b.values()):  # a tail shorter than a judge window holds none: no bin, no NaN
      bins.append({"start_s": t, "end_s": hi, **b})
    t = hi
  out = {
    "videos": len(scores),
    "seconds": seconds,
    "accuracy": mean([s.accuracy for s in scores]),
    "over_time": bins,
    "quality_first": float(np.mean([s.drift.quality_first for s in scores])),
    "quality_last": float(np.mean([s.drift.quality_last for s in scores])),
  }
  out["confusion"] = confusion([w for s in scores for w in s.windows])
  if switch_frames:
    out["switches"] = [
      {
        "frame": f,
        "continuous": float(np.mean([s.switches[i].continuous for s in scores])),
        # nanmedian: a video with no object tracked at the switch has no jump / spike (NaN), not a NaN median
        "jump_px": _nanmedian([s.switches[i].jump for s in scores]),
        "relative_spike": _nanmedian([s.switches[i].relative_spike for s in scores]),
      }
      for i, f in enumerate(switch_frames)
    ]
  return out
