"""Output converter: a Scene -> the node's ROS messages (text, markers, path, annotated image, diagnostics).

Uses message classes only, no rclpy, so it is unit-testable without DDS.
"""

from __future__ import annotations

import json
import math

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Path
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import ColorRGBA, Header, String
from visualization_msgs.msg import Marker, MarkerArray

from .cameras import CameraRig
from .drivelm import TRAJECTORY_STEP_S
from .scene import Scene
from .visualize import draw_key_objects, encode_jpeg

NS = 1_000_000_000
RAY_LENGTH_M = 15.0  # markers show the viewing ray: pixels carry no depth
NUSCENES_FRONT_INTRINSICS = (1266.4, 1266.4, 816.3, 491.5)  # fx, fy, cx, cy for 1600x900


def stamp_msg(stamp_ns: int) -> Time:
    sec, nanosec = divmod(stamp_ns, NS)
    return Time(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=stamp_msg(stamp_ns), frame_id=frame_id)


def default_intrinsics(image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """nuScenes front-camera intrinsics scaled to the image size, until a CameraInfo arrives."""
    fx, fy, cx, cy = NUSCENES_FRONT_INTRINSICS
    sx, sy = image_size[0] / 1600.0, image_size[1] / 900.0
    return fx * sx, fy * sy, cx * sx, cy * sy


def stage_text(scene: Scene, stage: str) -> String:
    """Human-readable Q/A text; the first line carries the set's stamp and frame (String has no header)."""
    sec, nanosec = divmod(scene.stamp_ns, NS)
    lines = [f"stamp={sec}.{nanosec:09d} frame_id={scene.frame_id}"]
    for item in scene.qa:
        if item["stage"] == stage:
            lines += [f"Q: {item['question']}", f"A: {item['answer']}"]
    return String(data="\n".join(lines))


def scene_json(scene: Scene) -> String:
    return String(data=json.dumps(scene.to_dict(), ensure_ascii=False))


def key_object_markers(
    scene: Scene, intrinsics: dict[str, tuple[float, float, float, float]], image_size: tuple[int, int]
) -> MarkerArray:
    """Per key object, an arrow along its viewing ray and a label, in the camera's optical frame."""
    markers = [Marker(header=header(scene.stamp_ns, scene.frame_id), action=Marker.DELETEALL)]
    for index, obj in enumerate(scene.key_objects):
        fx, fy, cx, cy = intrinsics.get(obj["camera"]) or default_intrinsics(image_size)
        ray = np.array([(obj["x"] - cx) / fx, (obj["y"] - cy) / fy, 1.0])
        end = ray / np.linalg.norm(ray) * RAY_LENGTH_M
        common = {"header": header(scene.stamp_ns, obj["camera"]), "ns": obj["stage"], "action": Marker.ADD}
        arrow = Marker(id=2 * index, type=Marker.ARROW, **common)
        arrow.points = [Point(), Point(x=float(end[0]), y=float(end[1]), z=float(end[2]))]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.1, 0.3, 0.4
        arrow.color = ColorRGBA(r=1.0, g=0.3, b=0.1, a=0.9)
        label = Marker(id=2 * index + 1, type=Marker.TEXT_VIEW_FACING, text=obj["id"], **common)
        label.pose.position = Point(x=float(end[0]), y=float(end[1]) - 0.5, z=float(end[2]))
        label.pose.orientation.w = 1.0
        label.scale.z = 0.8
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        markers += [arrow, label]
    return MarkerArray(markers=markers)


def trajectory_path(scene: Scene, frame_id: str = "base_link") -> Path:
    """Waypoints as a Path; each pose is stamped at its future time and heads along the segment."""
    path = Path(header=header(scene.stamp_ns, frame_id))
    points = scene.trajectory or []
    for index, (x, y) in enumerate(points):
        nx, ny = points[index + 1] if index + 1 < len(points) else (x, y)
        px, py = points[index - 1] if index > 0 else (0.0, 0.0)
        yaw = math.atan2(ny - py, nx - px) if (nx, ny) != (px, py) else 0.0
        pose = PoseStamped(header=header(scene.stamp_ns + int((index + 1) * TRAJECTORY_STEP_S * NS), frame_id))
        pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        pose.pose.orientation.z, pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        path.poses.append(pose)
    return path


def annotated_image(mosaic_rgb: np.ndarray, scene: Scene, rig: CameraRig, quality: int = 80) -> CompressedImage:
    drawn = draw_key_objects(mosaic_rgb, rig, scene.key_objects)
    return CompressedImage(
        header=header(scene.stamp_ns, scene.frame_id), format="jpeg", data=encode_jpeg(drawn, quality)
    )


def diagnostics(stamp_ns: int, name: str, level: bytes, message: str, values: dict[str, object]) -> DiagnosticArray:
    """One status; ``level`` is DiagnosticStatus.OK / WARN / ERROR."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id="drive_mllm")
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return DiagnosticArray(header=header(stamp_ns, ""), status=[status])
