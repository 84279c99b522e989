"""Closed loop for one scenario: simulator + drive_mllm node + reference planner.

    ros2 launch drive_mllm_ros sim.launch.py scenario:=pedestrian_crossing planner:=node model_path:=/path/to/ckpt

`drive-mllm closed-loop` does the same for pip-only installs (every scenario, planner comparison, scored
report); the simulator and the planner are `drive-mllm sim` and `drive-mllm planner` (--ros-args as here).
"""

import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from drive_mllm_ros.bringup import default_model
from drive_mllm_ros.drivelm import Q_TRAJECTORY
from drive_mllm_ros.paths import EMBEDDED_WORLD_SIZE, default_params_file
from drive_mllm_ros.sim.closed_loop import DEFAULT_SEED, ros_args
from drive_mllm_ros.sim.simulator import SimConfig, Simulator

ARGUMENTS = {
    "scenario": (
        "lead_brake",
        "world preset: lead_brake, pedestrian_crossing, cut_in, stopped_obstacle, turn_left, ...",
    ),
    "seed": (str(DEFAULT_SEED), "scenario seed"),
    "planner": ("node", "node (drive_mllm outputs), oracle (ground truth) or blind (route only)"),
    "mode": ("lockstep", "lockstep (the world waits for answers within a budget) or realtime"),
    "model_path": ("", "checkpoint for the node; empty = the embedded student"),
    "condition": ("clear", "what the cameras see: clear, night, rain or fog"),
    "width": (str(EMBEDDED_WORLD_SIZE[0]), "rendered image width (the node's image_width); default: the embedded student's"),
    "height": (str(EMBEDDED_WORLD_SIZE[1]), "rendered image height"),
    "camera_rate": ("2.0", "Hz of camera sweeps"),
}


def launch_setup(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    cruise = Simulator(SimConfig(value["scenario"], int(value["seed"]))).cruise_speed
    python = [sys.executable, "-m", "drive_mllm_ros.cli"]
    with_node = value["planner"] == "node"
    sim = {
        "scenario": value["scenario"],
        "seed": int(value["seed"]),
        "mode": value["mode"],
        "condition": value["condition"],
        "image_width": int(value["width"]),
        "image_height": int(value["height"]),
        "camera_rate": float(value["camera_rate"]),
        "answer_topic": "/drive_mllm/scene" if with_node else "",
    }
    planner = {
        "source": value["planner"],
        "cruise_speed": round(cruise, 3),
        "image_width": int(value["width"]),
        "image_height": int(value["height"]),
    }
    actions = [
        ExecuteProcess(cmd=[*python, "sim", *ros_args(sim)], output="screen"),
        ExecuteProcess(cmd=[*python, "planner", *ros_args(planner)], output="screen"),
    ]
    if with_node:
        params_file = str(default_params_file())
        actions.append(
            Node(
                package="drive_mllm_ros",
                executable="drive_mllm_node",
                name="drive_mllm",
                output="screen",
                parameters=[
                    params_file,
                    {
                        "model_path": value["model_path"] or default_model(params_file),
                        "image_width": int(value["width"]),
                        "image_height": int(value["height"]),
                        "image_qos_reliability": "reliable",
                        "use_sim_time": True,
                        "questions.trajectory": [Q_TRAJECTORY],
                    },
                ],
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=launch_setup)])
