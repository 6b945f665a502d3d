"""Mesh, logical axis rules and sharded training (:mod:`longlive_jax.sharding`).

The 8-device checks run this file as a script in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the pytest process already initialised JAX
with one CPU device): the teacher stage's train step on meshes data=2 x fsdp=4 and data=8 must give
the parameters of the single-device step (2 steps, atol 1e-5), with the arrays really split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from longlive_jax import sharding as S


def test_mesh_shape_and_errors():
  assert S.mesh_shape(S.MeshConfig(data=-1, fsdp=4), 8) == (2, 4, 1)
  assert S.mesh_shape(S.MeshConfig(data=2, fsdp=-1, sequence=2), 8) == (2, 2, 2)
  with pytest.raises(S.MeshError, match="needs 6 devices"):
    S.mesh_shape(S.MeshConfig(data=3, fsdp=2), 8)
  with pytest.raises(S.MeshError, match="not divisible by 3"):
    S.mesh_shape(S.MeshConfig(data=-1, fsdp=3), 8)
  with pytest.raises(S.MeshError, match="at most one -1"):
    S.mesh_shape(S.MeshConfig(data=-1, fsdp=-1), 8)
  mesh = S.make_mesh(S.MeshConfig())
  assert mesh.axis_names == ("data", "fsdp", "sequence") and mesh.devices.size == 1


def test_rules_and_param_axes():
  assert S.logical_to_spec(("batch", "frames", None)) == P(("data", "fsdp"), None, None)
  assert S.logical_to_spec(("layers", "cache_batch", "cache_tokens", "heads", "kv")) == P(
    None, ("data", "fsdp"), "sequence", None, None
  )
  # A mesh axis is never used twice in one spec.
  assert S.logical_to_spec(("embed", "embed")) == P("fsdp", None)
  with pytest.raises(KeyError, match="no rule"):
    S.logical_to_spec(("nonsense",))
  ax = S.param_logical_axes
  # Stacked block kernel [L, in, out]: layer axis kept whole, the largest divisible dim is split.
  assert ax("params/blocks/ffn/fc1/kernel", (30, 1536, 8960), fsdp_size=8, min_size=1024) == ("layers", None, "embed")
  assert ax("opt_state/0/mu/blocks/self_attn/q/kernel", (30, 1536, 1536), fsdp_size=8, min_size=1024) == (
    "layers",
    "embed",
    None,
  )
  assert ax("params/head/kernel", (1536, 64), fsdp_size=8, min_size=1024) == ("embed", None)
  assert ax("params/blocks/ffn/fc1/bias", (30, 8960), fsdp_size=8, min_size=10**6) == ("layers", None)  # small
  assert ax("params/x", (30, 7), fsdp_size=8, min_size=1) == (None, None)  # nothing divisible
  assert ax("step", (), fsdp_size=8, min_size=0) == ()


def _run_8_devices() -> dict:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, str(Path(__file__).resolve())], env=env, capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_step_equals_single_device():
  out = _run_8_devices()
  print(json.dumps(out, indent=1))
  for name in ("data2_fsdp4", "data8"):
    assert out[name]["max_abs_diff"] <= 1e-5, out[name]
    assert out[name]["moved"] > 1e-4  # the steps changed the weights
  specs = out["data2_fsdp4"]["specs"]
  assert specs["params.blocks.ffn.fc1.kernel"] == [None, None, "fsdp"]
  assert specs["params.blocks.self_attn.q.kernel"] == [None, "fsdp", None]
  assert specs["params.patch_embedding.kernel"] == ["fsdp", None]
  assert specs["params.blocks.ffn.fc1.bias"] == [None, None]  # 128 elements: replicated
  assert specs["opt_state.mu.blocks.ffn.fc1.kernel"] == [None, None, "fsdp"]
  assert specs["batch.latents"] == [["data", "fsdp"], None, None, None, None]
  assert out["data2_fsdp4"]["fc1_shard_shape"] == [2, 32, 16]
  assert out["data8"]["specs"]["params.blocks.ffn.fc1.kernel"] == [None, None, None]
  assert out["data8"]["specs"]["batch.latents"] == ["data", None, None, None, None]
  assert out["init_sharded"] == [None, "fsdp", None]
  assert out["kv_cache"] == {"k": [None, "data", "sequence", None, None], "frame": []}


# ------------------------------------------------------------------------------- subprocess (8 devices)


def _spec_list(spec) -> list:
  return [list(a) if isinstance(a, tuple) else a for a in spec]


def _flat_specs(tree, prefix: str) -> dict:
  import jax

  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    spec = _spec_list(x.sharding.spec)
    out[".".join([prefix, *keys])] = spec + [None] * (x.ndim - len(spec))
  return out


def _child() -> None:
  import jax

  jax.config.update("jax_default_matmul_precision", "highest")
  from longlive_jax.config import tiny_config
  from longlive_jax.train import loop
  from longlive_jax.train.optim import OptimConfig
  from longlive_jax.train.stages.teacher import TeacherStage

  assert jax.device_count() == 8, jax.devices()
  # Adam divides by sqrt(v) + eps: with the default eps 1e-8 a gradient entry near zero turns float
  # reduction-order noise into O(lr) steps, so eps is raised to compare the sharded steps at 1e-5.
  stage = TeacherStage(
    model_config=tiny_config(), optim_config=OptimConfig(lr=1e-3, beta1=0.9, eps=1e-4), ema_enabled=True
  )
  rng = np.random.default_rng(0)
  batches = [
    {
      "latents": rng.standard_normal((8, 3, 4, 4, 16)).astype(np.float32),
      "text_embedding": rng.standard_normal((8, 16, 32)).astype(np.float32),
    }
    for _ in range(2)
  ]

  def train(mesh, state):
    step = loop.compile_step(stage, state, mesh)
    for b in batches:
      state, _ = step(state, S.shard_batch(b, mesh))
    return state

  one = S.make_mesh(S.MeshConfig(data=1), devices=jax.devices()[:1])
  init = stage.init(jax.random.PRNGKey(0), mesh=one)
  host_init = jax.device_get(init)
  ref = jax.device_get(train(one, init).params)
  results = {}
  for name, mc in (("data2_fsdp4", S.MeshConfig(data=2, fsdp=4)), ("data8", S.MeshConfig(data=8))):
    mesh = S.make_mesh(mc)
    state = jax.device_put(host_init, S.state_shardings(host_init, mesh))
    final = train(mesh, state)
    got, want, start = (jax.tree.leaves(t) for t in (final.params, ref, host_init.params))
    diff = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(got, want, strict=True))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(want, start, strict=True))
    fc1 = final.params["blocks"]["ffn"]["fc1"]["kernel"]
    specs = {**_flat_specs(final.params, "params"), **_flat_specs(S.shard_batch(batches[0], mesh), "batch")}
    specs.update(
      {k.replace("opt_state.1.0.", "opt_state."): v for k, v in _flat_specs(final.opt_state, "opt_state").items()}
    )
    results[name] = {
      "max_abs_diff": diff,
      "moved": moved,
      "specs": specs,
      "fc1_shard_shape": list(fc1.addressable_shards[0].data.shape),
    }
  # init_sharded creates the arrays directly in their layout.
  mesh = S.make_mesh(S.MeshConfig(data=2, fsdp=4))
  w = S.init_sharded(lambda k: {"blocks": {"w": jax.random.normal(k, (2, 64, 16))}}, mesh, jax.random.PRNGKey(0))
  assert len(w["blocks"]["w"].addressable_shards) == 8 and w["blocks"]["w"].addressable_shards[0].data.shape == (
    2,
    16,
    16,
  )
  results["init_sharded"] = _spec_list(w["blocks"]["w"].sharding.spec)
  # KV caches: batch over data x fsdp, cached tokens over sequence; bookkeeping replicated.
  from longlive_jax.stream.cache import StreamSpec, init_cache

  mesh = S.make_mesh(S.MeshConfig(data=4, fsdp=1, sequence=2))
  cache = init_cache(StreamSpec(tokens_per_frame=4), num_layers=2, batch=4, num_heads=2, head_dim=16)
  placed = jax.device_put(cache, S.kv_cache_shardings(cache, mesh))
  results["kv_cache"] = {"k": _spec_list(placed.k.sharding.spec), "frame": _spec_list(placed.frame.sharding.spec)}
  print(json.dumps(results))


if __name__ == "__main__":
  _child()
