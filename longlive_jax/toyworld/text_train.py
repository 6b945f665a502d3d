"""Pretraining the toy world's text encoder on its grammar, so that words carry their role in the sentence.

Why: the tiny umT5 at its random initialisation is close to a bag of words. Measured on the frozen seed-0
encoder: the token "red" as the object's colour ("a red circle ... on a blue background") and as the
background's ("a blue circle ... on a red background") have embeddings with cosine 0.995, and the mean-pooled
embeddings of the two prompts 0.9997. The DiT's cross-attention, which has no positions on its keys, then
sees the set {red, blue} and cannot tell which colour is the object's: a teacher trained on it for 2000 steps
painted the object's colour as the background. A pretrained umT5 (Wan's) knows its language; this is the toy
world's equivalent.

Objective: every real token of a prompt (``</s>`` included) predicts, through four linear heads on the encoder
output, the prompt's four attributes (background colour, object colour, shape, motion), by cross-entropy. Each
token must then carry the whole sentence's meaning, position included. Trained on the training split's
captions only (:data:`~longlive_jax.toyworld.grammar.HELD_OUT` stays unseen, as for every other network), then
frozen for the whole recipe; the heads are dropped.

``longlive-jax toyworld text --out longlive_jax/toyworld/text_encoder.npz`` reproduces the shipped weights.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from longlive_jax.toyworld import grammar
from longlive_jax.toyworld.text import TEXT_CONFIG, TEXT_LEN, TEXT_SEED

ATTRIBUTES = (
  ("background", tuple(grammar.COLOURS)),
  ("colour", tuple(grammar.COLOURS)),
  ("shape", grammar.SHAPES),
  ("motion", grammar.MOTIONS),
)


def _labels(split: str) -> tuple[list[str], np.ndarray]:
  """Captions of ``split`` and their attribute classes ``[N, 4]`` (in :data:`ATTRIBUTES` order)."""
  combos = grammar.split_combinations(split)
  labels = np.array(
    [[values.index(getattr(a, name)) for name, values in ATTRIBUTES] for a in combos], np.int32
  )  # [N, 4]
  return [a.caption for a in combos], labels


def pretrain(
  *, steps: int = 400, batch: int = 64, lr: float = 3e-3, seed: int = 0, progress: bool = False
) -> tuple[dict, dict]:
  """``(params, metrics)``: the encoder trained from its seeded initialisation (:data:`TEXT_SEED`).

  ``metrics``: the final loss and the per-token attribute accuracy on the held-out captions (the probe the
  heads implement; 1.0 means every token of an unseen prompt names all four attributes).
  """
  from tqdm.auto import tqdm

  from longlive_jax.text.model import init_model, params_of
  from longlive_jax.toyworld.text import TextEncoder

  tok = TextEncoder(params=params_of(init_model(TEXT_CONFIG, seed=TEXT_SEED))).tokenizer
  captions, labels = _labels("train")
  ids, mask = tok(captions, text_len=TEXT_LEN)  # [N, L] each
  graphdef, state = nnx.split(init_model(TEXT_CONFIG, seed=TEXT_SEED))
  k_heads = jax.random.split(jax.random.key(seed + 1), len(ATTRIBUTES))
  heads = {
    name: 0.02 * jax.random.normal(k, (TEXT_CONFIG.dim, len(values)), jnp.float32)
    for k, (name, values) in zip(k_heads, ATTRIBUTES, strict=True)
  }
  train = {"encoder": state, "heads": heads}
  tx = optax.adam(lr)
  opt = tx.init(train)

  def logits_loss(train, ids, mask, labels):
    hidden = nnx.merge(graphdef, train["encoder"])(ids, mask).astype(jnp.float32)  # [B, L, D]
    m = mask.astype(jnp.float32)  # [B, L]: real tokens, </s> included
    loss, correct = 0.0, 0.0
    for j, (name, _) in enumerate(ATTRIBUTES):
      logits = jnp.einsum("bld,dc->blc", hidden, train["heads"][name])  # [B, L, classes]
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels[:, None, j])  # [B, L]
      loss = loss + jnp.sum(ce * m) / jnp.sum(m)
      correct = correct + jnp.sum((jnp.argmax(logits, -1) == labels[:, None, j]) * m) / jnp.sum(m)
    return loss, correct / len(ATTRIBUTES)

  @jax.jit
  def step(train, opt, ids, mask, labels):
    (loss, acc), grads = jax.value_and_grad(logits_loss, has_aux=True)(train, ids, mask, labels)
    updates, opt = tx.update(grads, opt, train)
    return optax.apply_updates(train, updates), opt, loss, acc

  rng = np.random.default_rng(seed)
  loss = acc = jnp.zeros(())
  for _ in tqdm(range(steps), desc="text encoder", unit="step", disable=not progress):
    pick = rng.choice(len(captions), batch, replace=False)
    train, opt, loss, acc = step(train, opt, jnp.asarray(ids[pick]), jnp.asarray(mask[pick]), jnp.asarray(labels[pick]))
  held_captions, held_labels = _labels("held_out")
  h_ids, h_mask = tok(held_captions, text_len=TEXT_LEN)
  _, held_acc = jax.jit(logits_loss)(train, jnp.asarray(h_ids), jnp.asarray(h_mask), jnp.asarray(held_labels))
  params = jax.tree.map(np.asarray, params_of(nnx.merge(graphdef, train["encoder"])))
  metrics = {"loss": float(loss), "train_token_accuracy": float(acc), "held_out_token_accuracy": float(held_acc)}
  return params, metrics


def save_params(path: str | Path, params: dict) -> Path:
  """The encoder's parameters as one ``.npz`` (keys: the tree paths), written atomically."""
  path = Path(path)
  flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".partial.npz")
  np.savez(tmp, **flat)
  tmp.replace(path)
  return path


def load_params(path: str | Path) -> dict:
  """Parameters saved by :func:`save_params`, in the tree of :data:`TEXT_CONFIG` (shapes checked)."""
  from longlive_jax.text.model import init_model, params_of

  template = params_of(init_model(TEXT_CONFIG, seed=TEXT_SEED))
  with np.load(path) as f:
    leaves = []
    for p, v in jax.tree_util.tree_flatten_with_path(template)[0]:
      key = jax.tree_util.keystr(p)
      if key not in f or f[key].shape != np.shape(v):
        raise ValueError(f"{path}: no array {key} of shape {np.shape(v)}: not the toy world's text encoder")
      leaves.append(np.asarray(f[key], np.float32))
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
