"""The toy world's text side: a closed-vocabulary tokenizer and a tiny, frozen umT5 encoder.

* Tokenizer: a ``tokenizers`` WordLevel model over :data:`~longlive_jax.toyworld.grammar.VOCABULARY`
  (lower-cased, punctuation dropped), saved as a standard ``tokenizer.json``, so the project's
  :class:`~longlive_jax.text.tokenizer.UMT5Tokenizer` reads it like umT5's own. Ids: ``<pad>`` 0,
  ``</s>`` 1, ``<unk>`` 2, then the words. A word outside the vocabulary raises
  :class:`~longlive_jax.text.tokenizer.UnknownWordError` naming it and listing the vocabulary.
* Encoder: the project's umT5 architecture (:mod:`longlive_jax.text.model`) at a tiny size
  (:data:`TEXT_CONFIG`), pretrained on the grammar (:mod:`longlive_jax.toyworld.text_train`: each token learns
  to name the prompt's four attributes, so that a colour word knows whether it is the object's or the
  background's; at its random initialisation the encoder is a near bag of words) and then **frozen**: the
  shipped weights are :data:`TEXT_WEIGHTS`, every training stage's embeddings are fixed (they can be
  precomputed), and the whole-model checkpoint stores them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from longlive_jax.text.config import UMT5Config
from longlive_jax.toyworld.grammar import VOCABULARY

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
TEXT_LEN = 16  # prompts of the grammar are at most 10 words + </s>
TEXT_SEED = 0
TEXT_WEIGHTS = Path(__file__).parent / "text_encoder.npz"  # `longlive-jax toyworld text --out` this file
TEXT_CONFIG = UMT5Config(vocab=32, dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=2, num_buckets=32)


def tokenizer_json() -> str:
  """The WordLevel ``tokenizer.json`` of the world's vocabulary (deterministic)."""
  from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

  vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *VOCABULARY))}
  if len(vocab) > TEXT_CONFIG.vocab:
    raise AssertionError(f"vocabulary of {len(vocab)} exceeds the encoder's {TEXT_CONFIG.vocab} rows")
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"[^a-z0-9'\s]"), " ")])
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  return tok.to_str()


def write_tokenizer(folder: str | Path) -> Path:
  """Writes ``tokenizer.json``, ``special_tokens_map.json`` and ``tokenizer_config.json`` into ``folder``."""
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "tokenizer.json").write_text(tokenizer_json(), encoding="utf-8")
  special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
  (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
  # an unknown word is an error naming it (UnknownWordError), not a silent <unk>
  (folder / "tokenizer_config.json").write_text(json.dumps({**special, "closed_vocabulary": True}), encoding="utf-8")
  return folder


def text_params() -> dict:
  """The world's frozen, grammar-pretrained encoder parameters (:data:`TEXT_WEIGHTS`), float32 numpy."""
  from longlive_jax.toyworld.text_train import load_params

  if not TEXT_WEIGHTS.exists():
    raise FileNotFoundError(
      f"{TEXT_WEIGHTS} is missing: make it with 'longlive-jax toyworld text --out {TEXT_WEIGHTS}'"
    )
  return load_params(TEXT_WEIGHTS)


def init_text_params() -> dict:
  """The encoder at its seeded initialisation (``TEXT_CONFIG`` from ``TEXT_SEED``): pretraining's start."""
  import jax

  from longlive_jax.text.model import init_model, params_of

  return jax.tree.map(np.asarray, params_of(init_model(TEXT_CONFIG, seed=TEXT_SEED)))


class TextEncoder:
  """Prompts -> ``[N, TEXT_LEN, 64]`` float32 embeddings (zero rows past each prompt), memoised per prompt.

  ``params`` defaults to the shipped, grammar-pretrained weights (:func:`text_params`); ``tokenizer_dir`` to a fresh copy of the world's
  tokenizer. Raises ``UnknownWordError`` for words outside the vocabulary.
  """

  def __init__(self, *, params: dict | None = None, tokenizer_dir: str | Path | None = None):
    import tempfile

    from longlive_jax.text.model import model_from_params
    from longlive_jax.text.tokenizer import UMT5Tokenizer

    self.model = model_from_params(TEXT_CONFIG, params if params is not None else text_params())
    if tokenizer_dir is None:
      with tempfile.TemporaryDirectory() as tmp:
        self.tokenizer = UMT5Tokenizer.from_folder(write_tokenizer(tmp))
    else:
      self.tokenizer = UMT5Tokenizer.from_folder(tokenizer_dir)
    self._memo: dict[str, np.ndarray] = {}

  def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
    from longlive_jax.text.encode import encode_prompts

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    todo = sorted({p for p in prompts if p not in self._memo})
    if todo:
      emb = encode_prompts(self.model, self.tokenizer, todo, text_len=TEXT_LEN)  # [n, L, D]
      self._memo.update(zip(todo, np.asarray(emb, np.float32), strict=True))
    return (
      np.stack([self._memo[p] for p in prompts]) if prompts else np.zeros((0, TEXT_LEN, TEXT_CONFIG.dim), np.float32)
    )
