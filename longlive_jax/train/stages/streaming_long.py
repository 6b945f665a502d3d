"""Stage 2: streaming long tuning with prompt switches (LongLive ``longlive_train_long.yaml``, ``dmd_switch``).

A sequence of up to ``streaming_max_length`` (240) latent frames is generated chunk by chunk ACROSS
optimizer steps; the train state carries the stream (KV cache, the last chunk of frames, the prompt pair):

  * the first chunk generates ``streaming_chunk_size`` (21) new frames; later chunks
    ``streaming_min_new_frame`` (18) new frames after an overlap of 3 (upstream's random choice of the new
    length is always 18), all through :func:`longlive_jax.train.rollout.rollout` from the carried cache
    (one random exit step per chunk; the cache carries no gradient across chunks or steps). Both chunk
    kinds are ONE compiled rollout: later chunks skip the overlap blocks (``active`` mask);
  * teacher and critic score a ``streaming_chunk_size`` window: the whole first chunk, else the 3 overlap
    frames (detached) + the 18 new ones; with a VAE (option ``vae``: ``Wan2.1_VAE.pth`` / ``.safetensors`` or a
    whole-model checkpoint folder; or a ``first_frame_latent`` callable) later windows are upstream's
    ``[re-encoded image latent, last 20 frames]``: the frames before the last 20 are decoded, the last pixel
    frame re-encoded as one latent (``_process_first_frame_encoding``; :func:`vae_first_frame`). Without one
    (the default) the window is the plain last 21 frames;
  * the DMD and critic losses are masked to the new frames (``gradient_mask``; all 21 in the first chunk);
  * each sequence draws its prompt pair (the batch of the step that starts it; other steps' batches are
    unused) and one switch frame from ``switch_choices`` (default ``[21, 39, ..., 201]``): at the chunk
    starting there the cache is recached for the second prompt, which then conditions the generator,
    teacher and critic. ``recache_mode: training`` (default) is upstream's training recache
    (:func:`longlive_jax.train.recache.training_recache`: last 21 frames, ``global_sink`` effectively
    False, a zeroed write-protected sink for switches after the first chunk); ``inference`` uses the
    inference recache (:func:`longlive_jax.stream.engine.recache` with ``global_sink``); ``none`` switches
    the prompt but keeps the cache as it is (an ablation: LongLive without its training-time recache);
  * a new sequence starts when the next chunk would pass the max length (21 + 12 x 18 = 237 frames).

Schedule as upstream's ``fwdbwd_one_step_streaming``: a generator step (every ``dfake_gen_update_ratio``-th)
consumes one chunk with gradient, then the critic the next chunk without; other steps one critic chunk
(:meth:`~longlive_jax.train.stages.dmd.DMDCore.train_step`).
LongLive trains LoRA (``adapter: {rank: 256, alpha: 256}``, the default here) on the generator and the critic.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from longlive_jax.stream import engine
from longlive_jax.stream.cache import KVCache
from longlive_jax.train.lora_train import LoraOptions
from longlive_jax.train.recache import training_recache
from longlive_jax.train.stages.dmd import (
  DMDCore,
  DMDOptions,
  DMDState,
  RunSetup,
  run_setup,
  stage_options,
)
from longlive_jax.vae import stream as vae_stream

Array = jax.Array
sg = jax.lax.stop_gradient
RECACHE_MODES = ("training", "inference", "none")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options(DMDOptions):
  """``options:`` of the streaming-long stage (see the module docstring); LongLive stage-2 defaults."""

  lr_critic: float = 2.0e-6
  adapter: LoraOptions | None = LoraOptions(rank=256, alpha=256.0)
  streaming_chunk_size: int = 21
  streaming_max_length: int = 240
  streaming_min_new_frame: int = 18
  switch_mode: str = "random_choice"  # or "none": no prompt switch
  switch_choices: tuple[int, ...] | None = None  # None: [chunk, chunk + new, ...] up to max - chunk - new
  recache_mode: str = "training"
  global_sink: bool = True  # recache_mode "inference" only
  vae: str | None = None  # Wan VAE for the image-latent window: .pth / .safetensors, or a whole-model checkpoint

  def __post_init__(self):
    super().__post_init__()
    c, n, m, b = (
      self.streaming_chunk_size,
      self.streaming_min_new_frame,
      self.streaming_max_length,
      self.num_frame_per_block,
    )
    if c % b or n % b or not 0 < n <= c:
      raise ValueError(
        f"options: streaming_chunk_size {c} and streaming_min_new_frame {n} must be multiples of "
        f"num_frame_per_block {b} with 0 < new <= chunk"
      )
    if m < c:
      raise ValueError(f"options.streaming_max_length {m} is shorter than streaming_chunk_size {c}")
    if c < self.local_attn_size:
      raise ValueError(f"options.streaming_chunk_size {c} must be >= local_attn_size {self.local_attn_size}")
    if self.switch_mode not in ("random_choice", "none"):
      raise ValueError(f"options.switch_mode must be 'random_choice' or 'none', got {self.switch_mode!r}")
    if self.recache_mode not in RECACHE_MODES:
      raise ValueError(f"options.recache_mode must be one of {RECACHE_MODES}, got {self.recache_mode!r}")
    choices = self.switch_choices
    if choices is None:
      choices = tuple(range(c, m - c - n + 1, n))
    object.__setattr__(self, "switch_choices", tuple(int(s) for s in choices))
    starts = set(range(c, m - n + 1, n))
    bad = [s for s in self.switch_choices if s not in starts]
    if bad:
      raise ValueError(f"options.switch_choices {bad} are not chunk starts after the first chunk ({sorted(starts)})")
    if self.switch_mode == "random_choice" and not self.switch_choices:
      raise ValueError("options.switch_choices is empty; set switch_mode: none to train without switches")


@struct.dataclass
class StreamState:
  """The sequence carried across optimizer steps (part of the train state)."""

  cache: KVCache  # next_frame = frames generated so far in this sequence
  prev: Array  # [B, chunk, H, W, C] last chunk of frames (clean exit x0, detached)
  cond_a: Array  # [B, text_len, text_dim] first prompt
  cond_b: Array  # [B, text_len, text_dim] prompt after the switch
  switch_frame: Array  # int32 []
  switched: Array  # bool []
  sequences: Array  # int32 []: sequences started
  vae: Any = None  # frozen VAE parameters (option ``vae``), or None


def load_vae_model(path: str):
  """The Wan VAE of ``path``: a whole-model checkpoint folder, else an upstream ``Wan2.1_VAE.pth`` / safetensors."""
  if Path(path).is_dir():
    from longlive_jax.pipeline import load_vae  # noqa: PLC0415

    return load_vae(path)
  from longlive_jax.convert.wan_vae import load_vae  # noqa: PLC0415

  return load_vae(path)


def vae_first_frame(vae, latents: Array) -> Array:
  """Upstream's image latent: decode ``latents [B, k, h, w, C]``, re-encode the last pixel frame -> ``[B, 1, h, w, C]``."""
  pixels = vae_stream.decode(vae, latents)  # [B, 1 + 4 (k - 1), 8h, 8w, 3], clamped to [-1, 1]
  return vae_stream.encode(vae, pixels[:, -1:])  # [B, 1, h, w, C], normalised


