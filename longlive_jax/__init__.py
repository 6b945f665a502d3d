"""longlive-jax: LongLive (real-time interactive long video generation) in JAX/Flax."""

__version__ = "0.1.0"
