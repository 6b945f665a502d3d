"""The umT5 tokenizer as Wan2.1 calls it (``wan/modules/tokenizers.py``, ``HuggingfaceTokenizer``).

Wan builds ``HuggingfaceTokenizer(name='<wan folder>/google/umt5-xxl', seq_len=512, clean='whitespace')``
and calls it with ``add_special_tokens=True, return_mask=True``. That is, per prompt:

  1. clean: ``ftfy.fix_text``, ``html.unescape`` twice, strip, then collapse every run of Unicode
     whitespace to one space and strip again (:func:`clean_text`);
  2. tokenize with the umT5 SentencePiece-Unigram tokenizer (``tokenizer.json``, read by the
     ``tokenizers`` library, the backend of HuggingFace's fast tokenizer);
  3. append ``</s>`` (the post-processor of ``tokenizer.json``, or explicitly if it has none),
     truncating the text so the whole sequence fits ``text_len``;
  4. pad on the right with ``<pad>`` (id 0) to ``text_len``; the mask is 1 on real tokens
     (``</s>`` included) and 0 on padding.

If ``tokenizer.json`` is absent, ``spiece.model`` is read with ``sentencepiece`` instead (the
"slow" T5 tokenizer in legacy mode; literal special-token strings in a prompt are not split out
there, which the fast tokenizer does). Dependencies: ``tokenizers`` (and ``ftfy`` for exact Wan
cleaning; without it a warning is issued and only NFC normalisation is applied).
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The Unicode White_Space property: what Wan's ``regex`` ``\s`` matches. (Python's ``re`` ``\s``
# also matches U+001C..U+001F, which Wan would keep, so the class is spelled out.)
_WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
WAN_SUBFOLDER = Path("google") / "umt5-xxl"


class TokenizerError(ValueError):
  """A tokenizer folder is missing files or is unusable; the message names the folder and the file."""


class UnknownWordError(TokenizerError):
  """A closed-vocabulary (WordLevel) tokenizer met a word it does not know; names it and lists the vocabulary."""

  def __init__(self, word: str, prompt: str, vocabulary: Sequence[str]):
    self.word, self.prompt, self.vocabulary = word, prompt, tuple(vocabulary)
    super().__init__(f"unknown word {word!r} in prompt {prompt!r}; the vocabulary is: {', '.join(self.vocabulary)}")


def clean_text(text: str) -> str:
  """Wan's ``clean='whitespace'``: ``whitespace_clean(basic_clean(text))``."""
  try:
    import ftfy
  except ImportError:
    warnings.warn("ftfy is not installed: prompts are cleaned without ftfy.fix_text (pip install ftfy)", stacklevel=2)
    text = unicodedata.normalize("NFC", text)
  else:
    text = ftfy.fix_text(text)
  text = html.unescape(html.unescape(text)).strip()
  return _WHITESPACE.sub(" ", text).strip()


def _special_token(folder: Path, name: str, default: str) -> str:
  """``eos_token`` / ``pad_token`` from special_tokens_map.json or tokenizer_config.json, else ``default``."""
  for fname in ("special_tokens_map.json", "tokenizer_config.json"):
    path = folder / fname
    if not path.is_file():
      continue
    try:
      value = json.loads(path.read_text()).get(name)
    except (OSError, json.JSONDecodeError, AttributeError) as e:
      raise TokenizerError(f"{path}: not a readable JSON object: {e}") from e
    if isinstance(value, dict):
      value = value.get("content")
    if isinstance(value, str):
      return value
  return default


def _closed(folder: Path) -> bool:
  try:
    return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("closed_vocabulary", False))
  except (OSError, ValueError):
    return False


def resolve_folder(folder: str | Path) -> Path:
  """The folder holding the tokenizer files: ``folder`` itself or Wan's ``folder/google/umt5-xxl``."""
  folder = Path(folder)
  for cand in (folder, folder / WAN_SUBFOLDER):
    if any((cand / f).is_file() for f in TOKENIZER_FILES):
      return cand
  raise TokenizerError(
    f"no umT5 tokenizer in {folder}: expected {' or '.join(TOKENIZER_FILES)} there or in {folder / WAN_SUBFOLDER} "
    "(Wan ships them in its model folder as google/umt5-xxl/)"
  )


