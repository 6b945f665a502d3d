"""umT5 text encoder: golden parity, an independent float64 reference, the converter, tokenizer and encode_prompts."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from longlive_jax import golden
from longlive_jax.convert import CheckpointError, sources, torch_save, umt5
from longlive_jax.text import UMT5_XXL, TokenizerError, UMT5Tokenizer, clean_text, encode_prompts, tiny_config
from longlive_jax.text import encode as encode_lib
from longlive_jax.text.golden_case import case_config, run_golden
from longlive_jax.text.model import abstract_model, count_params, init_model, model_from_params, params_of


@pytest.fixture(scope="module")
def case_dir(golden_root):
  return golden_root / "umt5_encoder"


@pytest.fixture(scope="module")
def case(case_dir):
  return golden.read_case(case_dir)


@pytest.fixture(scope="module")
def golden_sd(case_dir):
  src = sources.open_state_dict(case_dir / "weights.safetensors")
  return {k: src[k] for k in src}


# ------------------------------------------------------------------------------------------------
# Parity and an independent reference


def test_golden_case(case_dir, case):
  res = run_golden(case_dir, case)
  print("umt5_encoder: " + "; ".join(f"{c.name} max|err| {c.max_abs_err:.2e}" for c in res))
  assert {c.name for c in res} == {"hidden", "context", "rel_bucket", "rel_bucket_matrix"}
  assert all(c.passed for c in res), res


def _ref_bucket(rel, num_buckets, max_dist):
  """Bidirectional T5 buckets in float64 with floor (agrees with upstream's float32 for max_dist 128)."""
  half = num_buckets // 2
  exact = half // 2
  dist = np.abs(rel)
  large = exact + np.floor(np.log(np.maximum(dist, 1) / exact) / math.log(max_dist / exact) * (half - exact))
  return (rel > 0) * half + np.where(dist < exact, dist, np.minimum(large, half - 1)).astype(np.int64)


def _ref_encoder(sd, cfg, ids, mask):
  """Upstream T5Encoder semantics in float64 numpy, written from the reference notes."""
  b, length = ids.shape
  h, dh = cfg.num_heads, cfg.head_dim
  pos = np.arange(length)
  buckets = _ref_bucket(pos[None, :] - pos[:, None], cfg.num_buckets, cfg.max_dist)

  def rms(x, w):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.eps) * w

  def gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

  x = sd["token_embedding.weight"][ids].astype(np.float64)
  for i in range(cfg.num_layers):
    w = {k[len(f"blocks.{i}.") :]: v.astype(np.float64) for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
    table = w["pos_embedding.embedding.weight"] if not cfg.shared_pos else sd["pos_embedding.embedding.weight"]
    bias = table[buckets].transpose(2, 0, 1)  # [H, L, L]
    y = rms(x, w["norm1.weight"])
    q, k, v = ((y @ w[f"attn.{n}.weight"].T).reshape(b, length, h, dh) for n in "qkv")
    logits = np.einsum("bihd,bjhd->bhij", q, k) + bias
    logits = np.where(mask[:, None, None, :] > 0, logits, -1e300)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    x = x + np.einsum("bhij,bjhd->bihd", p, v).reshape(b, length, -1) @ w["attn.o.weight"].T
    y = rms(x, w["norm2.weight"])
    x = x + ((y @ w["ffn.fc1.weight"].T) * gelu(y @ w["ffn.gate.0.weight"].T)) @ w["ffn.fc2.weight"].T
  return rms(x, sd["norm.weight"])


def _random_sd(cfg, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for k, shape in umt5.expected_shapes(cfg).items():
    if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
      out[k] = (1 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
    else:
      out[k] = (rng.standard_normal(shape) / math.sqrt(shape[-1] if "attn" in k or "ffn" in k else 1)).astype(
        np.float32
      )
  return out


@pytest.mark.parametrize("shared_pos", [False, True])
def test_matches_float64_reference_with_dim_attn_ne_dim(shared_pos):
  cfg = tiny_config(vocab=50, dim=24, dim_attn=32, dim_ffn=40, num_heads=4, num_layers=3, shared_pos=shared_pos)
  sd = _random_sd(cfg, seed=int(shared_pos))
  rng = np.random.default_rng(5)
  ids = rng.integers(1, cfg.vocab, (3, 20))
  mask = (np.arange(20)[None] < np.array([[20], [7], [1]])).astype(np.int64)
  ids = ids * mask
  model = model_from_params(cfg, umt5.convert(sd, cfg))
  got = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
  want = _ref_encoder(sd, cfg, ids, mask)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def test_bfloat16_compute_stays_close(case_dir, case):
  cfg = case_config(case)
  src = sources.open_state_dict(case_dir / "weights.safetensors")
  out = np.load(case_dir / "outputs.npz")
  inp = np.load(case_dir / "inputs.npz")
  bf = cfg.replace(dtype="bfloat16", param_dtype="bfloat16")
  model = model_from_params(bf, umt5.convert(src, bf))
  assert model.blocks.attn.q.kernel[...].dtype == jnp.bfloat16
  got = np.asarray(model(jnp.asarray(inp["ids"]), jnp.asarray(inp["mask"])))
  assert got.dtype == np.float32
  err = np.abs(got - out["hidden"]).max()
  assert 1e-5 < err < 0.05 * np.abs(out["hidden"]).max(), err


# ------------------------------------------------------------------------------------------------
# Sizes and the converter


def test_xxl_parameter_count_matches_upstream_keys():
  shapes = umt5.expected_shapes(UMT5_XXL)
  assert len(shapes) == 242
  assert shapes["blocks.23.pos_embedding.embedding.weight"] == (32, 64)
  assert shapes["blocks.0.ffn.gate.0.weight"] == (10240, 4096)
  from_keys = sum(math.prod(s) for s in shapes.values())
  assert from_keys == 5_680_910_336
  model = abstract_model(UMT5_XXL)
  assert count_params(model) == from_keys
  graphdef, state = nnx.split(model)
  ids = jax.ShapeDtypeStruct((2, 512), jnp.int32)
  out = jax.eval_shape(lambda s, i, m: nnx.merge(graphdef, s)(i, m), state, ids, ids)
  assert out.shape == (2, 512, 4096) and out.dtype == jnp.float32


def test_golden_key_list_is_what_we_expect(golden_sd, case):
  cfg = case_config(case)
  assert {k: v.shape for k, v in golden_sd.items()} == umt5.expected_shapes(cfg)


def test_round_trip(golden_sd, case):
  cfg = case_config(case)
  back = umt5.to_upstream(umt5.convert(golden_sd, cfg), cfg)
  assert set(back) == set(golden_sd)
  for k, v in golden_sd.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_missing_key_is_named(golden_sd, case):
  sd = dict(golden_sd)
  del sd["blocks.1.ffn.gate.0.weight"]
  with pytest.raises(CheckpointError, match=r"1 missing key\(s\): 'blocks\.1\.ffn\.gate\.0\.weight' \(shape"):
    umt5.convert(sd, case_config(case))


def test_unexpected_key_is_named(golden_sd, case):
  sd = dict(golden_sd, **{"pos_embedding.embedding.weight": np.zeros((32, 4), np.float32)})
  with pytest.raises(CheckpointError, match=r"unexpected key\(s\): pos_embedding\.embedding\.weight"):
    umt5.convert(sd, case_config(case))


def test_shape_mismatch_names_key_and_both_shapes(golden_sd, case):
  sd = dict(golden_sd, **{"blocks.0.attn.o.weight": np.zeros((32, 16), np.float32)})
  with pytest.raises(
    CheckpointError, match=r"'blocks\.0\.attn\.o\.weight': checkpoint has \(32, 16\), config expects \(32, 32\)"
  ):
    umt5.convert(sd, case_config(case))


def test_bf16_pth_and_safetensors_convert_alike(tmp_path, golden_sd, case):
  """The real checkpoint is a bf16 .pth; it must give the same tree as the same weights in .safetensors."""
  cfg = case_config(case).replace(param_dtype="bfloat16")
  pth = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
  torch_save.save(pth, golden_sd, dtype=ml_dtypes.bfloat16)
  assert sources.open_state_dict(pth)["blocks.1.ffn.gate.0.weight"].dtype == ml_dtypes.bfloat16  # bf16 storages
  st = tmp_path / "enc.safetensors"
  save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in golden_sd.items()}, str(st))
  a, b = params_of(umt5.load_encoder(pth, cfg)), params_of(umt5.load_encoder(st, cfg))
  gate = np.asarray(a["blocks"]["ffn"]["gate"]["kernel"][1])
  np.testing.assert_array_equal(gate, golden_sd["blocks.1.ffn.gate.0.weight"].T.astype(ml_dtypes.bfloat16))
  flat_a, flat_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
  assert [k for k, _ in flat_a] == [k for k, _ in flat_b]
  for (k, x), (_, y) in zip(flat_a, flat_b, strict=True):
    assert x.dtype == jnp.bfloat16, k
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(k))


