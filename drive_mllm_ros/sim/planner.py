"""Reference planner: pure pursuit along a path and a speed profile that stops for what is ahead. Pure.

One core (``follow``) turns a ``Plan`` (a path in the map frame, a target speed, the bumper gap to
something to stop behind) into an ``EgoCommand`` (speed, curvature). Three input sources make plans:

- ``node_plan``: the drive_mllm node's outputs. The path is its ``~/trajectory`` (base_link at the
  frame's stamp, moved into the map frame with the ego pose of that stamp), or the route when it gives
  none; the target speed is its behaviour speed class; it stops for key objects it reports close ahead.
  Heuristic for "close ahead": a CAM_FRONT key object's pixel is back-projected onto flat ground, its
  centre assumed ``OBJECT_CENTRE_HEIGHT`` above the road (the front camera is level, so the row below the
  horizon gives the distance, the column the lateral offset). An object within ``stop_range`` and within
  ``path_half_width`` of the camera axis is in the ego's path: near the image's centre column and low in
  the image. When its outputs stop for ``input_timeout`` s, the plan is to stop.
- ``oracle_plan``: ground truth. The route; objects whose footprint is in the ego's corridor ahead now or
  within ``prediction_horizon`` s (along their scripted paths, which the ground truth carries); a crosswalk in
  use is a stop line.
- ``blind_plan``: the route at cruise speed, ignoring everything.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..cameras import NUSCENES_IMAGE_SIZE
from ..data.render import NUSCENES_CALIBRATION
from ..data.world import EGO_SIZE, EgoCommand, World
from ..drivelm import SPEED_CLASSES
from ..outputs import default_intrinsics
from .simulator import CROSSWALK_HALF_WIDTH, crosswalk_occupied

SPEED_BY_CLASS = dict(zip(SPEED_CLASSES, (0.0, 3.0, 6.0, 10.0, 14.0), strict=True))  # m/s per behaviour class
OBJECT_CENTRE_HEIGHT = 0.8  # m above the road: a car's or a pedestrian's box centre
FRONT_CAMERA_HEIGHT = NUSCENES_CALIBRATION["CAM_FRONT"][2]
MAX_TRAJECTORY_REACH = 80.0  # m: waypoints farther than this are not a trajectory the ego can follow


@dataclass(frozen=True)
class PlannerConfig:
    cruise_speed: float = 8.0  # m/s: the route's speed limit
    comfortable_brake: float = 3.0  # m/s^2 the speed profile plans with
    max_lateral_accel: float = 2.0  # m/s^2 through curves
    lookahead_time: float = 0.8  # s: pure-pursuit look-ahead grows with speed
    min_lookahead: float = 4.0  # m
    min_gap: float = 3.0  # m bumper gap kept to a stopped obstacle
    headway: float = 1.0  # s of extra gap per m/s of ego speed
    corridor_margin: float = 0.6  # m beyond both half widths: the ego's corridor
    prediction_horizon: float = 3.0  # s (oracle)
    input_timeout: float = 1.5  # s of simulated time without inputs before the plan is to stop
    stop_range: float = 25.0  # m (node key objects)
    path_half_width: float = 2.0  # m (node key objects)


@dataclass(frozen=True)
class Pose:
    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class Plan:
    path: np.ndarray  # Nx2, map frame
    target_speed: float
    gap: float = math.inf  # m, bumper to bumper along the path, to something to stop behind
    obstacle_speed: float = 0.0  # m/s of that something along the path
    reason: str = ""


def to_map(pose: Pose, points: np.ndarray) -> np.ndarray:
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    return np.asarray(points, dtype=float).reshape(-1, 2) @ np.array([[c, s], [-s, c]]) + [pose.x, pose.y]


def to_base_link(pose: Pose, points: np.ndarray) -> np.ndarray:
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    return (np.asarray(points, dtype=float).reshape(-1, 2) - [pose.x, pose.y]) @ np.array([[c, -s], [s, c]])


def path_ahead(pose: Pose, path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The path from its point nearest the ego on, and the arc length of each point from the ego's projection."""
    nearest = int(np.argmin(np.hypot(path[:, 0] - pose.x, path[:, 1] - pose.y)))
    ahead = path[nearest:]
    steps = np.hypot(*np.diff(ahead, axis=0).T) if len(ahead) > 1 else np.zeros(0)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    if len(ahead) > 1:  # measure from the ego's own projection on the first segment
        direction = (ahead[1] - ahead[0]) / max(steps[0], 1e-9)
        along -= float(np.dot([pose.x - ahead[0, 0], pose.y - ahead[0, 1]], direction))
    return ahead, along


def pure_pursuit_curvature(pose: Pose, ahead: np.ndarray, along: np.ndarray, lookahead: float) -> float:
    """Curvature of the arc through the ego and the first path point ``lookahead`` metres on (else the last)."""
    index = int(np.searchsorted(along, lookahead))
    x, y = to_base_link(pose, ahead[min(index, len(ahead) - 1)])[0]
    distance_sq = x * x + y * y
    return 0.0 if distance_sq < 1e-6 else 2.0 * y / distance_sq


