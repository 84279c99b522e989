"""`drive-mllm bench data [world|convert|play ...]`: world rendering rate, conversion rate, player timing.

- world: renders a synthetic scene at full size and prints images per second.
- convert: converts that dataroot to an MCAP bag and prints messages per second.
- play: plays six 12 Hz CompressedImage topics (a rendered JPEG, nuScenes-like staggered stamps) from a
  subprocess at ``--rate 1`` to a subscriber here over DDS, and prints the sustained rate per topic and
  the drift of arrival times against bag time (slope over the run, last-minus-first offset).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..cameras import DEFAULT_TOPIC_PATTERN, NUSCENES_CAMERAS
from ..data.bags import default_typestore, open_writer
from ..data.convert import ConvertOptions, convert
from ..data.render import Renderer, nuscenes_cameras
from ..data.synthetic import WorldOptions, generate
from ..data.world import build_world

PARTS = ("world", "convert", "play")
CAMERA_STAGGER_NS = 8_000_000  # cameras of one nuScenes sweep fire a few ms apart


def bench_world(work: Path, seconds: float) -> Path:
    figures = generate(WorldOptions(work / "world", scenes=1, seed=1, duration=seconds))
    print(f"world: {figures['images']} images 1600x900 in {figures['seconds']:.1f} s = {figures['fps']:.1f} images/s "
          f"({figures['sweeps'] / figures['seconds']:.2f} six-camera sweeps/s; real time is 12)")
    return work / "world" / "nuscenes"


def bench_convert(dataroot: Path, work: Path) -> None:
    figures = convert(ConvertOptions(dataroot, work / "bags"))
    print(f"convert: {figures['messages']} messages, {figures['bytes'] / 1e6:.1f} MB in {figures['seconds']:.2f} s = "
          f"{figures['messages_per_s']:.0f} msg/s, {figures['bytes'] / 1e6 / figures['seconds']:.0f} MB/s")


def camera_bag(path: Path, seconds: float) -> int:
    """Six CompressedImage topics at 12 Hz carrying one rendered 1600x900 JPEG; returns its size."""
    state = build_world("cruise", 1).step(1.0)
    camera = nuscenes_cameras()[1]
    jpeg = cv2.imencode(".jpg", Renderer([camera]).render(state, camera), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    store = default_typestore()
    types = store.types
    start_ns, period_ns = 1_700_000_000_000_000_000, round(1e9 / 12)
    with open_writer(path, "mcap") as writer:
        connections = [writer.add_connection(DEFAULT_TOPIC_PATTERN.format(camera=c), "sensor_msgs/msg/CompressedImage",
                                             typestore=store) for c in NUSCENES_CAMERAS]
        for sweep in range(round(seconds * 12)):
            for index, (name, connection) in enumerate(zip(NUSCENES_CAMERAS, connections, strict=True)):
                stamp = start_ns + sweep * period_ns + index * CAMERA_STAGGER_NS
                header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](
                    sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=name)
                message = types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=jpeg.reshape(-1))
                writer.write(connection, stamp, bytes(store.serialize_cdr(message, "sensor_msgs/msg/CompressedImage")))
    return int(jpeg.size)


def bench_play(work: Path, seconds: float) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CompressedImage

    from ..ros_env import isolate_ros

    isolate_ros()
    bag = work / "cameras"
    jpeg_size = camera_bag(bag, seconds)
    context = Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = Node("bench_play_listener", context=context)
    arrivals: dict[str, list[tuple[float, int]]] = {c: [] for c in NUSCENES_CAMERAS}

    def on_image(message: CompressedImage) -> None:
        stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        arrivals[message.header.frame_id].append((time.monotonic(), stamp))

    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    for camera in NUSCENES_CAMERAS:
        node.create_subscription(CompressedImage, DEFAULT_TOPIC_PATTERN.format(camera=camera), on_image, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    player = subprocess.Popen([sys.executable, "-m", "drive_mllm_ros.cli", "play", str(bag),
                               "--wait-for-subscribers", "20", "--delay", "0.5"],
                              env=os.environ.copy())
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin)
    spinner.start()
    player.wait()
    time.sleep(0.5)
    stop.set()
    spinner.join()
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)
    report_play(arrivals, seconds, jpeg_size)


def report_play(arrivals: dict[str, list[tuple[float, int]]], seconds: float, jpeg_size: int) -> None:
    expected = round(seconds * 12)
    print(f"play: six CompressedImage topics, {jpeg_size / 1e3:.0f} kB JPEG each, 12 Hz, {seconds:.0f} s, --rate 1")
    everything = sorted(item for items in arrivals.values() for item in items)
    if not everything:
        print("play: nothing arrived")
        return
    wall0, stamp0 = everything[0][0], min(s for _, s in everything)
    for camera, items in arrivals.items():
        if len(items) < 2:
            print(f"  {camera:<16} {len(items)}/{expected} messages")
            continue
        wall = np.array([w for w, _ in items])
        rate = (len(items) - 1) / (wall[-1] - wall[0])
        print(f"  {camera:<16} {len(items)}/{expected} messages, sustained {rate:.2f} Hz")
    wall = np.array([w - wall0 for w, _ in everything])
    bag_time = np.array([(s - stamp0) / 1e9 for _, s in everything])
    offset = wall - bag_time  # arrival minus schedule, up to a constant
    slope = np.polyfit(bag_time, offset, 1)[0]
    lag = (offset - offset.min()) * 1e3
    print(f"  drift {slope * 60e3:+.1f} ms per minute (fit), "
          f"last-first offset {(offset[-1] - offset[0]) * 1e3:+.1f} ms; "
          f"arrival jitter p50 {np.percentile(lag, 50):.1f} ms, p99 {np.percentile(lag, 99):.1f} ms")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drive-mllm bench data", description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", help=f"some of {list(PARTS)} (default: all)")
    parser.add_argument("--world-seconds", type=float, default=10.0, help="scene length to render")
    parser.add_argument("--play-seconds", type=float, default=60.0, help="length of the camera bag to play")
    args = parser.parse_args(argv)
    args.parts = args.parts or list(PARTS)
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; expected some of {list(PARTS)}")
    with tempfile.TemporaryDirectory(prefix="drive_mllm_bench_") as folder:
        work = Path(folder)
        dataroot = None
        if "world" in args.parts or "convert" in args.parts:
            dataroot = bench_world(work, args.world_seconds)
        if "convert" in args.parts:
            bench_convert(dataroot, work)
        if "play" in args.parts:
            bench_play(work, args.play_seconds)
    return 0