def test_convert_streams_leaf_by_leaf(golden_sd, case):
  cfg = case_config(case)
  seen, ticks = [], []
  tree = umt5.convert(
    golden_sd, cfg, put=lambda x: seen.append(x.shape) or x, progress=lambda d, t: ticks.append((d, t))
  )
  assert len(seen) == len(jax.tree.leaves(tree)) == 12  # embedding, norm and 10 stacked block leaves
  assert (2, 32) in seen and (2, 32, 4) in seen  # stacked norms and per-layer bias tables
  assert ticks[-1] == (22, 22) and len(ticks) == 22


# ------------------------------------------------------------------------------------------------
# Tokenizer

WORDS = ["<pad>", "</s>", "<unk>", "a", "cat", "sat", "on", "the", "mat", "&", '"', "hi"]


def _word_tokenizer(folder, *, post_processor=True):
  """A WordLevel tokenizer.json with T5's special ids (pad 0, </s> 1, unk 2): ids are predictable by hand."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors

  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  if post_processor:
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  folder.mkdir(parents=True, exist_ok=True)
  tok.save(str(folder / "tokenizer.json"))
  (folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": "</s>", "pad_token": "<pad>"}))
  return folder


@pytest.mark.parametrize("post_processor", [True, False])
def test_word_tokenizer_ids_mask_truncation(tmp_path, post_processor):
  tok = UMT5Tokenizer.from_folder(_word_tokenizer(tmp_path / "tok", post_processor=post_processor))
  ids, mask = tok(["a cat sat", "  the &amp;amp;\n\t mat ", "\u201chi\u201d", "a cat sat on the mat"], text_len=6)
  assert ids.dtype == np.int32 and ids.shape == mask.shape == (4, 6)
  want = [[3, 4, 5, 1, 0, 0], [7, 9, 8, 1, 0, 0], [10, 11, 10, 1, 0, 0], [3, 4, 5, 6, 7, 1]]
  np.testing.assert_array_equal(ids, want)  # html unescaped twice; ftfy uncurls quotes; truncation keeps </s>
  np.testing.assert_array_equal(mask, (np.asarray(want) > 0).astype(np.int32))
  ids1, _ = tok("a cat", text_len=512)
  assert ids1.shape == (1, 512) and list(ids1[0, :4]) == [3, 4, 1, 0]


def test_unigram_tokenizer_in_wan_folder_layout(tmp_path):
  """A trained SentencePiece-style Unigram tokenizer.json found under <wan>/google/umt5-xxl/."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

  tok = Tokenizer(models.Unigram())
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.decoder = decoders.Metaspace()
  corpus = ["a cat sat on the mat", "the dog ran in the park", "a red fox jumps over the lazy dog"] * 20
  trainer = trainers.UnigramTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
  tok.train_from_iterator(corpus, trainer)
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  folder = tmp_path / "Wan2.1-T2V-1.3B" / "google" / "umt5-xxl"
  folder.mkdir(parents=True)
  tok.save(str(folder / "tokenizer.json"))
  ours = UMT5Tokenizer.from_folder(tmp_path / "Wan2.1-T2V-1.3B")
  assert ours.folder == folder and (ours.eos_id, ours.pad_id) == (1, 0)
  ids, mask = ours(["  the lazy   dog\n"], text_len=32)
  n = int(mask.sum())
  assert ids[0, n - 1] == 1 and (ids[0, n:] == 0).all() and (ids[0, : n - 1] > 2).all()
  assert tok.decode(ids[0, : n - 1].tolist()) == "the lazy dog"


