"""drive-mllm record over real DDS: stops after --count, and closes a readable bag on SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rosbags.highlevel import AnyReader
from std_msgs.msg import String


class Talker:
    def __init__(self, topic: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("test_talker", context=self.context)
        self.publisher = self.node.create_publisher(String, topic, 10)
        self.sent = 0

    def publish_for(self, seconds: float, period: float = 0.05) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.publisher.publish(String(data=f"scene {self.sent}"))
            self.sent += 1
            time.sleep(period)

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def start_recorder(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "drive_mllm_ros.cli", "record", "--out", str(out),
                             "/drive_mllm/scene", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())


def read_strings(bag: Path) -> list[str]:
    with AnyReader([bag]) as reader:
        assert [c.msgtype for c in reader.connections] == ["std_msgs/msg/String"]
        return [reader.deserialize(data, c.msgtype).data for c, _, data in reader.messages()]


def test_record_stops_after_count(tmp_path):
    talker = Talker("/drive_mllm/scene")
    recorder = start_recorder(tmp_path / "bag", "--count", "5")
    try:
        deadline = time.monotonic() + 30
        while recorder.poll() is None and time.monotonic() < deadline:
            talker.publish_for(0.5)
        assert recorder.wait(timeout=5) == 0, recorder.stderr.read()
    finally:
        talker.close()
    strings = read_strings(tmp_path / "bag")
    assert len(strings) == 5 and all(s.startswith("scene ") for s in strings)


def test_record_closes_the_bag_on_sigint(tmp_path):
    talker = Talker("/drive_mllm/scene")
    recorder = start_recorder(tmp_path / "bag", "--storage", "sqlite3")
    try:
        talker.publish_for(4.0)
        recorder.send_signal(signal.SIGINT)
        assert recorder.wait(timeout=10) == 0, recorder.stderr.read()
    finally:
        talker.close()
    assert (tmp_path / "bag" / "metadata.yaml").is_file()
    assert len(read_strings(tmp_path / "bag")) > 5
