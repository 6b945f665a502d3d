"""The Wan2.1 causal 3D video VAE: encoder, decoder, streaming feature caches (Flax NNX).

Layout: videos are channels-last ``[B, F, H, W, 3]`` with pixels in [-1, 1];
latents ``[B, F', H/8, W/8, z_dim]`` with ``F' = 1 + (F - 1) / 4``.
"""
