"""Test helpers for real DDS on loopback: a camera rig publisher, output collectors, node processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from drive_mllm_ros.cameras import NUSCENES_CAMERAS
from drive_mllm_ros.paths import default_params_file

NS = 1_000_000_000


def camera_picture(index: int, size: tuple[int, int] = (1600, 900)) -> np.ndarray:
    """A scene-like RGB picture, different per camera."""
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2] = (120 + 10 * index, 170, 230)
    image[height // 2 :] = (90, 90, 95)
    cv2.rectangle(image, (300 + 100 * index, 400), (600 + 100 * index, 650), (200, 30, 30), -1)
    return image


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


class RosHarness:
    """One rclpy context in the test process: publishers, subscriptions and a spinning executor thread."""

    def __init__(self) -> None:
        rclpy.init()
        self.node = Node("test_harness")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def subscribe(self, topic: str, msg_type: type, qos: int | QoSProfile = 10) -> None:
        def store(msg: Any) -> None:
            with self._lock:
                self.received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, store, qos)

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.received[topic])

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def publisher(self, msg_type: type, topic: str, reliable: bool = True):
        qos = QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        )
        return self.node.create_publisher(msg_type, topic, qos)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


class CameraRigPublisher:
    """Publishes the six nuScenes cameras with one stamp per sweep, as CompressedImage or raw Image."""

    def __init__(self, harness: RosHarness, transport: str = "compressed", cameras=NUSCENES_CAMERAS) -> None:
        self.transport, self.cameras = transport, cameras
        msg_type = CompressedImage if transport == "compressed" else Image
        pattern = "/{camera}/image_rect_compressed" if transport == "compressed" else "/{camera}/image_raw"
        self.publishers = {c: harness.publisher(msg_type, pattern.format(camera=c)) for c in cameras}
        small = transport == "raw"  # raw 1600x900 over DDS is slow on 2 cores; 320x180 keeps tests quick
        self.pictures = {c: camera_picture(i, (320, 180) if small else (1600, 900)) for i, c in enumerate(cameras)}
        self.jpegs = {c: jpeg_bytes(p) for c, p in self.pictures.items()}

    def message(self, camera: str, stamp_ns: int, data: bytes | None = None) -> Any:
        sec, nanosec = divmod(stamp_ns, NS)
        if self.transport == "compressed":
            msg = CompressedImage(format="jpeg", data=data if data is not None else self.jpegs[camera])
        else:
            picture = self.pictures[camera]
            msg = Image(
                height=picture.shape[0],
                width=picture.shape[1],
                encoding="rgb8",
                step=picture.shape[1] * 3,
                data=picture.tobytes(),
            )
        msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nanosec, camera
        return msg

    def sweep(self, stamp_ns: int, skip: tuple[str, ...] = (), override: dict[str, Any] | None = None) -> None:
        """Publish one sweep; `override` replaces a camera's message (restamped to this sweep)."""
        for camera in self.cameras:
            if camera in skip:
                continue
            msg = (override or {}).get(camera) or self.message(camera, stamp_ns)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, NS)
            self.publishers[camera].publish(msg)


def wait_for(condition, timeout: float, step: float = 0.05, action=None) -> bool:
    """Poll `condition` (calling `action` each round, e.g. to publish) until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if action is not None:
            action()
        if condition():
            return True
        time.sleep(step)
    return False


def write_params(path: Path, **overrides: Any) -> Path:
    """A params file layered over the package defaults (only the given keys)."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        prefix, _, stage = key.partition("__")
        if stage:
            nested.setdefault(prefix, {})[stage] = value
        else:
            nested[key] = value
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested}}))
    return path


def start_node(params: Path, log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "drive_mllm_ros.node",
        "--ros-args",
        "--params-file",
        str(default_params_file()),
        "--params-file",
        str(params),
    ]
    log = log_path.open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def stop_node(process: subprocess.Popen, timeout: float = 20.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    return process.wait(timeout=timeout)
