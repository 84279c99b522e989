"""`drive-mllm bringup`: what launch/bringup.launch.py does, for installs without ros2 launch.

Starts the node (and optionally the bag player) as child processes with the same arguments as the
launch file, forwards Ctrl-C to them and exits with the node's status.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from .paths import default_params_file, embedded_model_dir
from .ros_env import isolate_ros

# name -> (default, help); shared with launch/bringup.launch.py
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "params_file": ("", "node parameters (YAML); empty = the package's config/drive_mllm.yaml"),
    "model_path": ("", "checkpoint folder; empty = the params file's model_path (embedded student)"),
    "camera_transport": ("compressed", "compressed (sensor_msgs/CompressedImage) or raw (sensor_msgs/Image)"),
    "use_sim_time": ("false", "use /clock; with a bag, the player publishes it"),
    "bag": ("", "optional ROS 2 / ROS 1 bag to replay alongside (drive-mllm play)"),
    "rate": ("1.0", "bag replay rate"),
    "loop": ("false", "replay the bag in a loop"),
}
TINY_MODEL_CACHE = Path.home() / ".cache" / "drive_mllm_ros" / "tiny-model-per-view-224"


def is_true(value: str | bool) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def node_overrides(model_path: str, camera_transport: str, use_sim_time: str | bool) -> dict[str, object]:
    overrides: dict[str, object] = {"image_transport": camera_transport, "use_sim_time": is_true(use_sim_time)}
    if model_path:
        overrides["model_path"] = model_path
    return overrides


def player_command(bag: str, rate: str, loop: str | bool, clock: str | bool) -> list[str]:
    # Wait (bounded) for the node's subscriptions, or the first seconds of the bag go unheard.
    command = [
        sys.executable,
        "-m",
        "drive_mllm_ros.cli",
        "play",
        bag,
        "--rate",
        str(rate),
        "--wait-for-subscribers",
        "30",
    ]
    return command + ["--loop"] * is_true(loop) + ["--clock"] * is_true(clock)


def default_model(params_file: str) -> str:
    """The params file's model, else the embedded student, else (until one ships) a tiny random model.

    The tiny model is written once to the user's cache, so the main job runs on a fresh machine.
    """
    values = yaml.safe_load(Path(params_file).read_text()) or {}
    configured = next((v.get("ros__parameters", {}).get("model_path") for v in values.values()), "")
    if configured:
        return configured
    if (embedded_model_dir() / "config.json").is_file():
        return str(embedded_model_dir())
    if not (TINY_MODEL_CACHE / "config.json").is_file():
        from .tiny_model import write_tiny_model

        print(f"drive-mllm: no embedded student yet; writing a tiny random model to {TINY_MODEL_CACHE}")
        write_tiny_model(TINY_MODEL_CACHE, layout="per_view", tile_size=224)  # small and quick on a CPU
    return str(TINY_MODEL_CACHE)


def node_command(params_file: str, overrides: dict[str, object]) -> list[str]:
    command = [sys.executable, "-m", "drive_mllm_ros.node", "--ros-args", "--params-file", params_file]
    for name, value in overrides.items():
        command += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    return command


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drive-mllm bringup", description=__doc__.splitlines()[0])
    for name, (default, text) in LAUNCH_ARGUMENTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default, help=text)
    args = parser.parse_args(argv)
    args.params_file = args.params_file or str(default_params_file())
    model_path = args.model_path or default_model(args.params_file)
    isolate_ros()
    children = [
        subprocess.Popen(
            node_command(args.params_file, node_overrides(model_path, args.camera_transport, args.use_sim_time))
        )
    ]
    if args.bag:
        children.append(subprocess.Popen(player_command(args.bag, args.rate, args.loop, args.use_sim_time)))
    try:
        return children[0].wait()
    except KeyboardInterrupt:
        for child in children:
            child.send_signal(signal.SIGINT)
        return children[0].wait(timeout=15)
    finally:
        for child in children[1:]:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
                child.wait(timeout=10)
