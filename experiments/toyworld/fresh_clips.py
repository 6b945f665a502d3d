"""Shared by the teacher diagnostics (``noise_levels.py``, ``samplers.py``, ``ode_cycle.py``): fresh captioned
clips made as the teacher's data is made, and the teacher's classifier-free-guided velocity on them."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
  """``--dit``, ``--vae``, ``--vae-encoder``."""
  ap.add_argument("--dit", required=True, help="the teacher's export folder")
  ap.add_argument("--vae", default="runs/toyworld/vae/export", help="checkpoint with the decoding VAE")
  ap.add_argument("--vae-encoder", default="runs/toyworld/vae/export", help="checkpoint that encoded the data")


def add_arguments(ap: argparse.ArgumentParser, *, clips: int) -> None:
  """:func:`add_model_arguments`, ``--clips``, ``--seed``."""
  add_model_arguments(ap)
  ap.add_argument("--clips", type=int, default=clips, help=f"fresh captioned clips (default {clips})")
  ap.add_argument("--seed", type=int, default=777, help="world seed of the fresh clips (training used 1)")


def load(a: argparse.Namespace):
  """``(dit, vae, encode_text, x0 [N, F, H, W, C], prompts)``: the models and ``a.clips`` fresh clips of world
  seed ``a.seed``, encoded by ``a.vae_encoder`` with their captions (none dropped)."""
  from longlive_jax.toyworld import evaluate as ev

  dit, vae, enc = ev.load_models(a.dit, a.vae)
  x0, prompts = encode_clips(vae_encoder=a.vae_encoder, encode_text=enc, num=a.clips, seed=a.seed)
  return dit, vae, enc, x0, prompts


def encode_clips(*, vae_encoder: str, encode_text, num: int, seed: int) -> tuple[jax.Array, list[str]]:
  """``(x0 [num, 21, H, W, C], prompts)``: ``num`` clips of world seed ``seed`` made as the teacher's data is
  made (``toyworld.data.build_latents``, 21 latents at 64 px), encoded by ``vae_encoder``, no caption dropped."""
  from longlive_jax.pipeline import load_vae
  from longlive_jax.toyworld import data

  with tempfile.TemporaryDirectory() as tmp:
    path = data.build_latents(
      Path(tmp) / "clips.npz", vae=load_vae(vae_encoder), encode_text=encode_text, num=num, latent_frames=21,
      size=64, seed=seed, caption_dropout=0.0,
    )  # fmt: skip
    with np.load(path) as z:
      return jnp.asarray(z["latents"]), [str(p) for p in z["prompt"]]


def velocities_at(dit, x0: jax.Array, eps: jax.Array, ctx: jax.Array, sigma: float, *, batch: int = 8):
  """``(x_t, v)``, both ``[N, F, H, W, C]``: the clips noised to ``sigma`` (``x_t = (1 - s) x0 + s eps``) and the
  teacher's unguided velocity on them with captions ``ctx [N, L, D]``, in batches of ``batch``."""
  xt = (1.0 - sigma) * x0 + sigma * eps
  chunks = [(xt[b : b + batch], ctx[b : b + batch]) for b in range(0, len(xt), batch)]
  return xt, jnp.concatenate([dit(x, jnp.full((len(x),), 1000.0 * sigma), c) for x, c in chunks])


def motion_prompts(per_motion: int, *, motions=None, seed: int = 3) -> list[str]:
  """``per_motion`` captions for each of ``motions`` (default ``grammar.MOTIONS``) in turn, the other attributes
  drawn from the training split (held-out combinations skipped) with ``np.random.default_rng(seed)``."""
  from longlive_jax.toyworld import grammar

  rng = np.random.default_rng(seed)
  out = []
  for i, m in enumerate(grammar.MOTIONS if motions is None else motions):
    while len(out) < per_motion * (i + 1):
      attrs = grammar.sample_attributes(rng).replace(motion=m)
      if not grammar.is_held_out(attrs):
        out.append(attrs.caption)
  return out


def judged(vae, latents: jax.Array, prompts: list[str]) -> dict[str, float]:
  """The judge's per-attribute accuracy of ``latents [N, F, H, W, C]`` decoded by ``vae``, one prompt each."""
  from longlive_jax.toyworld import evaluate as ev
  from longlive_jax.vae.stream import decode

  return ev.score(ev._to_uint8(decode(vae, latents)), [[p] for p in prompts])["accuracy"]


def guided_velocity(dit, enc, prompts: list[str]):
  """Jitted ``velocity(x [N, ...], sigma, guidance)``: CFG over the prompts' and the empty caption's velocities."""
  n = len(prompts)
  cond = jnp.asarray(enc(prompts))
  ctx = jnp.concatenate([cond, jnp.broadcast_to(jnp.asarray(enc([""])), cond.shape)])  # [2N, L, D]

  @jax.jit
  def velocity(x, s, g):
    v = dit(jnp.concatenate([x, x]), jnp.full((2 * n,), 1000.0 * s), ctx)  # [2N, F, H, W, C]
    return v[n:] + g * (v[:n] - v[n:])

  return velocity
