"""Test-wide DDS isolation: loopback discovery, a free ROS_DOMAIN_ID for this run, logs in a temp folder.

Set before any test imports rclpy; child processes inherit it.
"""

import os

from drive_mllm_ros.ros_env import isolate_ros

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # forced for tests, whatever the shell says
isolate_ros(fresh_domain=True)  # a free ROS_DOMAIN_ID for this run and ROS_LOG_DIR in a temp folder

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A random-init InternVL checkpoint with 224-px tiles (64 tokens each), written once by `drive-mllm tiny-model`.

    Both layouts can load it: the layout, not the checkpoint, decides the tiling.
    """
    from drive_mllm_ros.tiny_model import main as tiny_model_main

    out = tmp_path_factory.mktemp("tiny_checkpoint")
    assert tiny_model_main(["--out", str(out), "--tile-size", "224", "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_per_view_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A random-init per_view checkpoint with 224-px tiles: six 64-token views, the quickest for node tests."""
    from drive_mllm_ros.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny_per_view") / "tiny", layout="per_view", tile_size=224)
