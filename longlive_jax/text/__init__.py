"""umT5 text encoder of Wan2.1: config, Flax NNX model, tokenizer and prompt encoding.

Typical use::

  from longlive_jax.convert.umt5 import load_encoder
  from longlive_jax.text import UMT5_XXL, UMT5Tokenizer, encode_prompts

  model = load_encoder("Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth", UMT5_XXL.replace(param_dtype="bfloat16"))
  tok = UMT5Tokenizer.from_folder("Wan2.1-T2V-1.3B")  # finds google/umt5-xxl/ inside
  context = encode_prompts(model, tok, ["a cat surfing a wave"])  # [1, 512, 4096], zero rows past the prompt
"""

from longlive_jax.text.config import PRESETS, UMT5_XXL, UMT5Config, get_preset, tiny_config
from longlive_jax.text.encode import encode_ids, encode_prompts
from longlive_jax.text.model import UMT5Encoder, abstract_model, init_model, model_from_params
from longlive_jax.text.tokenizer import TokenizerError, UMT5Tokenizer, clean_text

__all__ = [
  "PRESETS",
  "UMT5_XXL",
  "TokenizerError",
  "UMT5Config",
  "UMT5Encoder",
  "UMT5Tokenizer",
  "abstract_model",
  "clean_text",
  "encode_ids",
  "encode_prompts",
  "get_preset",
  "init_model",
  "model_from_params",
  "tiny_config",
]
