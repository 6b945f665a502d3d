"""PEFT LoRA files in LongLive's format: read, check against the base model, merge or keep apart.

LongLive saves ``{"generator_lora": peft_sd, "critic_lora": peft_sd, "step": n}``
(``trainer/distillation.py``) and also loads a bare PEFT state dict. PEFT keys are
``base_model.model.<module>.lora_A.weight [r, in]`` and ``...lora_B.weight [out, r]``
(sometimes with the adapter name: ``lora_A.default.weight``). The adapted layer
computes ``W x + b + (alpha / r) * B (A x)``, i.e. merged ``W' = W + (alpha/r) B @ A``.

``alpha`` is not stored in the state dict. It is read from ``adapter_config.json``
next to the file when present, else given by the user, else LongLive's setting
``alpha == rank`` (scaling 1.0) is assumed and reported.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from longlive_jax.config import WanConfig
from longlive_jax.convert import sources
from longlive_jax.convert.errors import CheckpointError
from longlive_jax.convert.wan_dit import BLOCK_LINEARS

_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[A-Za-z0-9_\-]+))?\.weight$")
LORA_CONTAINER_KEYS = ("generator_lora", "critic_lora")


@dataclasses.dataclass(frozen=True)
class PeftLora:
  """A LoRA adapter keyed by upstream module name (``blocks.0.self_attn.q``)."""

  rank: int
  alpha: float
  modules: dict[str, tuple[Callable[[], np.ndarray], Callable[[], np.ndarray]]]  # name -> (load A, load B)
  shapes: dict[str, tuple[tuple[int, int], tuple[int, int]]]  # name -> (A shape, B shape)
  origin: str
  alpha_source: str

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def delta(self, name: str) -> np.ndarray:
    """``scale * B @ A`` for one module, ``[out, in]`` float32 (product in float64)."""
    load_a, load_b = self.modules[name]
    a = np.asarray(load_a(), np.float64)
    b = np.asarray(load_b(), np.float64)
    return (self.scale * (b @ a)).astype(np.float32)


def _strip(key: str) -> str:
  key = re.sub(r"^base_model\.model\.", "", key)
  return sources.strip_prefixes(key)


def read_peft_lora(path: str | Path, *, container: str | None = None, alpha: float | None = None) -> PeftLora:
  """Reads a LoRA file (``.pt`` container or bare PEFT dict, or ``.safetensors``)."""
  path = Path(path)
  if path.is_dir():
    cands = [path / n for n in ("adapter_model.safetensors", "adapter_model.bin", "lora.pt")]
    found = [c for c in cands if c.is_file()]
    if not found:
      raise CheckpointError(f"{path}: no LoRA file found (looked for {', '.join(c.name for c in cands)})")
    path = found[0]
  if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
    src = sources.read_torch(path, container=container, default_keys=LORA_CONTAINER_KEYS, what="LoRA file")
  else:
    src = sources.open_state_dict(path)
  pairs: dict[str, dict[str, str]] = {}
  for key in src:
    m = _KEY.match(key)
    if not m:
      raise CheckpointError(
        f"{src.origin}: {key!r} is not a LoRA tensor (expected '<module>.lora_A.weight' / 'lora_B')"
      )
    pairs.setdefault(_strip(m.group("module")), {})[m.group("ab")] = key
  if not pairs:
    raise CheckpointError(f"{src.origin}: the LoRA holds no adapted modules")
  modules, shapes, ranks = {}, {}, set()
  for name, ab in sorted(pairs.items()):
    if set(ab) != {"A", "B"}:
      missing = "lora_B" if "A" in ab else "lora_A"
      raise CheckpointError(f"{src.origin}: module {name!r} has no {missing} weight")
    sa, sb = src.shape(ab["A"]), src.shape(ab["B"])
    if len(sa) != 2 or len(sb) != 2 or sa[0] != sb[1]:
      raise CheckpointError(f"{src.origin}: module {name!r}: lora_A {sa} and lora_B {sb} do not form a rank-r pair")
    ranks.add(sa[0])
    modules[name] = (lambda k=ab["A"]: src[k], lambda k=ab["B"]: src[k])
    shapes[name] = (tuple(sa), tuple(sb))
  if len(ranks) != 1:
    raise CheckpointError(f"{src.origin}: modules have different ranks {sorted(ranks)}")
  rank = ranks.pop()
  alpha_source = "given"
  if alpha is None:
    cfg_path = path.parent / "adapter_config.json"
    if cfg_path.is_file():
      try:
        alpha = float(json.loads(cfg_path.read_text())["lora_alpha"])
        alpha_source = str(cfg_path)
      except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: cannot read lora_alpha: {e}") from e
    else:
      alpha = float(rank)
      alpha_source = "assumed alpha = rank (LongLive's setting; pass the alpha if yours differs)"
  return PeftLora(
    rank=rank, alpha=float(alpha), modules=modules, shapes=shapes, origin=src.origin, alpha_source=alpha_source
  )


def check_against_base(lora: PeftLora, base: Mapping, *, shape_of: Callable[[str], tuple[int, ...]]) -> None:
  """Every adapted module must be a 2-D weight of the base with matching in/out sizes."""
  problems = []
  for name, (sa, sb) in lora.shapes.items():
    key = f"{name}.weight"
    if key not in base:
      problems.append(f"{name!r} has no weight {key!r} in the base model")
      continue
    w = tuple(shape_of(key))
    if len(w) != 2 or (sb[0], sa[1]) != w:
      problems.append(f"{name!r}: LoRA gives [out, in] = {(sb[0], sa[1])}, base weight {key!r} is {w}")
  if problems:
    raise CheckpointError(
      f"LoRA {lora.origin} does not match the base model: "
      + "; ".join(problems[:8])
      + (" ..." if len(problems) > 8 else "")
    )


class MergedSource(Mapping):
  """The base state dict with ``W + (alpha/r) B @ A`` in place of every adapted weight (lazy)."""

  def __init__(self, base, lora: PeftLora):
    self.base = base
    self.lora = lora
    self.origin = f"{getattr(base, 'origin', 'base')} + LoRA {lora.origin}"
    self._shape_of = sources.shape_of(base)
    check_against_base(lora, base, shape_of=self._shape_of)

  def __getitem__(self, key: str) -> np.ndarray:
    w = self.base[key]
    name = key[: -len(".weight")] if key.endswith(".weight") else None
    if name in self.lora.modules:
      with np.errstate(over="ignore"):  # a finite W + delta can overflow in fp16: refused just below
        merged = (np.asarray(w, np.float32) + self.lora.delta(name)).astype(w.dtype)
      sources.check_finite(merged, origin=self.origin, key=key)
      return merged
    return w

  def __iter__(self) -> Iterator[str]:
    return iter(self.base)

  def __len__(self) -> int:
    return len(self.base)

  def shape(self, key: str) -> tuple[int, ...]:
    return self._shape_of(key)


def adapter_tree(lora: PeftLora, cfg: WanConfig) -> dict:
  """The adapter in our layout for training / on-the-fly merging (see :mod:`longlive_jax.model.lora`).

  Returns ``{"self_attn": {"q": {"a": [L, in, r], "b": [L, r, out]}, ...}, "ffn": {"fc1": ...}}``
  with a path for each block linear that any layer adapts; layers the file does not
  adapt get zeros (no change). Modules outside the blocks cannot be kept separate.
  """
  by_name = {name: path for path, name in BLOCK_LINEARS}
  outside = [n for n in lora.modules if not re.match(r"^blocks\.\d+\.", n) or n.split(".", 2)[2] not in by_name]
  if outside:
    raise CheckpointError(
      f"LoRA {lora.origin} adapts modules outside the transformer blocks ({outside[:4]}); merge it instead"
    )
  tree: dict = {}
  for name, (sa, sb) in lora.shapes.items():
    _, idx, sub = name.split(".", 2)
    i = int(idx)
    if i >= cfg.num_layers:
      raise CheckpointError(f"LoRA {lora.origin} adapts {name!r} but the model has {cfg.num_layers} layers")
    path = by_name[sub]
    node = tree
    for p in path:
      node = node.setdefault(p, {})
    if "a" not in node:
      node["a"] = np.zeros((cfg.num_layers, sa[1], lora.rank), np.float32)
      node["b"] = np.zeros((cfg.num_layers, lora.rank, sb[0]), np.float32)
    load_a, load_b = lora.modules[name]
    node["a"][i] = np.asarray(load_a(), np.float32).T  # [in, r]
    node["b"][i] = np.asarray(load_b(), np.float32).T  # [r, out]
  return tree
