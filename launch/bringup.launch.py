"""Bring up the drive_mllm node, optionally replaying a bag alongside.

    ros2 launch drive_mllm_ros bringup.launch.py model_path:=/path/to/checkpoint bag:=/path/to/scene.mcap

`drive-mllm bringup` does the same for pip-only installs, with the same arguments
(drive_mllm_ros/bringup.py holds the shared argument list and command builders).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from drive_mllm_ros.bringup import LAUNCH_ARGUMENTS, node_overrides, player_command
from drive_mllm_ros.paths import default_params_file


def launch_setup(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    params_file = value["params_file"] or str(default_params_file())
    actions = [
        Node(
            package="drive_mllm_ros",
            executable="drive_mllm_node",
            name="drive_mllm",
            output="screen",
            parameters=[
                params_file,
                node_overrides(value["model_path"], value["camera_transport"], value["use_sim_time"]),
            ],
        )
    ]
    if value["bag"]:
        actions.append(
            ExecuteProcess(
                cmd=player_command(value["bag"], value["rate"], value["loop"], value["use_sim_time"]), output="screen"
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=launch_setup)])
