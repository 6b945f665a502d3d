"""The ``longlive-jax`` command.

Subcommands:
  convert   upstream Wan / LongLive DiT checkpoint (+ LoRA) -> Orbax checkpoint folder
  inspect   print the config and parameter count of a converted checkpoint
  parity    run the golden reference cases and report max abs errors
  generate  stream one prompt's video latents block by block
  interactive  stream with prompt switches (jsonl script or live stdin) and KV-recache
  train     train a stage (vae, teacher, ode-init, forced, self-forcing, streaming-long) from a YAML config
  toyworld  the toy world: data preparation, ODE pairs, model assembly, ground-truth rendering
  serve     the studio: steer a live video from a web page
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from longlive_jax import cli_stream
from longlive_jax.config import PRESETS, ConfigError
from longlive_jax.convert.errors import CheckpointError
from longlive_jax.stream.run import StreamFailure, StreamInputError
from longlive_jax.text.tokenizer import TokenizerError
from longlive_jax.toyworld.grammar import PromptError


def _add_convert(sub):
  p = sub.add_parser(
    "convert",
    help="convert a Wan / LongLive DiT checkpoint (and optionally a LoRA) into an Orbax checkpoint",
    description=(
      "Convert a Wan2.1 DiT checkpoint into a longlive-jax Orbax checkpoint folder. SRC is a Wan model folder, "
      "a .safetensors file, a sharded checkpoint's .safetensors.index.json, or a LongLive / Self-Forcing .pt "
      "container ({'generator' | 'generator_ema' | 'model': state_dict}). Conversion runs tensor by tensor."
    ),
  )
  p.add_argument("src", nargs="?", help="DiT weights: folder, .safetensors, .safetensors.index.json, or .pt/.pth")
  p.add_argument(
    "--wan-dir",
    help="whole model: the Wan2.1 folder (VAE, umT5 encoder, tokenizer; and the DiT when no --longlive-dir)",
  )
  p.add_argument("--longlive-dir", help="whole model: the LongLive folder (models/longlive_base.pt, models/lora.pt)")
  p.add_argument("--no-lora", action="store_true", help="whole model: do not merge LongLive's lora.pt")
  p.add_argument("--ema", action="store_true", help="whole model: use the generator_ema weights of the container")
  p.add_argument("--text-dtype", default="bfloat16", choices=["float32", "bfloat16"], help="umT5 storage dtype")
  p.add_argument("--out", required=True, help="output checkpoint folder (must not exist unless --overwrite)")
  p.add_argument(
    "--config",
    help=f"model config: a preset ({', '.join(PRESETS)}) or a JSON file (ours or upstream config.json); "
    "default: config.json beside the weights, else inferred from tensor shapes",
  )
  p.add_argument("--num-heads", type=int, help="attention heads (overrides the config; needed when head_dim != 128)")
  p.add_argument(
    "--container", choices=["generator", "generator_ema", "model"], help="entry of a .pt container to read"
  )
  p.add_argument("--lora", help="PEFT LoRA file (LongLive lora.pt, bare PEFT dict, or adapter_model.safetensors)")
  p.add_argument("--lora-key", choices=["generator_lora", "critic_lora"], help="entry of a LongLive LoRA container")
  p.add_argument("--lora-alpha", type=float, help="LoRA alpha (default: adapter_config.json beside it, else = rank)")
  p.add_argument(
    "--lora-mode",
    choices=["merge", "separate"],
    default="merge",
    help="merge W + (alpha/r) B@A into the weights, or keep the adapter separate for training",
  )
  p.add_argument("--dtype", choices=["float32", "bfloat16"], help="storage dtype of the parameters (default float32)")
  p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
  p.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_convert_args(a) -> None:
  """The command line's own values, checked before anything is read (the input files are the converter's)."""
  import math
  from pathlib import Path

  if a.wan_dir:
    ignored = [f for f, v in (("--lora", a.lora), ("--lora-key", a.lora_key), ("--container", a.container),
                              ("--num-heads", a.num_heads), ("--lora-alpha", a.lora_alpha)) if v is not None]  # fmt: skip
    ignored += ["--lora-mode"] if a.lora_mode != "merge" else []
    if ignored:
      raise ConfigError(
        f"{', '.join(ignored)}: go(es) with SRC (a DiT checkpoint), not with --wan-dir (the whole model)"
      )
  else:
    ignored = [f for f, v in (("--no-lora", a.no_lora), ("--ema", a.ema)) if v]
    if ignored:
      raise ConfigError(f"{', '.join(ignored)}: go(es) with --wan-dir (the whole model), not with SRC")
  if a.num_heads is not None and a.num_heads < 1:
    raise ConfigError(f"--num-heads {a.num_heads}: must be at least 1")
  if a.lora_alpha is not None and not (math.isfinite(a.lora_alpha) and a.lora_alpha > 0):
    raise ConfigError(f"--lora-alpha {a.lora_alpha:g}: must be a positive number")
  out = Path(a.out)
  if out.exists() and not out.is_dir():
    raise ConfigError(f"--out {out}: is a file; the output is a checkpoint folder")
  for d in out.parents:
    if d.exists():
      if not d.is_dir():
        raise ConfigError(f"--out {out}: {d} is a file, not a folder")
      break
  if a.config and a.config.lower() not in PRESETS and Path(a.config).is_file():
    from longlive_jax.train.config import check_model_fields

    try:
      d = json.loads(Path(a.config).read_text())
    except (OSError, ValueError) as e:
      raise ConfigError(f"--config {a.config}: not a readable JSON file ({e})") from e
    if not isinstance(d, dict):
      raise ConfigError(f"--config {a.config}: holds {type(d).__name__}, not a JSON object of config fields")
    check_model_fields(d, f"--config {a.config}: ", strict=True)


def _cmd_convert(a) -> int:
  from longlive_jax.convert.run import convert_dit

  _check_convert_args(a)

  if a.wan_dir:
    if a.src:
      raise ConfigError("give either SRC (DiT only) or --wan-dir (whole model), not both")
    from longlive_jax.convert.whole import convert_model

    w = convert_model(
      wan_dir=a.wan_dir,
      longlive_dir=a.longlive_dir,
      out=a.out,
      config=a.config,
      lora=not a.no_lora,
      ema=a.ema,
      dtype=a.dtype,
      text_dtype=a.text_dtype,
      overwrite=a.overwrite,
      progress=not a.quiet,
    )
    print(f"wrote {w.out}")
    for k, v in vars(w.inputs).items():
      print(f"  {k}: {v}")
    print("  parameters: " + ", ".join(f"{k} {v:,}" for k, v in w.num_params.items()))
    print(f"  time: {w.seconds:.1f} s, peak memory: {w.peak_rss_mb:.0f} MB")
    return 0
  if not a.src:
    raise ConfigError("convert needs SRC (a DiT checkpoint) or --wan-dir DIR [--longlive-dir DIR] (the whole model)")
  if a.longlive_dir:
    raise ConfigError("--longlive-dir goes with --wan-dir (the whole model)")

  s = convert_dit(
    a.src,
    a.out,
    config=a.config,
    container=a.container,
    lora=a.lora,
    lora_container=a.lora_key,
    lora_alpha=a.lora_alpha,
    lora_mode=a.lora_mode,
    dtype=a.dtype,
    num_heads=a.num_heads,
    overwrite=a.overwrite,
    progress=not a.quiet,
  )
  print(f"wrote {s.out}")
  print(f"  config: {s.config_source}")
  print(f"  tensors read: {s.num_tensors}, parameters: {s.num_params:,}")
  if s.lora:
    print(
      f"  LoRA: rank {s.lora['rank']}, alpha {s.lora['alpha']} ({s.lora['alpha_source']}), "
      f"{s.lora['modules']} modules, {s.lora['mode']}"
    )
  print(f"  time: {s.seconds:.1f} s, peak memory: {s.peak_rss_mb:.0f} MB")
  return 0


def _add_inspect(sub):
  p = sub.add_parser(
    "inspect",
    help="show the config and size of a converted checkpoint",
    description="Print the config, parameter count and LoRA info of a longlive-jax checkpoint folder.",
  )
  p.add_argument("checkpoint", help="checkpoint folder written by 'longlive-jax convert'")


def _count_params(folder) -> int | None:
  """Parameters of one Orbax item folder, from its array metadata (nothing is loaded); None if unreadable."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  try:
    m = ocp.StandardCheckpointer().metadata(str(folder))
  except Exception:  # noqa: BLE001 (a component saved some other way: no count rather than a crash)
    return None
  leaves = jax.tree.leaves(getattr(m, "item_metadata", m), is_leaf=lambda x: hasattr(x, "shape"))
  return sum(int(np.prod(x.shape)) for x in leaves)