class UMT5Tokenizer:
  """Prompts -> ``(ids, mask)`` exactly as Wan's ``HuggingfaceTokenizer(seq_len, clean='whitespace')``.

  Build with :meth:`from_folder`. ``tok(prompts, text_len=512)`` returns int32 ``ids [N, text_len]``
  and int32 ``mask [N, text_len]``.
  """

  def __init__(self, folder: Path):
    self.folder = resolve_folder(folder)
    eos_tok = _special_token(self.folder, "eos_token", "</s>")
    pad_tok = _special_token(self.folder, "pad_token", "<pad>")
    json_path = self.folder / "tokenizer.json"
    if json_path.is_file():
      self._init_fast(json_path)
    else:
      self._init_sentencepiece(self.folder / "spiece.model")
    self.eos_id = self._token_id(eos_tok, "eos_token")
    self.pad_id = self._token_id(pad_tok, "pad_token")

  @classmethod
  def from_folder(cls, folder: str | Path) -> UMT5Tokenizer:
    return cls(Path(folder))

  def _init_fast(self, path: Path) -> None:
    try:
      from tokenizers import Tokenizer
    except ImportError as e:
      raise TokenizerError(
        f"{path}: reading tokenizer.json needs the 'tokenizers' package (pip install tokenizers)"
      ) from e
    try:
      self._fast = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust backend raises a bare Exception on malformed files
      raise TokenizerError(f"{path}: not a valid tokenizer.json: {e}") from e
    self._fast.no_padding()
    self._fast.no_truncation()
    # A WordLevel model marked ``"closed_vocabulary": true`` in tokenizer_config.json (the toy world's): an
    # unknown word is an error naming it, not a silent <unk>.
    model = json.loads(self._fast.to_str()).get("model") or {}
    self.closed_vocabulary = None
    if model.get("type") == "WordLevel" and model.get("unk_token") is not None and _closed(path.parent):
      self._unk_id = self._fast.token_to_id(model["unk_token"])
      special = {t.content for t in self._fast.get_added_tokens_decoder().values()} | {model["unk_token"]}
      self.closed_vocabulary = tuple(sorted(w for w in model.get("vocab", {}) if w not in special))
    self._sp = None
    self.path = path
    self.vocab_size = self._fast.get_vocab_size(with_added_tokens=True)

  def _init_sentencepiece(self, path: Path) -> None:
    try:
      import sentencepiece
    except ImportError as e:
      raise TokenizerError(
        f"{self.folder}: has no tokenizer.json, and reading {path.name} needs 'sentencepiece' (pip install sentencepiece)"
      ) from e
    try:
      self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
      raise TokenizerError(f"{path}: not a valid SentencePiece model: {e}") from e
    self._fast = None
    self.closed_vocabulary = None
    self.path = path
    self.vocab_size = self._sp.get_piece_size()

  def _token_id(self, token: str, what: str) -> int:
    if self._fast is not None:
      tid = self._fast.token_to_id(token)
    else:
      tid = self._sp.piece_to_id(token)
      tid = None if tid == self._sp.unk_id() and token != self._sp.id_to_piece(tid) else tid
    if tid is None:
      raise TokenizerError(f"{self.path}: the {what} {token!r} is not in the vocabulary")
    return int(tid)

  def _encode(self, texts: list[str], text_len: int) -> list[list[int]]:
    """Token ids of cleaned texts, ``</s>`` included, at most ``text_len`` each."""
    if self._fast is not None and self._fast.post_processor is not None:
      # The post-processor appends </s>; the backend truncates the text to leave room for it.
      self._fast.enable_truncation(max_length=text_len)
      try:
        encs = self._fast.encode_batch(texts, add_special_tokens=True)
      finally:
        self._fast.no_truncation()
      self._check_known(texts, encs)
      return [e.ids for e in encs]
    if self._fast is not None:
      encs = self._fast.encode_batch(texts, add_special_tokens=False)
      self._check_known(texts, encs)
      pieces = [e.ids for e in encs]
    else:
      pieces = self._sp.encode(texts, out_type=int)
    return [list(p[: text_len - 1]) + [self.eos_id] for p in pieces]

  def _check_known(self, texts: list[str], encs) -> None:
    """Closed vocabularies only: raise :class:`UnknownWordError` for the first unknown word."""
    if self.closed_vocabulary is None:
      return
    for text, enc in zip(texts, encs, strict=True):
      for tid, (start, end) in zip(enc.ids, enc.offsets, strict=True):
        if tid == self._unk_id:
          raise UnknownWordError(text[start:end], text, self.closed_vocabulary)

  def __call__(self, prompts: str | Sequence[str], *, text_len: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Cleans, tokenizes, appends ``</s>``, truncates and right-pads to ``text_len``.

    Returns:
      ``(ids, mask)``, int32 ``[N, text_len]`` each (``mask`` 1 on real tokens incl. ``</s>``).
    """
    if isinstance(prompts, str):
      prompts = [prompts]
    if text_len < 1:
      raise TokenizerError(f"text_len must be >= 1, got {text_len}")
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
      raise TokenizerError(f"prompts must be strings, got {bad[0]}")
    seqs = self._encode([clean_text(p) for p in prompts], text_len)
    ids = np.full((len(seqs), text_len), self.pad_id, np.int32)
    mask = np.zeros((len(seqs), text_len), np.int32)
    for row, seq in enumerate(seqs):
      ids[row, : len(seq)] = seq
      mask[row, : len(seq)] = 1
    return ids, mask
