"""`drive-mllm bench train`: training throughput and peak memory of `drive-mllm train` on this machine.

Default: the CPU recipe (config/train/cpu_synthetic.yaml) with a tiny student on a small synthetic world.
`--random-init PRESET` (GPU): the 1B paper recipe (config/train/internvl3_1b_drivelm.yaml: stitched, 12 tiles,
bf16, activation checkpointing) with random-init weights of the preset's real sizes on full-size synthetic
frames; it needs a CUDA device (not available on the CPU-only development machine, so it is untested there).
Both go through the same `run()` as real training; steps after the warm-up are timed, medians printed.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..data.synthetic import WorldOptions, generate
from ..paths import share_dir
from ..tiny_model import write_tiny_model
from ..train.arguments import parse_config
from ..train.trainer import run


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (data loading included)."""

    def __init__(self):
        self.durations: list[float] = []
        self.started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.durations.append(time.perf_counter() - self.started)


def recipe_overrides(args: argparse.Namespace, work: Path) -> tuple[Path, list[str]]:
    """The recipe file and the overrides that point it at the synthetic world and a short, unsaved run."""
    drivelm = work / "world" / "drivelm"
    common = [
        f"data.drivelm_json={drivelm / 'v1_1_train_nus.json'}",
        "data.eval_json=''",
        "data.general_json=''",
        f"training.output_dir={work / 'run'}",
        f"training.max_steps={args.steps}",
        "training.save_strategy=no",
        "training.eval_strategy=no",
        "training.disable_tqdm=true",
        "training.report_to=none",
        f"training.logging_steps={args.steps}",
    ]
    recipes = share_dir() / "config" / "train"
    if args.random_init:
        return recipes / "internvl3_1b_drivelm.yaml", [
            *common,
            "model.path=''",
            f"model.random_init={args.random_init}",
            "data.image_root=''",
            "training.dataloader_num_workers=2",
        ]
    student = write_tiny_model(work / "student", "per_view", tile_size=224)
    return recipes / "cpu_synthetic.yaml", [*common, f"model.path={student}", "data.camera_image_size=[400, 225]"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drive-mllm bench train", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps to run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    parser.add_argument("--random-init", metavar="PRESET", help="GPU: the 1B recipe with random-init weights of PRESET")
    args = parser.parse_args(argv)
    if args.random_init and not torch.cuda.is_available():
        parser.error("--random-init: the 1B recipe runs bf16 on a CUDA GPU; none is available here")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as folder:
        work = Path(folder)
        size = (1600, 900) if args.random_init else (400, 225)
        generate(WorldOptions(work / "world", scenes=2, seed=0, duration=3.0, width=size[0], height=size[1]))
        recipe, overrides = recipe_overrides(args, work)
        config = parse_config(recipe, overrides)
        timer = StepTimer()
        torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
        run(config, callbacks=[timer])
    timed = timer.durations[args.warmup :] or timer.durations
    step = statistics.median(timed)
    batch = config.training.get("per_device_train_batch_size", 8) * config.training.get(
        "gradient_accumulation_steps", 1
    )
    print(
        f"recipe: {recipe.name} ({config.data.layout}, max {config.data.max_tiles} tiles, "
        f"{config.model.random_init or 'tiny student'}); torch threads {torch.get_num_threads()}"
    )
    print(
        f"step time: median {step * 1000:.0f} ms over {len(timed)} steps (min {min(timed) * 1000:.0f}, "
        f"max {max(timed) * 1000:.0f}); throughput {batch / step:.2f} samples/s at {batch} samples per step"
    )
    print(f"peak host memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB on {torch.cuda.get_device_name()}")
    return 0
