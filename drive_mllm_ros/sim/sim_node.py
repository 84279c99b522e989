"""`drive-mllm sim`: the synthetic world as a ROS 2 node on simulated time (the thin shell over ``Simulator``).

Publishes ``/clock``; the six cameras in the public nuScenes layout (``/CAM_*/image_rect_compressed``
jpeg, frame id = camera name, stamp = sim time) with ``/CAM_*/camera_info`` at ``camera_rate`` (rendered
only while someone subscribes); ``/odom`` (map -> base_link); ground truth for scoring and oracles as
JSON on ``~/ground_truth`` and boxes on ``~/markers``; the route on ``~/route`` (latched). ``/tf`` is not
published: tf2_msgs has no Python package from PyPI; ``/odom`` carries the same map -> base_link pose.

Takes ``/cmd_vel`` (``geometry_msgs/Twist``: speed, yaw rate) or ``/plan`` (``nav_msgs/Path`` in base_link
or map, followed by pure pursuit at the speed its pose stamps imply). ``mode``: ``lockstep`` waits, per
camera frame, for the node's answer with that stamp on ``answer_topic`` (up to ``answer_budget`` s of wall
time) and, per step, for a planner command (up to ``command_budget``; not while the planner is timed out);
``realtime`` runs sim time at wall time x ``rate`` whatever the others do. At the end it writes the
episode (``result_file``) and exits.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path as FilePath

import cv2
import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Odometry, Path
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

from ..cameras import DEFAULT_TOPIC_PATTERN
from ..data.convert import INFO_TOPIC_PATTERN, Frame, MessageFactory
from ..data.render import Renderer, nuscenes_cameras, yaw_quaternion
from ..data.world import EgoCommand
from ..outputs import header
from ..ros_env import isolate_ros
from .planner import Plan, PlannerConfig, Pose, follow, to_map
from .simulator import SIM_EPOCH_S, SimConfig, Simulator

NS = 1_000_000_000
MODES = ("lockstep", "realtime")
DEFAULTS: dict[str, object] = {
    "scenario": "lead_brake",
    "seed": 8,
    "density": 0.5,
    "route_length": 0.0,
    "time_limit": 0.0,
    "mode": "lockstep",
    "condition": "clear",  # render.LOOKS: clear, night, rain, fog
    "step": 0.1,
    "camera_rate": 2.0,
    "image_width": 1600,
    "image_height": 900,
    "jpeg_quality": 85,
    "answer_topic": "/drive_mllm/scene",
    "answer_budget": 10.0,
    "command_budget": 0.5,
    "command_timeout": 1.0,
    "rate": 1.0,
    "wait_for_subscribers": 30.0,
    "result_file": "",
}


def stamp_ns(sim_time: float) -> int:
    return SIM_EPOCH_S * NS + round(sim_time * NS)


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim")
        for name, default in DEFAULTS.items():
            self.declare_parameter(name, default)
        p = self.p = {name: self.get_parameter(name).value for name in DEFAULTS}
        if p["mode"] not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got '{p['mode']}'")
        if p["camera_rate"] <= 0 or p["step"] <= 0:
            raise ValueError("camera_rate and step: expected positive numbers")
        self.sim = Simulator(
            SimConfig(p["scenario"], p["seed"], p["density"], p["route_length"], p["time_limit"], p["command_timeout"])
        )
        self.cameras = nuscenes_cameras(p["image_width"], p["image_height"])
        self.renderer = Renderer(self.cameras, p["condition"], p["seed"])
        self.factory = MessageFactory()
        self.lock = threading.Lock()
        self.new_command: EgoCommand | None = None
        self.command_arrived = threading.Event()
        self.answer_stamps: list[int] = []
        self.answer_arrived = threading.Event()
        self.answer_latencies: list[float] = []
        self.counts = {"frames": 0, "answers": 0, "answers missing": 0}
        self.previous_pose: dict | None = None
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.clock_pub = self.create_publisher(Clock, "/clock", reliable)
        self.odom_pub = self.create_publisher(Odometry, "/odom", reliable)
        self.truth_pub = self.create_publisher(String, "~/ground_truth", reliable)
        self.markers_pub = self.create_publisher(MarkerArray, "~/markers", 2)
        self.route_pub = self.create_publisher(Path, "~/route", latched)
        self.image_pubs = {
            c.name: self.create_publisher(CompressedImage, DEFAULT_TOPIC_PATTERN.format(camera=c.name), reliable)
            for c in self.cameras
        }
        self.info_pubs = {
            c.name: self.create_publisher(CameraInfo, INFO_TOPIC_PATTERN.format(camera=c.name), reliable)
            for c in self.cameras
        }
        self.create_subscription(Twist, "/cmd_vel", self._on_twist, reliable)
        self.create_subscription(Path, "/plan", self._on_plan, reliable)
        if p["answer_topic"]:
            self.create_subscription(String, p["answer_topic"], self._on_answer, reliable)

    # ---- callbacks: store only -------------------------------------------------------------------
    def _on_twist(self, msg: Twist) -> None:
        speed = msg.linear.x
        curvature = msg.angular.z / speed if abs(speed) > 0.1 else 0.0
        self._command(EgoCommand(speed, curvature))

    def _on_plan(self, msg: Path) -> None:
        if len(msg.poses) < 2:
            return
        with self.lock:
            state = self.sim.world.state()
        points = np.array([[q.pose.position.x, q.pose.position.y] for q in msg.poses])
        pose = Pose(state.ego_x, state.ego_y, state.ego_yaw)
        path = to_map(pose, points) if msg.header.frame_id == "base_link" else points
        first, second = msg.poses[0].header.stamp, msg.poses[1].header.stamp
        seconds = (second.sec - first.sec) + (second.nanosec - first.nanosec) / NS
        speed = float(np.hypot(*(points[1] - points[0]))) / seconds if seconds > 0 else self.sim.cruise_speed
        config = PlannerConfig(cruise_speed=speed)
        self._command(follow(pose, state.ego_speed, Plan(path, speed), config))

    def _command(self, command: EgoCommand) -> None:
        with self.lock:
            self.new_command = command
        self.command_arrived.set()

    def _on_answer(self, msg: String) -> None:
        try:
            stamp = json.loads(msg.data)["stamp"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            stamp = stamp["sec"] * NS + stamp["nanosec"]
            self.answer_stamps.append(stamp)
            self.answer_latencies.append(self.sim.time - (stamp - SIM_EPOCH_S * NS) / NS)
        self.counts["answers"] += 1
        self.answer_arrived.set()

    # ---- publishing ------------------------------------------------------------------------------
    def publish_route(self) -> None:
        route = Path(header=header(stamp_ns(0.0), "map"))
        for x, y in self.sim.route_points():
            pose = PoseStamped(header=route.header)
            pose.pose.position.x, pose.pose.position.y = float(x), float(y)
            route.poses.append(pose)
        self.route_pub.publish(route)

    def publish_state(self) -> None:
        now = stamp_ns(self.sim.time)
        clock = Clock()
        clock.clock.sec, clock.clock.nanosec = divmod(now, NS)
        self.clock_pub.publish(clock)
        state = self.sim.world.state()
        q = yaw_quaternion(state.ego_yaw)
        pose = {
            "translation": [state.ego_x, state.ego_y, 0.0],
            "rotation": [q.w, q.x, q.y, q.z],
            "timestamp": now // 1000,
        }
        self.odom_pub.publish(self.factory.odometry(pose, self.previous_pose))
        self.previous_pose = pose
        self.truth_pub.publish(String(data=json.dumps(self.sim.ground_truth())))

    def publish_cameras(self) -> bool:
        """Render and publish one sweep (all cameras share the sim stamp); False when nobody listens."""
        if not any(pub.get_subscription_count() for pub in self.image_pubs.values()):
            return False
        now = stamp_ns(self.sim.time)
        state = self.sim.world.state()
        quality = [cv2.IMWRITE_JPEG_QUALITY, int(self.p["jpeg_quality"])]
        for camera in self.cameras:
            jpeg = cv2.imencode(".jpg", self.renderer.render(state, camera), quality)[1]
            self.image_pubs[camera.name].publish(
                CompressedImage(header=header(now, camera.name), format="jpeg", data=jpeg.tobytes())
            )
            info = Frame(
                now // 1000,
                camera.name,
                FilePath(),
                {"camera_intrinsic": camera.intrinsic.tolist()},
                {},
                camera.width,
                camera.height,
            )
            self.info_pubs[camera.name].publish(self.factory.camera_info(info))
        self.markers_pub.publish(self._markers(state, now))
        self.counts["frames"] += 1
        return True

    @staticmethod
    def _markers(state, now: int) -> MarkerArray:
        markers = [Marker(header=header(now, "map"), action=Marker.DELETEALL)]
        for obj in state.objects:
            box = Marker(header=header(now, "map"), ns=obj.kind, id=obj.instance, type=Marker.CUBE, action=Marker.ADD)
            box.pose.position.x, box.pose.position.y, box.pose.position.z = obj.x, obj.y, obj.size[2] / 2
            box.pose.orientation.z, box.pose.orientation.w = math.sin(obj.yaw / 2), math.cos(obj.yaw / 2)
            box.scale.x, box.scale.y, box.scale.z = obj.size
            box.color = ColorRGBA(r=0.2, g=0.6, b=1.0, a=0.8)
            markers.append(box)
        return MarkerArray(markers=markers)

    # ---- the loop --------------------------------------------------------------------------------
    def wait_for_peers(self) -> None:
        """Bounded wait until a planner publishes commands and, with an answer topic, the node listens."""
        deadline = time.monotonic() + self.p["wait_for_subscribers"]
        while time.monotonic() < deadline:
            planner = self.count_publishers("/cmd_vel") + self.count_publishers("/plan") > 0
            node = not self.p["answer_topic"] or all(pub.get_subscription_count() for pub in self.image_pubs.values())
            if planner and node:
                return
            time.sleep(0.1)
        self.get_logger().warning("sim: starting without every peer (planner or node not seen in time)")

    def _apply_command(self) -> None:
        with self.lock:
            command, self.new_command = self.new_command, None
            if command is not None:
                self.sim.set_command(command)

    def _wait_for_answer(self, frame_stamp: int) -> None:
        deadline = time.monotonic() + self.p["answer_budget"]
        while time.monotonic() < deadline:
            with self.lock:
                if any(s >= frame_stamp for s in self.answer_stamps):
                    return
            self.answer_arrived.wait(0.05)
            self.answer_arrived.clear()
        self.counts["answers missing"] += 1

    def _handshake(self) -> None:
        """Lockstep starts once the planner answers the initial state: it has the route and its inputs, so the
        first step gets the same command in every run (discovery and latched delivery take varying time)."""
        deadline = time.monotonic() + self.p["wait_for_subscribers"]
        while time.monotonic() < deadline:
            self.command_arrived.clear()
            self.publish_state()
            if self.command_arrived.wait(0.5):
                return
        self.get_logger().warning("sim: the planner did not answer the initial state; starting anyway")

    def run(self) -> None:
        self.wait_for_peers()
        self.publish_route()
        lockstep = self.p["mode"] == "lockstep"
        if lockstep:
            self._handshake()
        period, step = 1.0 / self.p["camera_rate"], self.p["step"]
        next_frame, wall_start = 0.0, time.monotonic()
        while not self.sim.done:
            if self.sim.time + 1e-9 >= next_frame:
                next_frame += period
                if self.publish_cameras() and lockstep and self.p["answer_topic"]:
                    self._wait_for_answer(stamp_ns(self.sim.time))
            self.command_arrived.clear()
            self.publish_state()
            if lockstep and not self.sim.stale:
                self.command_arrived.wait(self.p["command_budget"])
            self._apply_command()
            with self.lock:
                self.sim.step(step)
            if not lockstep:  # sim time follows wall time; a slow frame is not made up by slowing the world
                time.sleep(max(0.0, wall_start + self.sim.time / self.p["rate"] - time.monotonic()))

    def result(self, reason: str = "") -> dict:
        episode = self.sim.finish(reason)
        latencies = sorted(self.answer_latencies) or [math.nan]
        episode.counters.update(self.counts)
        episode.counters["answer latency p50 ms"] = (
            round(latencies[len(latencies) // 2] * 1e3) if self.answer_latencies else -1
        )
        return {"mode": self.p["mode"], "episode": episode.to_dict()}


def main(argv: list[str] | None = None) -> int:
    isolate_ros()
    rclpy.init(args=sys.argv if argv is None else ["drive-mllm sim", *argv])
    try:
        node = SimNode()
    except ValueError as error:
        print(f"drive-mllm sim: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    reason = ""
    try:
        node.run()
    except (KeyboardInterrupt, ExternalShutdownException):
        reason = "interrupted"
    result = node.result(reason)
    if node.p["result_file"]:
        FilePath(node.p["result_file"]).write_text(json.dumps(result))
    episode = result["episode"]
    print(
        f"sim: {episode['scenario']} seed {episode['seed']}: {episode['end_reason']} at "
        f"{episode['samples'][-1]['time']:.1f} s; events {[e['kind'] for e in episode['events']]}"
    )
    executor.shutdown()
    spinner.join(timeout=5.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