def curve_speed_limit(ahead: np.ndarray, along: np.ndarray, config: PlannerConfig) -> float:
    """Highest speed now from which every curve ahead can be taken within the lateral limit, braking comfortably."""
    if len(ahead) < 3:
        return math.inf
    headings = np.unwrap(np.arctan2(*np.diff(ahead, axis=0).T[::-1]))
    curvature = np.abs(np.diff(headings)) / np.maximum(np.diff(along)[1:], 1e-3)
    allowed = np.sqrt(config.max_lateral_accel / np.maximum(curvature, 1e-6))
    return float(np.min(np.sqrt(allowed**2 + 2 * config.comfortable_brake * np.maximum(along[1:-1], 0.0))))


def gap_speed(gap: float, obstacle_speed: float, speed: float, config: PlannerConfig) -> float:
    """Speed from which the ego can match the obstacle's speed, braking comfortably, before the kept gap."""
    if not math.isfinite(gap):
        return math.inf
    free = gap - config.min_gap - config.headway * speed
    obstacle_speed = max(obstacle_speed, 0.0)
    if free < 0:
        return max(0.0, obstacle_speed + free)  # too close: fall back to open the gap
    return math.sqrt(obstacle_speed**2 + 2 * config.comfortable_brake * free)


def follow(pose: Pose, speed: float, plan: Plan, config: PlannerConfig) -> EgoCommand:
    ahead, along = path_ahead(pose, plan.path)
    lookahead = max(config.min_lookahead, config.lookahead_time * speed)
    curvature = pure_pursuit_curvature(pose, ahead, along, lookahead)
    target = min(
        plan.target_speed,
        curve_speed_limit(ahead, along, config),
        gap_speed(plan.gap, plan.obstacle_speed, speed, config),
    )
    return EgoCommand(max(target, 0.0), curvature)


# ---------------------------------------------------------------- sources


def blind_plan(route: np.ndarray, config: PlannerConfig) -> Plan:
    return Plan(route, config.cruise_speed, reason="blind: route at cruise speed")


def distance_to_box(points: np.ndarray, obj: dict) -> np.ndarray:
    """Distance of each point (Nx2, map frame) to the object's footprint rectangle (0 inside)."""
    local = to_base_link(Pose(obj["x"], obj["y"], obj["yaw"]), points)
    outside = np.maximum(np.abs(local) - [obj["length"] / 2, obj["width"] / 2], 0.0)
    return np.hypot(outside[:, 0], outside[:, 1])


def predicted_poses(obj: dict, horizon: float, step: float = 0.5) -> list[tuple[float, tuple[float, float, float]]]:
    """(seconds, pose) now and ahead: the object's scripted future where the ground truth has it, else constant
    velocity."""
    poses = [(0.0, (obj["x"], obj["y"], obj["yaw"]))]
    future = obj.get("future") or []
    for k, seconds in enumerate(np.arange(step, horizon + 1e-9, step)):
        if k < len(future):
            poses.append((float(seconds), tuple(future[k])))
        else:
            travelled = obj["speed"] * seconds
            poses.append(
                (
                    float(seconds),
                    (
                        obj["x"] + travelled * math.cos(obj["yaw"]),
                        obj["y"] + travelled * math.sin(obj["yaw"]),
                        obj["yaw"],
                    ),
                )
            )
    return poses


def _nearest_in_corridor(
    pose: Pose, ahead: np.ndarray, along: np.ndarray, objects: list[dict], config: PlannerConfig
) -> tuple[float, float]:
    """Bumper gap and along-path speed of the nearest object whose footprint is in the ego's corridor ahead now or,
    predicted, later (then counted as standing where it will be)."""
    reach = ahead[along <= 60.0] if (along <= 60.0).sum() > 1 else ahead[:2]
    best_gap, best_speed = math.inf, 0.0
    for obj in objects:
        if to_base_link(pose, [obj["x"], obj["y"]])[0, 0] + obj["length"] / 2 < -EGO_SIZE[0] / 2:
            continue  # wholly behind the ego: its own planner keeps clear of us
        for seconds, (x, y, yaw) in predicted_poses(obj, config.prediction_horizon):
            moved = dict(obj, x=x, y=y, yaw=yaw)
            inside = np.flatnonzero(distance_to_box(reach, moved) < EGO_SIZE[1] / 2 + config.corridor_margin)
            inside = inside[along[inside] > 0.0]
            if not len(inside):
                continue
            gap = along[inside[0]] - EGO_SIZE[0] / 2
            if gap < best_gap:
                segment = ahead[min(inside[0] + 1, len(ahead) - 1)] - ahead[max(inside[0] - 1, 0)]
                along_speed = obj["speed"] * math.cos(obj["yaw"] - math.atan2(segment[1], segment[0]))
                best_gap, best_speed = gap, along_speed if seconds == 0 else 0.0
            break  # the earliest entry decides
    return best_gap, best_speed


