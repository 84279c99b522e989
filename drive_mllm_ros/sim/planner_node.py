"""`drive-mllm planner`: the reference planner as a ROS 2 node (the thin shell over ``planner.py``).

Inputs: ``/odom`` (each message triggers one command), the route (``/sim/route``, latched) and, by
``source``: ``node`` the drive_mllm outputs (``/drive_mllm/trajectory`` nav_msgs/Path in base_link,
``/drive_mllm/scene`` JSON for behaviour and key objects); ``oracle`` the simulator's ground truth
(``/sim/ground_truth``); ``blind`` nothing more. Output: ``/cmd_vel`` (geometry_msgs/Twist: speed and
yaw rate). Inputs older than ``input_timeout`` s (sim time, by stamps) make the plan a stop.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry, Path
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from ..ros_env import isolate_ros
from .planner import FrontCamera, Plan, PlannerConfig, Pose, PoseHistory, blind_plan, follow, node_plan, oracle_plan
from .simulator import SIM_EPOCH_S

SOURCES = ("node", "oracle", "blind")
NS = 1_000_000_000
DEFAULTS: dict[str, object] = {
    "source": "node",
    "cruise_speed": 8.0,
    "input_timeout": 1.5,
    "image_width": 1600,
    "image_height": 900,
    "scene_topic": "/drive_mllm/scene",
    "trajectory_topic": "/drive_mllm/trajectory",
    "ground_truth_topic": "/sim/ground_truth",
    "route_topic": "/sim/route",
}


def seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec / NS


class PlannerNode(Node):
    def __init__(self) -> None:
        super().__init__("planner")
        for name, default in DEFAULTS.items():
            self.declare_parameter(name, default)
        p = {name: self.get_parameter(name).value for name in DEFAULTS}
        if p["source"] not in SOURCES:
            raise ValueError(f"source: expected one of {list(SOURCES)}, got '{p['source']}'")
        self.source = p["source"]
        self.config = PlannerConfig(cruise_speed=float(p["cruise_speed"]), input_timeout=float(p["input_timeout"]))
        self.camera = FrontCamera.for_image(p["image_width"], p["image_height"])
        self.route: np.ndarray | None = None
        self.poses = PoseHistory()
        self.scene: dict | None = None
        self.scene_time = -1e9
        self.trajectory: list[list[float]] | None = None
        self.truth: dict | None = None
        self.truth_time = -1e9
        self.pending_odom: Odometry | None = None
        self.last_reason = ""
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.command_pub = self.create_publisher(Twist, "/cmd_vel", reliable)
        self.create_subscription(Path, p["route_topic"], self._on_route, latched)
        self.create_subscription(Odometry, "/odom", self._on_odom, reliable)
        if self.source == "node":
            self.create_subscription(String, p["scene_topic"], self._on_scene, reliable)
            self.create_subscription(Path, p["trajectory_topic"], self._on_trajectory, reliable)
        elif self.source == "oracle":
            self.create_subscription(String, p["ground_truth_topic"], self._on_truth, reliable)

    def _on_route(self, msg: Path) -> None:
        self.route = np.array([[q.pose.position.x, q.pose.position.y] for q in msg.poses]).reshape(-1, 2)
        # A new run: its inputs start over. The times too: a ground truth that came before the (latched) route would
        # otherwise count as this step's and be dropped, and the first command would stop the car.
        self.poses, self.scene, self.trajectory, self.truth = PoseHistory(), None, None, None
        self.scene_time = self.truth_time = -1e9
        self.pending_odom = None

    def _on_scene(self, msg: String) -> None:
        scene = json.loads(msg.data)
        self.scene_time = scene["stamp"]["sec"] + scene["stamp"]["nanosec"] / NS
        self.scene = scene

    def _on_trajectory(self, msg: Path) -> None:
        self.trajectory = [[q.pose.position.x, q.pose.position.y] for q in msg.poses]

    def _on_truth(self, msg: String) -> None:
        self.truth = json.loads(msg.data)
        self.truth_time = self.truth["time"]
        if self.pending_odom is not None:  # the step's odometry came first: answer it now
            self._on_odom(self.pending_odom)

    def _plan(self, now: float, sim_time: float) -> Plan:
        fresh = self.config.input_timeout
        if self.source == "blind":
            return blind_plan(self.route, self.config)
        if self.source == "oracle":
            if self.truth is None or sim_time - self.truth_time > fresh:
                return Plan(self.route, 0.0, reason="ground truth silent: stopping")
            return oracle_plan(self.truth, self.route, self.config)
        if self.scene is None or now - self.scene_time > fresh:
            return node_plan(None, None, self.route, self.camera, self.config)
        scene = dict(self.scene, trajectory=self.trajectory if self.trajectory else self.scene.get("trajectory"))
        return node_plan(scene, self.poses.at(self.scene_time), self.route, self.camera, self.config)

    def _on_odom(self, msg: Odometry) -> None:
        if self.route is None or len(self.route) < 2:
            return
        q = msg.pose.pose.orientation
        pose = Pose(
            msg.pose.pose.position.x,
            msg.pose.pose.position.y,
            float(np.arctan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))),
        )
        now = seconds(msg.header.stamp)
        if self.source == "oracle" and self.truth_time < now - SIM_EPOCH_S - 1e-6:
            self.pending_odom = msg  # the same step's ground truth is on its way (topics are not ordered)
            return
        self.pending_odom = None
        self.poses.add(now, pose)
        plan = self._plan(now, now - SIM_EPOCH_S)
        kind = re.sub(r"-?[\d.]+", "N", plan.reason)  # log changes of kind, not of distance
        if kind != self.last_reason:
            self.get_logger().info(plan.reason)
            self.last_reason = kind
        command = follow(pose, float(np.hypot(msg.twist.twist.linear.x, msg.twist.twist.linear.y)), plan, self.config)
        twist = Twist()
        twist.linear.x, twist.angular.z = command.speed, command.speed * command.curvature
        self.command_pub.publish(twist)


def main(argv: list[str] | None = None) -> int:
    isolate_ros()
    rclpy.init(args=sys.argv if argv is None else ["drive-mllm planner", *argv])
    try:
        node = PlannerNode()
    except ValueError as error:
        print(f"drive-mllm planner: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
