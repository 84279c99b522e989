"""`drive-mllm bringup --bag`: the pip-only launch equivalent brings up node + player; Ctrl-C ends both."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from std_msgs.msg import String

from drive_mllm_ros.cli import main as cli

from rosutil import RosHarness, wait_for, write_params


def test_bringup_replays_a_bag_into_the_node_and_stops_cleanly(tiny_per_view_checkpoint, tmp_path):
    assert (
        cli(
            [
                "world",
                "--out",
                str(tmp_path / "w"),
                "--scenes",
                "1",
                "--seed",
                "5",
                "--duration",
                "3",
                "--width",
                "320",
                "--height",
                "180",
            ]
        )
        == 0
    )
    assert (
        cli(["convert-nuscenes", "--dataroot", str(tmp_path / "w" / "nuscenes"), "--out", str(tmp_path / "bags")]) == 0
    )
    bag = next((tmp_path / "bags").iterdir())
    params = write_params(
        tmp_path / "p.yaml",
        image_width=320,
        image_height=180,
        image_qos_reliability="reliable",
        max_new_tokens__perception=4,
        max_new_tokens__prediction=2,
        max_new_tokens__planning=2,
        max_new_tokens__behavior=2,
    )
    ros = RosHarness()
    ros.subscribe("/drive_mllm/scene", String)
    log = (tmp_path / "bringup.log").open("w")
    bringup = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drive_mllm_ros.cli",
            "bringup",
            "--params-file",
            str(params),
            "--model-path",
            str(tiny_per_view_checkpoint),
            "--bag",
            str(bag),
            "--loop",
            "true",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(lambda: ros.messages("/drive_mllm/scene"), 120, step=0.5), (
            tmp_path / "bringup.log"
        ).read_text()
        scene = json.loads(ros.messages("/drive_mllm/scene")[-1].data)
        assert scene["frame_id"] == "CAM_FRONT" and scene["layout"] == "per_view"
        bringup.send_signal(signal.SIGINT)
        assert bringup.wait(timeout=30) == 0
        children = subprocess.run(["pgrep", "-f", str(tiny_per_view_checkpoint)], capture_output=True, text=True)
        assert children.stdout.strip() == "", "bringup left a node process behind"
    finally:
        if bringup.poll() is None:
            bringup.kill()
        ros.close()
