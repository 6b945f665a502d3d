"""The streaming engine: an immutable KV-cache pytree and pure denoise / commit / recache steps."""
