"""`drive-mllm`: one console script, one subcommand per job.

Subcommands are imported lazily so that light commands (world, play, eval) start without torch.
Each command module exposes ``main(argv: list[str]) -> int`` with its own argparse parser.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("drive_mllm_ros.demo", "the whole loop: world -> bag -> node -> recorded answers -> scored report"),
    "node": ("drive_mllm_ros.node", "run the drive_mllm node (accepts --ros-args ...)"),
    "bringup": ("drive_mllm_ros.bringup", "what bringup.launch.py does, for pip-only installs"),
    "tiny-model": ("drive_mllm_ros.tiny_model", "write a random-init InternVL checkpoint"),
    "world": ("drive_mllm_ros.data.synthetic", "synthetic nuScenes dataroot + DriveLM JSON with ground truth"),
    "convert-nuscenes": ("drive_mllm_ros.data.convert", "nuScenes dataroot -> one ROS 2 bag per scene"),
    "play": ("drive_mllm_ros.data.player", "replay a ROS 2 / ROS 1 bag with rclpy (rate, loop, /clock)"),
    "record": ("drive_mllm_ros.data.recorder", "record topics into a ROS 2 bag (MCAP or sqlite3)"),
    "bench": ("drive_mllm_ros.bench", "benchmarks that print measured figures"),
    "train": ("drive_mllm_ros.train", "train the student: SFT or distillation (torchrun/accelerate ready)"),
    "convert-checkpoint": ("drive_mllm_ros.train.convert_checkpoint", "original InternVL2 checkpoint -> native layout"),
    "sim": ("drive_mllm_ros.sim.sim_node", "the synthetic world as a ROS 2 simulator node (accepts --ros-args ...)"),
    "planner": ("drive_mllm_ros.sim.planner_node", "reference planner node: node outputs, ground truth or blind"),
    "closed-loop": ("drive_mllm_ros.sim.closed_loop", "sim + node + planner per scenario, CARLA-style scored report"),
    "eval": ("drive_mllm_ros.evaluation.cli", "DriveLM challenge evaluation: prepare a test file, score predictions"),
    "label": ("drive_mllm_ros.label", "answers for recorded hard cases: a teacher checkpoint or the ground truth"),
    "gate": ("drive_mllm_ros.evaluation.gate", "accept a candidate checkpoint only if it gains on a target condition"),
    "field-loop": ("drive_mllm_ros.field_loop", "issue 9's loop: night bags -> hard cases -> label -> adapt -> gate"),
}


def usage() -> str:
    lines = ["usage: drive-mllm COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<20}{help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"drive-mllm: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