def test_sentencepiece_fallback(tmp_path):
  import sentencepiece as spm

  corpus = ["a cat sat on the mat", "the dog ran in the park", "a red fox jumps over the lazy dog"] * 20
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(corpus),
    model_prefix=str(tmp_path / "spiece"),
    vocab_size=30,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    minloglevel=2,
  )
  sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
  tok = UMT5Tokenizer.from_folder(tmp_path)
  ids, mask = tok(["the  lazy dog"], text_len=16)
  first = sp.encode("the lazy dog") + [1]
  assert len(first) < 16
  np.testing.assert_array_equal(ids[0], first + [0] * (16 - len(first)))
  assert mask[0].sum() == len(first)
  ids, mask = tok("a cat sat on the mat", text_len=5)
  np.testing.assert_array_equal(ids[0], sp.encode("a cat sat on the mat")[:4] + [1])
  assert mask.sum() == 5


def test_clean_text_follows_wan():
  assert clean_text("  a\u3000b \t\n c  ") == "a b c"  # Unicode White_Space collapses
  assert clean_text("a\x1cb") == "ab"  # ftfy drops control characters
  assert clean_text("&amp;lt;b&amp;gt;") == "<b>"  # html.unescape twice
  assert clean_text("\u201cquoted\u201d \ufb01ne") == '"quoted" fine'  # ftfy.fix_text