@struct.dataclass
class Chunk:
  window: Array  # [B, chunk, H, W, C] what teacher and critic score
  mask: Array  # [B, chunk, H, W, C] bool: new frames
  cond: Array  # [B, text_len, text_dim] prompt active at the chunk start
  stream: StreamState
  metrics: dict


class StreamingLongStage:
  """Stage 2 (see the module docstring). ``data = "prompt_pairs"``; batches ``{"cond_a", "cond_b", "uncond"}``."""

  name = "streaming-long"
  data = "prompt_pairs"

  def __init__(self, opts: Options, run: RunSetup, *, first_frame_latent: Callable | None = None):
    self.opts = opts
    self.core = DMDCore(opts, run)
    self.model_config = self.core.cfgs["generator"]  # exported with the generator's weights
    self.batch = run.batch_size
    self.first_frame_latent = first_frame_latent
    self.vae_graphdef = self._vae_params = None
    if opts.vae is not None:
      if first_frame_latent is not None:
        raise ValueError("streaming-long: give either options.vae or first_frame_latent, not both")
      self.vae_graphdef, vae_params = nnx.split(load_vae_model(opts.vae))
      self._vae_params = nnx.to_pure_dict(vae_params)
    max_len = self.core.cfgs["generator"].rope_max_len
    if opts.streaming_max_length > max_len:
      raise ValueError(f"options.streaming_max_length {opts.streaming_max_length} exceeds rope_max_len {max_len}")
    b = opts.num_frame_per_block
    self.num_blocks = opts.streaming_chunk_size // b
    self.overlap = opts.streaming_chunk_size - opts.streaming_min_new_frame

  # ------------------------------------------------------------------------------------ state

  def init(self, key: Array, *, mesh=None) -> DMDState:
    o, c = self.opts, self.core.cfgs["generator"]
    b = self.batch
    zeros_text = jnp.zeros((b, c.text_len, c.text_dim), jnp.float32)
    stream = StreamState(
      cache=self.core.new_cache(b),
      prev=jnp.zeros((b, o.streaming_chunk_size, o.latent_height, o.latent_width, c.in_dim), jnp.float32),
      cond_a=zeros_text,
      cond_b=jnp.array(zeros_text, copy=True),
      switch_frame=jnp.zeros((), jnp.int32),
      switched=jnp.zeros((), bool),
      sequences=jnp.zeros((), jnp.int32),
      vae=self._vae_params,
    )
    return self.core.init_state(key, mesh=mesh, stream=stream)

  # ------------------------------------------------------------------------------------ one chunk

  def _recache(self, params, cache: KVCache, prev: Array, cond_b: Array, start: Array) -> KVCache:
    model = nnx.merge(self.core.graphdefs["generator"], params)
    cross = model.cross_kv(cond_b)
    spec = self.core.stream_spec
    if self.opts.recache_mode == "none":
      return cache  # the new prompt conditions the next frames; the cache keeps the old prompt's K/V
    if self.opts.recache_mode == "training":
      return training_recache(model, cache, prev, cross=cross, spec=spec, switch_frame=start)
    w = spec.window_frames
    branches = [
      functools.partial(
        engine.recache,
        model,
        latents=prev[:, -w:],
        cross=cross,
        spec=spec,
        switch_frame=s,
        global_sink=self.opts.global_sink,
      )
      for s in self.opts.switch_choices
    ]
    idx = jnp.argmax(jnp.asarray(self.opts.switch_choices) == start)
    return jax.lax.switch(idx, branches, cache)

  def chunk(self, params, stream: StreamState, batch: Mapping[str, Array], key: Array) -> Chunk:
    """Generates the next chunk of the carried sequence (starting a new one when due) with ``params``."""
    o, core = self.opts, self.core
    chunk, new = o.streaming_chunk_size, o.streaming_min_new_frame
    k_switch, k_roll = jax.random.split(key)
    start = stream.cache.next_frame
    reset = (start == 0) | (start + new > o.streaming_max_length)
    choices = jnp.asarray(o.switch_choices or (0,), jnp.int32)
    fresh = StreamState(
      cache=core.new_cache(self.batch),
      prev=jnp.zeros_like(stream.prev),
      cond_a=jnp.asarray(batch["cond_a"], jnp.float32),
      cond_b=jnp.asarray(batch["cond_b"], jnp.float32),
      switch_frame=jax.random.choice(k_switch, choices),
      switched=jnp.zeros((), bool),
      sequences=stream.sequences + 1,
    )
    vae = stream.vae  # frozen: not part of the select
    stream = jax.tree.map(lambda f, s: jnp.where(reset, f, s), fresh, stream.replace(vae=None)).replace(vae=vae)
    start = stream.cache.next_frame
    do_switch = (o.switch_mode != "none") & ~stream.switched & (start == stream.switch_frame)
    p_sg = sg(params)
    cache = jax.lax.cond(
      do_switch,
      lambda c: self._recache(p_sg, c, stream.prev, stream.cond_b, start),
      lambda c: c,
      stream.cache,
    )
    switched = stream.switched | do_switch
    cond = jnp.where(switched, stream.cond_b, stream.cond_a)
    first = start == 0
    active = first | (jnp.arange(self.num_blocks) >= self.overlap // o.num_frame_per_block)
    video, cache, e = core.generate(params, k_roll, cond, num_blocks=self.num_blocks, cache=cache, active=active)
    recent = jnp.concatenate([stream.prev[:, chunk - self.overlap :], video[:, self.overlap :]], axis=1)
    later = recent
    hook = self.first_frame_latent
    if stream.vae is not None:
      hook = functools.partial(vae_first_frame, nnx.merge(self.vae_graphdef, stream.vae))
    if hook is not None:  # [image latent of the decoded history, last chunk - 1 frames]
      full = jnp.concatenate([stream.prev, video[:, self.overlap :]], axis=1)  # [B, chunk + new, ...]
      img = hook(sg(full[:, : full.shape[1] - (chunk - 1)]))  # [B, 1, H, W, C]
      later = jnp.concatenate([sg(img).astype(video.dtype), recent[:, 1:]], axis=1)
    window = jnp.where(first, video, later)
    mask = jnp.where(first, True, jnp.arange(chunk) >= chunk - new)  # [chunk]
    mask = jnp.broadcast_to(mask[None, :, None, None, None], window.shape)
    prev = sg(jnp.where(first, video, recent))
    stream = stream.replace(cache=cache, prev=prev, switched=switched)
    metrics = {
      "chunk_start": start,
      "sequence_length": cache.next_frame,
      "switched": switched,
      "switch_frame": stream.switch_frame,
      "sequences": stream.sequences,
      "exit_step": e,
    }
    return Chunk(window=window, mask=mask, cond=cond, stream=stream, metrics=metrics)

  # ------------------------------------------------------------------------------------ step

  def step(self, state: DMDState, batch: Mapping[str, Array]) -> tuple[DMDState, dict]:
    def sample(params, stream, key):  # the next chunk of the carried sequence
      out = self.chunk(params, stream, batch, key)
      return out.window, out.mask, out.cond, out.stream, out.metrics

    return self.core.train_step(state, uncond=jnp.asarray(batch["uncond"], jnp.float32), sample=sample)

  # ------------------------------------------------------------------------------------ data / export

  def make_batch(self, records, *, encode_text: Callable | None = None) -> dict[str, Any]:
    """``{"cond_a", "cond_b", "uncond"}`` float32 ``[B, text_len, text_dim]`` from prompt-pair records."""
    core = self.core
    a = core.embeddings(records, field="text_embedding_a", prompt_field="prompt_a", encode_text=encode_text)
    b = core.embeddings(records, field="text_embedding_b", prompt_field="prompt_b", encode_text=encode_text)
    if a.shape[0] != self.batch:
      raise ValueError(f"streaming-long: a batch of {a.shape[0]} prompt pairs, but batch_size is {self.batch}")
    uncond = np.ascontiguousarray(np.broadcast_to(core.uncond_embedding(encode_text), a.shape))
    return {"cond_a": a, "cond_b": b, "uncond": uncond}

  def export(self, state: DMDState) -> dict:
    """The generator with its LoRA merged."""
    return self.core.export(state)


def make_stage(cfg, *, first_frame_latent: Callable | None = None) -> StreamingLongStage:
  """The streaming-long stage of a :class:`~longlive_jax.train.config.TrainConfig` (registry entry).

  ``first_frame_latent(latents [B, k, H, W, C]) -> [B, 1, H, W, C]`` (jittable VAE decode + re-encode of the
  last pixel frame) enables upstream's image-latent window; the registry passes none.
  """
  opts = stage_options(Options, cfg)
  return StreamingLongStage(opts, run_setup(cfg, opts), first_frame_latent=first_frame_latent)
