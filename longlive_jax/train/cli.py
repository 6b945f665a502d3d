"""``longlive-jax train CONFIG [key=value ...]``: run or resume one training stage.

The lead CLI registers it with :func:`add_train` and dispatches to :func:`cmd_train`. User mistakes
(bad config keys or values, unknown stage, mesh that does not fit, missing data, a checkpoint of
another run) raise :class:`TrainError`, a :class:`~longlive_jax.config.ConfigError` (so a
``ValueError``) whose message names the file, key or option at fault.
"""

from __future__ import annotations

import argparse
import json
import sys

from longlive_jax.config import ConfigError

USAGE_EXAMPLES = """examples:
  longlive-jax train configs/tiny_teacher.yaml
  longlive-jax train configs/tiny_teacher.yaml steps=50 optim.lr=3e-4 run_dir=runs/t1
  longlive-jax train configs/longlive_train_init.yaml mesh.fsdp=8 log.format=tensorboard
  longlive-jax train configs/tiny_teacher.yaml --print-config
Running the same command again resumes from the latest checkpoint in <run_dir>/checkpoints.
"""


class TrainError(ConfigError):
  """A training run that cannot start or continue; the message says why and names the key / file."""


def add_train(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
    "train",
    help="train a stage (vae, teacher, ode-init, forced, self-forcing, streaming-long) from a YAML config",
    description=(
      "Train (or resume) one stage from a YAML config (see configs/README.md). Overrides use dotted keys, "
      "e.g. optim.lr=1e-5 mesh.fsdp=4 checkpoint.interval=100; values are YAML scalars, type-checked."
    ),
    epilog=USAGE_EXAMPLES,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("config", metavar="CONFIG", help="train config YAML file")
  p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of config keys")
  p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
  return p


def cmd_train(args: argparse.Namespace) -> int:
  from longlive_jax import sharding
  from longlive_jax.data.report import DataError
  from longlive_jax.train import checkpointing, stages
  from longlive_jax.train.config import load_config, to_dict

  errors = (ValueError, FileNotFoundError)
  try:
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
      print(json.dumps(to_dict(cfg), indent=2))
      return 0
    d = cfg.distributed
    sharding.initialize_distributed(
      enabled=d.initialize,
      coordinator_address=d.coordinator_address,
      num_processes=d.num_processes,
      process_id=d.process_id,
    )
    from longlive_jax.train.loop import train

    result = train(cfg)
  except TrainError:
    raise
  except (
    ConfigError,
    stages.StageError,
    sharding.MeshError,
    checkpointing.CheckpointMismatchError,
    DataError,
  ) as e:
    raise TrainError(str(e)) from e
  except errors as e:
    if type(e).__module__.startswith("longlive_jax"):
      raise TrainError(str(e)) from e
    raise
  resumed = "" if result.resumed_from is None else f" (resumed from step {result.resumed_from})"
  metrics = " ".join(f"{k}={v:.6g}" for k, v in result.last_metrics.items())
  print(f"train {cfg.stage}: step {result.step}{resumed} {metrics}".rstrip(), file=sys.stderr)
  print(f"  checkpoints: {result.checkpoint_dir}", file=sys.stderr)
  if result.export_dir is not None:
    print(f"  export: {result.export_dir}", file=sys.stderr)
  return 0


def main(argv: list[str] | None = None) -> int:
  """``python -m longlive_jax.train.cli CONFIG [key=value ...]`` (the same as ``longlive-jax train``)."""
  parser = argparse.ArgumentParser(prog="longlive-jax")
  sub = parser.add_subparsers(dest="command", required=True)
  add_train(sub)
  args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
  try:
    return cmd_train(args)
  except TrainError as e:
    print(f"longlive-jax train: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as e:
    print(f"longlive-jax train: interrupted: {e}", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