def test_missing_tokenizer_files_name_the_folder(tmp_path):
  empty = tmp_path / "Wan2.1-T2V-1.3B"
  empty.mkdir()
  with pytest.raises(TokenizerError, match=r"no umT5 tokenizer in .*Wan2\.1-T2V-1\.3B.*google/umt5-xxl"):
    UMT5Tokenizer.from_folder(empty)
  model = abstract_model(tiny_config())  # the folder is checked before the model is used
  with pytest.raises(TokenizerError, match="Wan2.1-T2V-1.3B"):
    encode_prompts(model, empty, ["a cat"], text_len=8)


# ------------------------------------------------------------------------------------------------
# encode_prompts


def test_encode_prompts_zeroes_padding_rows_and_compiles_once_per_shape(tmp_path):
  cfg = tiny_config(vocab=len(WORDS))
  model = init_model(cfg, seed=3)
  tok = UMT5Tokenizer.from_folder(_word_tokenizer(tmp_path / "tok"))
  before = encode_lib._encode_jit._cache_size()
  ctx = encode_prompts(model, tok, ["a cat sat", "the mat"], text_len=8)
  assert ctx.shape == (2, 8, cfg.dim) and ctx.dtype == np.float32
  ids, mask = tok(["a cat sat", "the mat"], text_len=8)
  hidden = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
  np.testing.assert_allclose(ctx[0, :4], hidden[0, :4], atol=1e-6)
  np.testing.assert_allclose(ctx[1, :3], hidden[1, :3], atol=1e-6)
  assert (ctx[0, 4:] == 0).all() and (ctx[1, 3:] == 0).all()
  assert (np.abs(hidden[1, 3:]) > 0).any()  # the raw encoder does compute the padded rows
  again = encode_prompts(params_of(model), tok, ["on the mat", "hi"], text_len=8, config=cfg)
  assert (again[1, 2:] == 0).all() and (np.abs(again[1, :2]) > 0).all()
  assert encode_lib._encode_jit._cache_size() == before + 1
  encode_prompts(model, tok, ["a", "b", "c"], text_len=8)
  assert encode_lib._encode_jit._cache_size() == before + 2


def test_context_rows_past_prompt_are_exact_zeros_in_golden(case_dir, case):
  cfg = case_config(case)
  model = model_from_params(cfg, umt5.convert(sources.open_state_dict(case_dir / "weights.safetensors"), cfg))
  inp = np.load(case_dir / "inputs.npz")
  ctx = np.asarray(encode_lib.encode_ids(model, inp["ids"], inp["mask"]))
  assert (ctx[1, 11:] == 0).all() and (np.abs(ctx[1, :11]) > 0).all()


def test_ids_outside_vocab_are_rejected():
  model = init_model(tiny_config())
  with pytest.raises(ValueError, match="outside the encoder's vocabulary of 128"):
    encode_lib.encode_ids(model, np.array([[5, 300]]), np.array([[1, 1]]))
