"""`drive-mllm bench NAME`: benchmarks that print measured figures and ratios (never timed tests)."""

from __future__ import annotations

import importlib
import sys

# name -> (module with main(argv) -> int, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "preprocess": ("drive_mllm_ros.bench.preprocess", "six 1600x900 JPEGs to model tensors: ours vs processor"),
    "train": ("drive_mllm_ros.bench.train", "training samples/s and peak memory (CPU recipe; --random-init on GPU)"),
    "model": ("drive_mllm_ros.bench.model", "six cameras, three questions: cached-prefix fast path vs plain generate"),
    "data": ("drive_mllm_ros.bench.data", "world images/s, conversion msg/s, player rate and drift (6 cams, 12 Hz)"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        lines = ["usage: drive-mllm bench NAME [ARGS...]", "", "benchmarks:"]
        lines += [f"  {name:<14}{help_text}" for name, (_, help_text) in BENCHMARKS.items()]
        print("\n".join(lines), file=sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return int(importlib.import_module(BENCHMARKS[argv[0]][0]).main(argv[1:]) or 0)