def _cmd_inspect(a) -> int:
  from pathlib import Path

  from longlive_jax import checkpoint

  info = checkpoint.read_meta(a.checkpoint)
  print(json.dumps(info, indent=2))
  root = Path(a.checkpoint)
  parts = [("dit", "params")] if info.get("config") is not None else []
  parts += [("lora adapter", "lora")] if info.get("has_adapter") else []
  parts += [(name, name) for name in info.get("components") or {}]
  counts = {name: _count_params(root / sub) for name, sub in parts}
  text = ", ".join(f"{k} {v:,}" if v is not None else f"{k} unknown" for k, v in counts.items()) or "none"
  print(f"parameters: {text}")
  return 0


def _add_parity(sub):
  from longlive_jax.parity import add_parser

  add_parser(sub)


def _cmd_parity(a) -> int:
  from longlive_jax.parity import cmd_parity

  return cmd_parity(a)


def _cmd_toyworld(a) -> int:
  from longlive_jax.toyworld.cli import cmd_toyworld

  return cmd_toyworld(a)


def _cmd_serve(a) -> int:
  from longlive_jax.studio.cli import cmd_serve

  return cmd_serve(a)


def _cmd_train(a) -> int:
  from longlive_jax.train.cli import cmd_train

  return cmd_train(a)


COMMANDS = {
  "convert": _cmd_convert,
  "inspect": _cmd_inspect,
  "parity": _cmd_parity,
  "generate": cli_stream.cmd_generate,
  "interactive": cli_stream.cmd_interactive,
  "train": _cmd_train,
  "toyworld": _cmd_toyworld,
  "serve": _cmd_serve,
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="longlive-jax", description="LongLive (real-time interactive long video generation) in JAX/Flax."
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True
  _add_convert(sub)
  _add_inspect(sub)
  _add_parity(sub)
  cli_stream.add_generate(sub)
  cli_stream.add_interactive(sub)
  from longlive_jax.train.cli import add_train

  add_train(sub)
  from longlive_jax.toyworld.cli import add_toyworld

  add_toyworld(sub)
  from longlive_jax.studio.cli import add_serve

  add_serve(sub)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return COMMANDS[args.command](args)
  except (CheckpointError, ConfigError, StreamInputError, PromptError, TokenizerError) as e:
    print(f"longlive-jax {args.command}: error: {e}", file=sys.stderr)
    return 2
  except StreamFailure as e:  # the stream went wrong (e.g. NaN latents); what came before was written
    print(f"longlive-jax {args.command}: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM in generate / interactive (stream.run.Interrupted)
    signum = getattr(e, "signum", signal.SIGINT)
    print(f"longlive-jax {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    return 128 + signum