def oracle_plan(truth: dict, route: np.ndarray, config: PlannerConfig) -> Plan:
    ego = truth["ego"]
    pose = Pose(ego["x"], ego["y"], ego["yaw"])
    ahead, along = path_ahead(pose, route)
    gap, obstacle_speed = _nearest_in_corridor(pose, ahead, along, truth["objects"], config)
    reason = "oracle: route" if not math.isfinite(gap) else f"oracle: object {gap:.1f} m ahead"
    crosswalk = truth.get("crosswalk_x")
    pedestrians = [
        (o["x"], o["y"], o["speed"] * math.cos(o["yaw"]), o["speed"] * math.sin(o["yaw"]))
        for o in truth["objects"]
        if o["kind"] == "pedestrian"
    ]
    if crosswalk is not None and crosswalk_occupied(crosswalk, pedestrians, config.prediction_horizon):
        line_gap = crosswalk - CROSSWALK_HALF_WIDTH - (ego["x"] + EGO_SIZE[0] / 2 * math.cos(ego["yaw"]))
        can_stop = ego["speed"] ** 2 / (2 * max(line_gap, 1e-3)) <= World.EGO_MAX_BRAKE  # else committed: go on
        if line_gap >= 0 and can_stop and line_gap + config.min_gap < gap:
            gap, obstacle_speed, reason = line_gap + config.min_gap, 0.0, "oracle: crosswalk in use"
    return Plan(route, config.cruise_speed, gap, obstacle_speed, reason)


@dataclass(frozen=True)
class FrontCamera:
    """CAM_FRONT intrinsics for the node's image size (the answers' pixel coordinates refer to it)."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def for_image(cls, width: int = NUSCENES_IMAGE_SIZE[0], height: int = NUSCENES_IMAGE_SIZE[1]) -> FrontCamera:
        return cls(*default_intrinsics((width, height)))

    def ground_point(self, u: float, v: float) -> tuple[float, float] | None:
        """(distance ahead, lateral offset to the left) in metres of a pixel at object-centre height; None above
        the horizon."""
        below = v - self.cy
        if below <= 1.0:
            return None
        distance = self.fy * (FRONT_CAMERA_HEIGHT - OBJECT_CENTRE_HEIGHT) / below
        return distance, -(u - self.cx) * distance / self.fx


def key_object_ahead(key_objects: list[dict], camera: FrontCamera, config: PlannerConfig) -> float:
    """Distance to the nearest CAM_FRONT key object in the ego's path (inf if none)."""
    nearest = math.inf
    for obj in key_objects:
        point = camera.ground_point(obj["x"], obj["y"]) if obj.get("camera") == "CAM_FRONT" else None
        if point and point[0] < config.stop_range and abs(point[1]) < config.path_half_width:
            nearest = min(nearest, point[0])
    return nearest


def usable_trajectory(points: list[list[float]] | None) -> bool:
    if not points or len(points) < 2:
        return False
    array = np.asarray(points, dtype=float)
    return bool(
        np.isfinite(array).all()
        and np.hypot(array[:, 0], array[:, 1]).max() < MAX_TRAJECTORY_REACH
        and array[-1, 0] > 1.0
    )


def node_plan(
    scene: dict | None, scene_pose: Pose | None, route: np.ndarray, camera: FrontCamera, config: PlannerConfig
) -> Plan:
    """From the node's latest scene JSON (None: silent past the timeout) and the ego pose at its stamp."""
    if scene is None or scene_pose is None:
        return Plan(route, 0.0, reason="node silent: stopping")
    path, reason = route, "node: route (no usable trajectory)"
    if usable_trajectory(scene.get("trajectory")):
        path, reason = to_map(scene_pose, [[0.0, 0.0], *scene["trajectory"]]), "node: trajectory"
    behavior = scene.get("behavior") or {}
    target = min(config.cruise_speed, SPEED_BY_CLASS.get(behavior.get("speed"), config.cruise_speed))
    distance = key_object_ahead(scene.get("key_objects", []), camera, config)
    gap = distance - (EGO_SIZE[0] / 2 - NUSCENES_CALIBRATION["CAM_FRONT"][0] / 2)  # camera sits near the bonnet
    if math.isfinite(distance):
        reason += f", key object {distance:.1f} m ahead"
    return Plan(path, target, gap, 0.0, reason)


class PoseHistory:
    """Recent ego poses by time, to place an answer about an older frame where the ego was then."""

    def __init__(self, keep_s: float = 10.0) -> None:
        self.keep_s = keep_s
        self.poses: deque[tuple[float, Pose]] = deque()

    def add(self, time_s: float, pose: Pose) -> None:
        if self.poses and time_s < self.poses[-1][0]:
            self.poses.clear()  # time went back: a new run
        self.poses.append((time_s, pose))
        while self.poses and self.poses[0][0] < time_s - self.keep_s:
            self.poses.popleft()

    def at(self, time_s: float) -> Pose | None:
        if not self.poses:
            return None
        return min(self.poses, key=lambda item: abs(item[0] - time_s))[1]
