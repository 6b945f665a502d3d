"""Wan2.1 text-to-video diffusion transformer (Flax NNX), bidirectional and causal in one set of layers.

One ``WanDiT`` serves
  * the bidirectional model (teacher / critic): :meth:`WanDiT.__call__` over the
    whole clip, with an optional key-padding mask from per-sample ``seq_lens``; or,
    like upstream's batch API, over a list of videos of different shapes
    (:meth:`WanDiT.forward_videos`: per-sample RoPE grids, padding and key mask);
  * the causal generator's per-block forward: :meth:`WanDiT.forward_tokens`
    takes extra self-attention keys/values per layer (from a KV cache) with a
    validity mask, a frame offset for RoPE, and returns the block's own keys and
    values so a cache can store them. The cache engine itself lives elsewhere.

Layout conventions (channels-last, unlike upstream's ``[C, F, H, W]``):
  * latents ``x``: ``[B, F, H, W, C]`` (use :mod:`longlive_jax.layout` to convert);
  * tokens: ``[B, S, D]`` with ``S = F * (H/ph) * (W/pw)``, flattened f-major, then
    row, then column (upstream order);
  * timesteps ``t``: ``[B]`` (one per sample) or ``[B, F]`` (one per frame, the causal
    model); raw float values in [0, 1000];
  * text ``context``: ``[B, text_len, text_dim]``, rows past the prompt zero. All
    rows are attended to (upstream passes no text mask).

The blocks are created with ``nnx.vmap`` so every parameter has a leading layer
axis, and run with ``jax.lax.scan``: compile time does not grow with depth.
The per-layer modules (attention, feed-forward, :class:`WanBlock`) live in
:mod:`longlive_jax.model.blocks` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from longlive_jax.config import WanConfig
from longlive_jax.model import layers
from longlive_jax.model.blocks import (  # noqa: F401  (re-exported: the per-layer modules live there)
  Array,
  CrossAttention,
  FeedForward,
  SelfAttention,
  WanBlock,
  _dtype,
  _Projections,
)
from longlive_jax.model.rope import grid_rope


class WanDiT(nnx.Module):
  """The Wan2.1 DiT. See the module docstring for layouts."""

  def __init__(self, cfg: WanConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt, pdt = _dtype(cfg.dtype), _dtype(cfg.param_dtype)
    f32 = jnp.float32
    self.patch_embedding = layers.Dense(cfg.patch_dim, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.text_embedding_0 = layers.Dense(cfg.text_dim, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    self.text_embedding_2 = layers.Dense(cfg.dim, cfg.dim, rngs=rngs, dtype=dt, param_dtype=pdt)
    # Timestep path, modulation and head run in float32 as in upstream Wan.
    self.time_embedding_0 = layers.Dense(cfg.freq_dim, cfg.dim, rngs=rngs, dtype=f32, param_dtype=pdt)
    self.time_embedding_2 = layers.Dense(cfg.dim, cfg.dim, rngs=rngs, dtype=f32, param_dtype=pdt)
    self.time_projection = layers.Dense(cfg.dim, 6 * cfg.dim, rngs=rngs, dtype=f32, param_dtype=pdt)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_blocks(rngs):
      return WanBlock(cfg, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.head_modulation = nnx.Param((0.1 * jax.random.normal(rngs.params(), (2, cfg.dim))).astype(pdt))  # [2, D]
    self.head = layers.Dense(cfg.dim, cfg.out_patch_dim, rngs=rngs, dtype=f32, param_dtype=pdt)
    if any(cfg.pos_grid):  # learned absolute positions (not in Wan; see WanConfig.pos_grid), zero at init
      self.pos_embedding = nnx.Param(jnp.zeros((*cfg.pos_grid, cfg.dim), pdt))  # [H', W', D]
      self.first_frame_embedding = nnx.Param(jnp.zeros((cfg.dim,), pdt))  # [D]
    if cfg.pos_frames:  # learned frame positions (not in Wan; see WanConfig.pos_frames), zero at init
      self.frame_embedding = nnx.Param(jnp.zeros((cfg.pos_frames, cfg.dim), pdt))  # [N, D]

  # ----------------------------------------------------------------------------------------------
  # Pieces, usable on their own by the streaming engine.

  def patchify(self, x: Array) -> Array:
    """``[B, F, H, W, C]`` -> patch vectors ``[B, S, ph*pw*C]`` ordered (kh, kw, c)."""
    b, f, h, w, c = x.shape
    _, ph, pw = self.cfg.patch_size
    if h % ph or w % pw:
      raise ValueError(f"latent height/width {h}x{w} must be divisible by the patch size {ph}x{pw}")
    x = x.reshape(b, f, h // ph, ph, w // pw, pw, c)  # [B, F, H', ph, W', pw, C]
    x = x.transpose(0, 1, 2, 4, 3, 5, 6)  # [B, F, H', W', ph, pw, C]
    return x.reshape(b, f * (h // ph) * (w // pw), ph * pw * c)  # [B, S, P]

  def unpatchify(self, y: Array, *, frames: int, height: int, width: int) -> Array:
    """Head output ``[B, S, ph*pw*C]`` (ordered (kh, kw, c), upstream's (p, q, r, c)) -> ``[B, F, H, W, C]``."""
    b = y.shape[0]
    _, ph, pw = self.cfg.patch_size
    hh, ww = height // ph, width // pw
    y = y.reshape(b, frames, hh, ww, ph, pw, self.cfg.out_dim)  # [B, F, H', W', ph, pw, C]
    y = y.transpose(0, 1, 2, 4, 3, 5, 6)  # [B, F, H', ph, W', pw, C]
    return y.reshape(b, frames, height, width, self.cfg.out_dim)  # [B, F, H, W, C]

  def embed_patches(self, x: Array, *, frame_pos: Array) -> Array:
    """Latents ``[B, F, H, W, C]`` at RoPE frame positions ``frame_pos [F]`` -> tokens ``[B, S, D]``.

    The patch embedding, plus (with ``cfg.pos_grid``) the learned absolute position of each token in the
    frame and the first-frame vector on frames at position 0, plus (with ``cfg.pos_frames``) the learned
    vector of each frame position below ``pos_frames``.
    """
    tokens = self.patch_embedding(self.patchify(x))  # [B, S, D]
    if not any(self.cfg.pos_grid) and not self.cfg.pos_frames:
      return tokens
    b, f, h, w, _ = x.shape
    _, ph, pw = self.cfg.patch_size
    gh, gw = h // ph, w // pw
    frame_pos = jnp.asarray(frame_pos)
    pos = jnp.zeros((f, gh, gw, self.cfg.dim), jnp.float32)  # [F, H', W', D]
    if any(self.cfg.pos_grid):
      if (gh, gw) != self.cfg.pos_grid:
        raise ValueError(
          f"latents {h}x{w} make a {gh}x{gw} token grid but this model's learned positions are "
          f"{self.cfg.pos_grid[0]}x{self.cfg.pos_grid[1]} (pos_grid): generate at its native latent size "
          f"{self.cfg.pos_grid[0] * ph}x{self.cfg.pos_grid[1] * pw}"
        )
      first = (frame_pos == 0).astype(jnp.float32)  # [F]
      pos = pos + self.pos_embedding[...].astype(jnp.float32)[None]  # [F, H', W', D]
      pos = pos + first[:, None, None, None] * self.first_frame_embedding[...].astype(jnp.float32)
    if self.cfg.pos_frames:
      n = self.cfg.pos_frames
      table = self.frame_embedding[...].astype(jnp.float32)  # [N, D]
      rows = jnp.take(table, jnp.clip(frame_pos, 0, n - 1), axis=0)  # [F, D]
      rows = rows * (frame_pos < n).astype(jnp.float32)[:, None]  # later frames: none
      pos = pos + rows[:, None, None, :]  # [F, H', W', D]
    pos = pos.reshape(f * gh * gw, -1)  # [S, D], f-major like the tokens
    return (tokens.astype(jnp.float32) + pos[None]).astype(tokens.dtype)

  def time_embed(self, t: Array) -> tuple[Array, Array]:
    """Per-frame timesteps ``t [B, F]`` -> ``(e [B, F, D], e0 [B, F, 6, D])``, float32."""
    emb = layers.sinusoidal_embedding(t, self.cfg.freq_dim)  # [B, F, freq_dim]
    e = self.time_embedding_2(jax.nn.silu(self.time_embedding_0(emb)))  # [B, F, D]
    e0 = self.time_projection(jax.nn.silu(e))  # [B, F, 6D]
    return e, e0.reshape(*e0.shape[:-1], 6, self.cfg.dim)  # [B, F, 6, D]

  def embed_text(self, context: Array) -> Array:
    """``[B, T, text_dim]`` -> ``[B, T, D]`` (``Linear -> GELU(tanh) -> Linear``); padding rows included."""
    return self.text_embedding_2(jax.nn.gelu(self.text_embedding_0(context), approximate=True))

  def cross_kv(self, context: Array) -> tuple[Array, Array]:
    """Text keys/values of every layer: ``(k, v)`` each ``[L, B, T, H, Dh]``.

    Computed once per prompt (upstream's ``crossattn_cache``) and reused by every call.
    """
    ctx = self.embed_text(context)
    graphdef, state = nnx.split(self.blocks)

    def body(_, layer_state):
      blk = nnx.merge(graphdef, layer_state)
      return None, blk.cross_attn.kv(ctx)

    _, (k, v) = jax.lax.scan(body, None, state)
    return k, v

  def rope(self, *, frame_pos: Array, height: int, width: int) -> tuple[Array, Array]:
    """RoPE cos/sin ``[S, Dh/2]`` for a token grid of latent size height x width at frames ``frame_pos [F]``."""
    _, ph, pw = self.cfg.patch_size
    return grid_rope(
      frame_pos=frame_pos,
      height=height // ph,
      width=width // pw,
      head_dim=self.cfg.head_dim,
      max_len=self.cfg.rope_max_len,
      theta=self.cfg.rope_theta,
    )

  def run_blocks(
    self,
    tokens: Array,
    *,
    e0: Array,
    cross_k: Array,
    cross_v: Array,
    cos: Array,
    sin: Array,
    key_mask: Array | None = None,
    extra_kv: tuple[Array, Array, Array] | None = None,
    extra_rope: tuple[Array, Array] | None = None,
    remat: bool = False,
  ) -> tuple[Array, Array, Array]:
    """Scans the stacked blocks.

    Args:
      tokens: ``[B, S, D]`` embedded patches.
      e0: ``[B, F, 6, D]``.
      cross_k, cross_v: ``[L, B, T, H, Dh]`` from :meth:`cross_kv`.
      extra_kv: optional ``(k [L, B, Sc, H, Dh], v [L, B, Sc, H, Dh], valid [B, Sc])``.
      remat: rematerialise each block in the backward pass (``jax.checkpoint`` on the scan body,
        training memory); the forward values are unchanged.

    Returns:
      ``(tokens [B, S, D] float32, k_new [L, B, S, H, Dh], v_new [L, B, S, H, Dh])``.
    """
    graphdef, state = nnx.split(self.blocks)
    x = tokens.astype(jnp.float32)
    valid = None if extra_kv is None else extra_kv[2]

    def body(x, xs):
      layer_state, ck, cv, ek, ev = xs
      blk = nnx.merge(graphdef, layer_state)
      extra = None if ek is None else (ek, ev, valid)
      x, k, v = blk(
        x, e0=e0, cross_k=ck, cross_v=cv, cos=cos, sin=sin, key_mask=key_mask, extra_kv=extra, extra_rope=extra_rope
      )
      return x, (k, v)

    ek, ev = (None, None) if extra_kv is None else extra_kv[:2]
    if remat:
      body = jax.checkpoint(body, prevent_cse=False)  # inside scan CSE cannot undo the remat
    x, (k_new, v_new) = jax.lax.scan(body, x, (state, cross_k, cross_v, ek, ev))
    return x, k_new, v_new

  def head_out(self, x: Array, e: Array) -> Array:
    """Output head modulated by ``e [B, F, D]`` (not e0): ``[B, S, D]`` -> ``[B, S, out_patch_dim]``."""
    b, s, d = x.shape
    f = e.shape[1]
    mod = self.head_modulation[...].astype(jnp.float32)[None, None] + e[:, :, None, :]  # [B, F, 2, D]
    shift, scale = mod[:, :, 0:1], mod[:, :, 1:2]  # [B, F, 1, D]
    h = layers.layer_norm(x, eps=self.cfg.eps).reshape(b, f, s // f, d)  # [B, F, S/F, D]
    h = (h * (1.0 + scale) + shift).reshape(b, s, d)
    return self.head(h)  # [B, S, out_patch_dim]

  # ----------------------------------------------------------------------------------------------
  # Entry points.

  def forward_tokens(
    self,
    x: Array,
    t: Array,
    *,
    cross_k: Array,
    cross_v: Array,
    frame_pos: Array,
    key_mask: Array | None = None,
    extra_kv: tuple[Array, Array, Array] | None = None,
    extra_frame_pos: Array | None = None,
    remat: bool = False,
  ) -> tuple[Array, Array, Array]:
    """Forward of latents ``x [B, F, H, W, C]`` with precomputed text K/V and explicit frame positions.

    Args:
      t: ``[B]`` or ``[B, F]`` timesteps.
      frame_pos: int ``[F]`` RoPE frame index of each frame (absolute, e.g. ``start + arange(F)``).
      key_mask: optional bool self-attention mask over the new tokens: ``[B, S]`` (keys) or
        ``[B, S, S]`` (query x key, e.g. :func:`block_causal_mask`).
      extra_kv: optional cached ``(k, v, valid)``, see :meth:`run_blocks`.
      extra_frame_pos: relative-RoPE mode only: int ``[Sc / tokens_per_frame]`` frame position of
        each cached frame; cached keys are then raw and rotated here, and the returned keys are raw.
      remat: rematerialise each block in the backward pass (training memory; values unchanged).

    Returns:
      ``(v_pred [B, F, H, W, C] float32, k_new [L, B, S, H, Dh], v_new)``.
    """
    b, f, h, w, _ = x.shape
    t = jnp.asarray(t, jnp.float32)
    if t.ndim == 1:
      t = jnp.broadcast_to(t[:, None], (b, f))
    e, e0 = self.time_embed(t)
    tokens = self.embed_patches(x, frame_pos=frame_pos)  # [B, S, D]
    cos, sin = self.rope(frame_pos=frame_pos, height=h, width=w)
    extra_rope = None
    if extra_frame_pos is not None:
      extra_rope = self.rope(frame_pos=extra_frame_pos, height=h, width=w)
    out, k_new, v_new = self.run_blocks(
      tokens,
      e0=e0,
      cross_k=cross_k,
      cross_v=cross_v,
      cos=cos,
      sin=sin,
      key_mask=key_mask,
      extra_kv=extra_kv,
      extra_rope=extra_rope,
      remat=remat,
    )
    y = self.head_out(out, e)
    return self.unpatchify(y, frames=f, height=h, width=w), k_new, v_new

  def __call__(
    self,
    x: Array | Sequence[Array],
    t: Array,
    context: Array | Sequence[Array],
    *,
    seq_lens: Array | None = None,
    seq_len: int | None = None,
    remat: bool = False,
  ) -> Array | list[Array]:
    """Bidirectional forward (teacher / critic): velocity ``v ~ noise - x0`` of shape ``[B, F, H, W, C]``.

    Args:
      x: ``[B, F, H, W, C]`` latents, or a list of ``[F_i, H_i, W_i, C]`` videos of different shapes
        (upstream's batch API, see :meth:`forward_videos`; the result is then a list too).
      t: ``[B]`` or ``[B, F]`` timesteps in [0, 1000].
      context: ``[B, text_len, text_dim]`` text embeddings (zero rows past the prompt).
      seq_lens: optional int ``[B]``: tokens of each sample beyond this count are
        padding and are masked as self-attention keys (upstream ``seq_lens``).
      seq_len: list input only: the token length samples are padded to (see :meth:`forward_videos`).
      remat: rematerialise each block in the backward pass (training memory; values unchanged).
    """
    if isinstance(x, list | tuple):
      if seq_lens is not None:
        raise ValueError("seq_lens goes with a [B, F, H, W, C] batch; a list of videos has its own lengths")
      return self.forward_videos(x, t, context, seq_len=seq_len, remat=remat)
    if seq_len is not None:
      raise ValueError("seq_len goes with a list of videos; a [B, F, H, W, C] batch takes seq_lens")
    b, f, h, w, _ = x.shape
    _, ph, pw = self.cfg.patch_size
    cross_k, cross_v = self.cross_kv(context)
    key_mask = None
    if seq_lens is not None:
      s = f * (h // ph) * (w // pw)
      key_mask = jnp.arange(s)[None, :] < jnp.asarray(seq_lens)[:, None]  # [B, S]
    out, _, _ = self.forward_tokens(
      x,
      t,
      cross_k=cross_k,
      cross_v=cross_v,
      frame_pos=jnp.arange(f, dtype=jnp.int32),
      key_mask=key_mask,
      remat=remat,
    )
    return out

  def forward_videos(
    self,
    videos: Sequence[Array],
    t: Array,
    context: Array | Sequence[Array],
    *,
    seq_len: int | None = None,
    remat: bool = False,
  ) -> list[Array]:
    """Upstream ``WanModel.forward`` on a list of videos of different shapes, in one call.

    Each video is patchified and embedded on its own, its tokens are zero-padded to ``seq_len`` and the
    samples run through the blocks as one ``[B, seq_len, D]`` batch with per-sample RoPE grids (padded
    tokens are not rotated, as upstream) and a key padding mask, so padded tokens never influence real
    ones; each output is cut back to its video's tokens. Equal (to float rounding) to one call per video.

    Args:
      videos: ``B`` latents ``[F_i, H_i, W_i, C]`` (channels-last; upstream's list of ``[C, F, H, W]``).
      t: ``[B]`` timesteps, one per video (upstream Wan2.1).
      context: ``[B, text_len, text_dim]``, or a list of ``[L_i, text_dim]`` prompts that are zero-padded to
        ``text_len`` (as upstream does with its list of contexts).
      seq_len: static token length to pad to, at least the longest video's token count (its default);
        upstream's ``seq_len``. The values do not depend on it.
      remat: rematerialise each block in the backward pass (training memory; values unchanged).

    Returns:
      ``B`` velocity predictions ``[F_i, H_i, W_i, out_dim]`` (float32).
    """
    b = len(videos)
    _, ph, pw = self.cfg.patch_size
    if b == 0:
      raise ValueError("forward_videos needs at least one video")
    for i, v in enumerate(videos):
      if v.ndim != 4 or v.shape[-1] != self.cfg.in_dim:
        raise ValueError(f"video {i}: expected [F, H, W, {self.cfg.in_dim}], got shape {tuple(v.shape)}")
    grids = [tuple(v.shape[:3]) for v in videos]  # (F, H, W) latent sizes
    lens = [f * (h // ph) * (w // pw) for f, h, w in grids]
    s = max(lens) if seq_len is None else int(seq_len)
    if s < max(lens):
      raise ValueError(f"seq_len {s} is shorter than the longest video ({max(lens)} tokens)")
    t = jnp.asarray(t, jnp.float32)
    if t.shape != (b,):
      raise ValueError(f"a list of {b} videos takes one timestep per video, t of shape ({b},); got {t.shape}")
    if isinstance(context, list | tuple):
      context = self.pad_text(context)
    # One modulation "frame" per sample: every token of a video shares its timestep's e / e0.
    e, e0 = self.time_embed(t[:, None])  # [B, 1, D], [B, 1, 6, D]
    tokens, cos, sin = [], [], []
    for v, (f, h, w), n in zip(videos, grids, lens, strict=True):
      tok = self.embed_patches(v[None], frame_pos=jnp.arange(f, dtype=jnp.int32))[0]  # [n, D]
      tokens.append(jnp.pad(tok.astype(jnp.float32), ((0, s - n), (0, 0))))  # zero tokens past the video
      c, si = self.rope(frame_pos=jnp.arange(f, dtype=jnp.int32), height=h, width=w)  # [n, Dh/2]
      cos.append(jnp.pad(c, ((0, s - n), (0, 0)), constant_values=1.0))  # padded tokens are not rotated
      sin.append(jnp.pad(si, ((0, s - n), (0, 0))))
    key_mask = jnp.arange(s)[None, :] < jnp.asarray(lens, jnp.int32)[:, None]  # [B, S]
    cross_k, cross_v = self.cross_kv(context)
    out, _, _ = self.run_blocks(
      jnp.stack(tokens),  # [B, S, D]
      e0=e0,
      cross_k=cross_k,
      cross_v=cross_v,
      cos=jnp.stack(cos),  # [B, S, Dh/2]
      sin=jnp.stack(sin),
      key_mask=key_mask,
      remat=remat,
    )
    y = self.head_out(out, e)  # [B, S, out_patch_dim]
    return [
      self.unpatchify(y[i : i + 1, :n], frames=f, height=h, width=w)[0]
      for i, ((f, h, w), n) in enumerate(zip(grids, lens, strict=True))
    ]

  def pad_text(self, prompts: Sequence[Array]) -> Array:
    """A list of ``[L_i, text_dim]`` prompt embeddings -> ``[B, text_len, text_dim]``, zero rows past each prompt."""
    t = self.cfg.text_len
    for i, p in enumerate(prompts):
      if p.ndim != 2 or p.shape[0] > t or p.shape[1] != self.cfg.text_dim:
        raise ValueError(f"prompt {i}: expected [L <= {t}, {self.cfg.text_dim}], got shape {tuple(p.shape)}")
    return jnp.stack([jnp.pad(jnp.asarray(p), ((0, t - p.shape[0]), (0, 0))) for p in prompts])


def block_causal_mask(*, num_frames: int, block_frames: int, tokens_per_frame: int) -> Array:
  """bool ``[S, S]`` (``S = num_frames * tokens_per_frame``): token i sees token j iff j's block <= i's block.

  The attention pattern of a causal LongLive model run over a whole sequence at once (upstream's
  flex-attention ``block_mask`` for teacher forcing), used to check that streaming equals it.
  """
  blk = jnp.arange(num_frames * tokens_per_frame) // (tokens_per_frame * block_frames)  # [S]
  return blk[None, :] <= blk[:, None]  # [S, S]


def init_model(cfg: WanConfig, *, seed: int = 0) -> WanDiT:
  """A randomly initialised model (tests, benchmarks); real weights come from :mod:`longlive_jax.convert`."""
  return WanDiT(cfg, rngs=nnx.Rngs(seed))


def abstract_model(cfg: WanConfig) -> WanDiT:
  """The model with ``jax.ShapeDtypeStruct`` leaves: full-size structure without allocating."""
  return nnx.eval_shape(lambda: WanDiT(cfg, rngs=nnx.Rngs(0)))


def count_params(model: nnx.Module) -> int:
  state = nnx.state(model, nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))
