"""drive-mllm play over real DDS on loopback: timing, /clock, rate, remapping, unknown types, bad and cut bags."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.rosbag1 import Writer as Writer1
from rosbags.typesys import Stores, get_typestore
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String

from drive_mllm_ros.data.bags import BagError, open_writer
from drive_mllm_ros.data.player import play_bag

STORE = get_typestore(Stores.ROS2_KILTED)
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 50_000_000  # 20 Hz
COUNT = 30  # 1.45 s of bag time


def string_cdr(text: str) -> bytes:
    return bytes(STORE.serialize_cdr(STORE.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String"))


def write_bag(path: Path, storage: str = "mcap", count: int = COUNT, padding: int = 0) -> Path:
    """Strings on /chatter at 20 Hz plus a /tf message (a type without a Python package here)."""
    tf = STORE.serialize_cdr(STORE.types["tf2_msgs/msg/TFMessage"](transforms=[]), "tf2_msgs/msg/TFMessage")
    with open_writer(path, storage) as writer:
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=STORE)
        tf_connection = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=STORE)
        for i in range(count):
            writer.write(chatter, START_NS + i * PERIOD_NS, string_cdr(f"msg {i}" + " " * padding))
            writer.write(tf_connection, START_NS + i * PERIOD_NS, bytes(tf))
    return path


class Listener:
    """A real rclpy subscriber in its own context, spinning in a thread; records arrival times."""

    def __init__(self, topics: dict[str, type]) -> None:
        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("test_listener", context=self.context)
        self.received: dict[str, list[tuple[float, object]]] = {topic: [] for topic in topics}
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in topics.items():
            self.node.create_subscription(cls, topic, lambda msg, t=topic: self.received[t].append(
                (time.monotonic(), msg)), qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True
        self.thread.start()

    def _spin(self) -> None:
        while self.running:
            self.executor.spin_once(timeout_sec=0.02)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def listener_factory():
    listeners = []

    def make(topics: dict[str, type]) -> Listener:
        listeners.append(Listener(topics))
        return listeners[-1]

    yield make
    for listener in listeners:
        listener.close()


def test_cli_plays_with_original_timing_and_clock(tmp_path, listener_factory):
    bag = write_bag(tmp_path / "bag")
    listener = listener_factory({"/chatter": String, "/clock": Clock})
    command = [sys.executable, "-m", "drive_mllm_ros.cli", "play", str(bag), "--clock", "--wait-for-subscribers", "20",
               "--delay", "0.2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("skipping topic /tf") == 1 or result.stdout.count("skipping topic /tf") == 1
    deadline = time.monotonic() + 5
    while len(listener.received["/chatter"]) < COUNT and time.monotonic() < deadline:
        time.sleep(0.05)
    chatter = listener.received["/chatter"]
    assert [m.data for _, m in chatter] == [f"msg {i}" for i in range(COUNT)]
    arrivals = [t - chatter[0][0] for t, _ in chatter]
    for i, arrival in enumerate(arrivals):
        assert arrival == pytest.approx(i * PERIOD_NS / 1e9, abs=0.06)
    clocks = [m.clock.sec * 10**9 + m.clock.nanosec for _, m in listener.received["/clock"]]
    assert clocks[:COUNT] == [START_NS + i * PERIOD_NS for i in range(COUNT)]


def test_play_bag_rate_topics_remap_offset_from_a_thread(tmp_path, listener_factory):
    bag = write_bag(tmp_path / "bag", storage="sqlite3")
    listener = listener_factory({"/renamed": String})
    stats = play_bag(bag, rate=2.0, topics=["/chatter"], remap={"/chatter": "/renamed"}, start_offset=0.5,
                     wait_for_subscribers=20, delay=0.2)
    time.sleep(0.3)
    received = listener.received["/renamed"]
    assert stats.published["/renamed"] == COUNT - 10
    assert [m.data for _, m in received] == [f"msg {i}" for i in range(10, COUNT)]
    span = received[-1][0] - received[0][0]
    assert span == pytest.approx((COUNT - 11) * PERIOD_NS / 1e9 / 2, abs=0.08)


def test_stop_event_ends_a_looping_play(tmp_path):
    bag = write_bag(tmp_path / "bag", count=4)
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(stats=play_bag(bag, loop=True, stop_event=stop)))
    thread.start()
    time.sleep(1.5)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert result["stats"].loops >= 2


def test_ros1_bag_plays(tmp_path, listener_factory):
    ros1_store = get_typestore(Stores.ROS1_NOETIC)
    path = tmp_path / "old.bag"
    with Writer1(path) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=ros1_store)
        for i in range(5):
            message = ros1_store.types["std_msgs/msg/String"](data=f"ros1 {i}")
            writer.write(connection, START_NS + i * PERIOD_NS,
                         bytes(ros1_store.serialize_ros1(message, "std_msgs/msg/String")))
    listener = listener_factory({"/chatter": String})
    play_bag(path, wait_for_subscribers=20, delay=0.2)
    time.sleep(0.3)
    assert [m.data for _, m in listener.received["/chatter"]] == [f"ros1 {i}" for i in range(5)]


def test_truncated_bag_plays_what_is_readable_then_fails(tmp_path, listener_factory):
    bag = write_bag(tmp_path / "bag", count=200, padding=20_000)  # 4 MB: rosbags writes 1 MiB chunks
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    listener = listener_factory({"/chatter": String})
    with pytest.raises(BagError, match="truncated"):
        play_bag(bag, rate=20.0, wait_for_subscribers=20, delay=0.2)
    time.sleep(0.3)
    got = len(listener.received["/chatter"])
    assert 10 < got < 200


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such file"),
    (lambda p: (p / "x.txt").write_text("hello") and p / "x.txt", "not a ROS 2 bag folder"),
    (lambda p: p, "not a ROS 2 bag folder"),
])
def test_unknown_or_unreadable_bags(tmp_path, make, message):
    with pytest.raises(BagError, match=message):
        play_bag(make(tmp_path))


def test_garbage_mcap_is_a_clear_error(tmp_path):
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file at all" * 10)
    with pytest.raises(BagError, match="junk.mcap"):
        play_bag(tmp_path / "junk.mcap")
