"""Parity of the VAE with the ``wan_vae`` golden case (upstream PyTorch run in float64 on tiny weights).

Outputs compared (upstream layouts restored before comparing):
  * ``mu``: raw encoder mean; ``latent``: normalised latent (chunked causal encode);
  * ``decode_raw`` / ``pixel``: full decode of the reference latent, before / after the clamp;
  * ``z_stream_pixel``: streaming decode of ``z_stream`` in blocks of [1, 2, 2] latents with a carried cache;
  * ``z_stream_pixel_chunk_reset``: LongLive's ``decode_to_pixel_chunk`` (cache reset every 2 latents);
  * ``latent_mean`` / ``latent_std``: the published normalisation constants.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from longlive_jax import layout
from longlive_jax.convert import sources, wan_vae
from longlive_jax.vae import stream
from longlive_jax.vae.config import LATENT_MEAN, LATENT_STD, VAEConfig


def run_golden(case_dir: Path, case: dict) -> list:
  """Loads the case's weights through our converter, runs our VAE, returns one ``golden.Comparison`` per output."""
  from longlive_jax import golden

  case_dir = Path(case_dir)
  cfg = VAEConfig.from_upstream(case["config"])
  vae = wan_vae.vae_from_params(cfg, wan_vae.convert(sources.open_state_dict(case_dir / "weights.safetensors"), cfg))
  inp, out = np.load(case_dir / "inputs.npz"), np.load(case_dir / "outputs.npz")
  video = jnp.asarray(layout.from_wan(inp["video"]))  # [B, T, H, W, 3]
  latent_ref = jnp.asarray(layout.from_longlive(out["latent"]))  # [B, F, h, w, 16]
  z_stream = jnp.asarray(layout.from_longlive(inp["z_stream"]))
  res = []

  def cmp(name, got):
    res.append(golden.compare(name, got, out[name], golden.tolerance(case, name)))

  with jax.default_matmul_precision("highest"):
    mu = stream.encode(vae, video, normalize=False)
    cmp("mu", layout.to_wan(np.asarray(mu)))
    cmp("latent", layout.to_longlive(np.asarray(stream.encode(vae, video))))
    raw = stream.decode(vae, latent_ref, clamp=False)
    cmp("decode_raw", layout.to_wan(np.asarray(raw)))
    cmp("pixel", layout.to_longlive(np.asarray(stream.decode(vae, latent_ref))))
    b, _, h, w, _ = z_stream.shape
    cache = stream.init_decode_cache(vae, batch=b, height=h, width=w)
    blocks, start = [], 0
    for n in case["config"]["stream_chunks"]:
      px, cache = stream.decode_step(vae, cache, z_stream[:, start : start + n])
      blocks.append(np.asarray(px))
      start += n
    cmp("z_stream_pixel", layout.to_longlive(np.concatenate(blocks, axis=1)))
    reset = stream.decode_chunks_reset(vae, z_stream, chunk_size=case["config"]["chunk_reset_size"])
    cmp("z_stream_pixel_chunk_reset", layout.to_longlive(np.asarray(reset)))
  cmp("latent_mean", np.asarray(LATENT_MEAN, np.float32))
  cmp("latent_std", np.asarray(LATENT_STD, np.float32))
  return res
