"""`drive-mllm train --config FILE.yaml [section.key=value ...]`: domain adaptation and distillation of the student.

Also `python -m drive_mllm_ros.train ...`, `torchrun --nproc_per_node N -m drive_mllm_ros.train ...` and
`accelerate launch -m drive_mllm_ros.train ...`: the Hugging Face Trainer takes the distributed setup from the
launcher. Example configs: config/train/*.yaml.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    from .arguments import ConfigError, parse_config
    from .data import DataError
    from .distill import TokenizerMismatchError

    parser = argparse.ArgumentParser(prog="drive-mllm train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training YAML (see config/train/)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. training.max_steps=10")
    args = parser.parse_args(argv)
    try:
        config = parse_config(args.config, args.overrides)
        from .trainer import run

        target = run(config)
    except (ConfigError, DataError, TokenizerMismatchError, FileNotFoundError) as error:
        print(f"drive-mllm train: {error}", file=sys.stderr)
        return 2
    print(f"drive-mllm train: servable checkpoint in {target}")
    return 0
