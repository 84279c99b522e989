"""Six calibrated pinhole cameras and an OpenCV renderer for ``WorldState`` (no rclpy).

Cameras follow nuScenes conventions: intrinsics and extrinsics (sensor -> ego, ego = rear axle on
the ground, x forward, y left) close to the real rig, optical frame x right, y down, z forward.
Objects are 3-D boxes (``nuscenes.utils.data_classes.Box``) drawn far to near with shaded faces;
a car's brake lights, turn signals and a pedestrian's stride are drawn so that the state the QA
asks about is visible. ``project_object`` gives the exact tag centre and 2-D box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import transform_matrix
from pyquaternion import Quaternion

from ..cameras import NUSCENES_CAMERAS, NUSCENES_IMAGE_SIZE
from .world import (
    COLOURS,
    LANE_WIDTH,
    PARKING_EDGE,
    ROAD_HALF_WIDTH,
    SIDEWALK_EDGE,
    ObjectState,
    RoadLayout,
    WorldState,
)

NEAR_PLANE = 0.2  # metres: geometry closer to the camera plane is clipped away
DRAW_RANGE = 150.0  # metres: objects and markings beyond this are not drawn
SHIFT = 3  # sub-pixel bits for cv2 polygon drawing
BLUR_EXPOSURE_S = 0.016  # camera exposure time for motion blur
NEAR_ROAD_DISTANCE = 5.0  # metres: the road patch whose smear sets the blur length
SKY_TOP, SKY_HORIZON = np.array([200, 150, 110]), np.array([235, 215, 200])  # BGR
GROUND, ASPHALT, SIDEWALK = (92, 112, 104), (72, 72, 74), (160, 160, 155)
WHITE, YELLOW = (230, 230, 230), (40, 190, 225)
OPTICAL_TO_BODY = Quaternion(matrix=np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))

# name -> (x, y, z in ego frame, yaw in degrees, focal length, cx, cy) at 1600x900, close to the nuScenes rig
NUSCENES_CALIBRATION: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "CAM_FRONT": (1.70, 0.02, 1.51, 0.0, 1266.4, 816.3, 491.5),
    "CAM_FRONT_RIGHT": (1.55, -0.49, 1.49, -55.0, 1260.8, 808.0, 495.3),
    "CAM_FRONT_LEFT": (1.52, 0.49, 1.51, 55.0, 1272.6, 826.6, 479.8),
    "CAM_BACK": (0.03, 0.00, 1.57, 180.0, 809.2, 829.2, 481.8),
    "CAM_BACK_LEFT": (1.04, 0.48, 1.56, 110.0, 1256.7, 817.8, 451.9),
    "CAM_BACK_RIGHT": (1.07, -0.49, 1.55, -110.0, 1259.5, 807.3, 501.2),
}


@dataclass(frozen=True)
class Camera:
    name: str
    intrinsic: np.ndarray  # 3x3
    translation: tuple[float, float, float]  # sensor position in the ego frame
    rotation: Quaternion  # sensor (optical) frame -> ego frame
    width: int
    height: int

    def world_to_camera(self, ego_x: float, ego_y: float, ego_yaw: float) -> np.ndarray:
        """4x4 transform from map points to this camera's optical frame for an ego pose."""
        ego_from_world = transform_matrix([ego_x, ego_y, 0.0], yaw_quaternion(ego_yaw), inverse=True)
        camera_from_ego = transform_matrix(self.translation, self.rotation, inverse=True)
        return camera_from_ego @ ego_from_world

    def project(self, points_camera: np.ndarray) -> np.ndarray:
        """3xN optical-frame points (z > 0) -> 2xN pixels."""
        uvw = self.intrinsic @ points_camera
        return uvw[:2] / uvw[2:3]


def yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(axis=[0.0, 0.0, 1.0], angle=yaw)


def nuscenes_cameras(width: int = NUSCENES_IMAGE_SIZE[0], height: int = NUSCENES_IMAGE_SIZE[1],
                     names: tuple[str, ...] = NUSCENES_CAMERAS) -> list[Camera]:
    """The six-camera rig scaled to ``width`` x ``height`` (intrinsics scale with the image)."""
    if width < 16 or height < 16:
        raise ValueError(f"image size: expected at least 16x16 pixels, got {width}x{height}")
    sx, sy = width / NUSCENES_IMAGE_SIZE[0], height / NUSCENES_IMAGE_SIZE[1]
    cameras = []
    for name in names:
        x, y, z, yaw_deg, focal, cx, cy = NUSCENES_CALIBRATION[name]
        intrinsic = np.array([[focal * sx, 0.0, cx * sx], [0.0, focal * sy, cy * sy], [0.0, 0.0, 1.0]])
        rotation = yaw_quaternion(math.radians(yaw_deg)) * OPTICAL_TO_BODY
        cameras.append(Camera(name, intrinsic, (x, y, z), rotation, width, height))
    return cameras


def object_box(obj: ObjectState) -> Box:
    """The object's 3-D box in the map frame (nuScenes size order: width, length, height)."""
    length, width, height = obj.size
    return Box(list(obj.centre), [width, length, height], yaw_quaternion(obj.yaw))


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """4x4 transform of 3xN points."""
    return matrix[:3, :3] @ points + matrix[:3, 3:4]


def clip_near(polygon: np.ndarray) -> np.ndarray:
    """Clip a 3xN camera-frame polygon to z >= NEAR_PLANE (Sutherland-Hodgman on one plane)."""
    if (polygon[2] >= NEAR_PLANE).all():
        return polygon
    kept = []
    count = polygon.shape[1]
    for i in range(count):
        current, following = polygon[:, i], polygon[:, (i + 1) % count]
        current_in, following_in = current[2] >= NEAR_PLANE, following[2] >= NEAR_PLANE
        if current_in:
            kept.append(current)
        if current_in != following_in:
            t = (NEAR_PLANE - current[2]) / (following[2] - current[2])
            kept.append(current + t * (following - current))
    return np.array(kept).T if kept else np.zeros((3, 0))


# Box.corners(): 0-3 the front (+x) face, 4-7 the back; y signs +,-,-,+; z signs +,+,-,-.
BOX_FACES: dict[str, tuple[int, ...]] = {
    "front": (0, 1, 2, 3), "back": (5, 4, 7, 6), "left": (4, 0, 3, 7), "right": (1, 5, 6, 2), "top": (4, 5, 1, 0),
}
FACE_SHADE = {"top": 1.0, "front": 0.8, "back": 0.75, "left": 0.65, "right": 0.55}


@dataclass(frozen=True)
class Projection:
    centre: tuple[float, float] | None  # pixel centre when the 3-D centre is in front and inside the image
    bbox: tuple[float, float, float, float] | None  # projection of the (near-clipped) box, clipped to the image


def project_object(camera: Camera, world_to_camera: np.ndarray, obj: ObjectState) -> Projection:
    """Exact tag centre and 2-D box of an object in one camera."""
    centre = transform_points(world_to_camera, np.array(obj.centre, dtype=float).reshape(3, 1))[:, 0]
    corners = transform_points(world_to_camera, object_box(obj).corners())
    pixel = None
    if centre[2] > 0:
        u, v = camera.project(centre.reshape(3, 1))[:, 0]
        if 0 <= u < camera.width and 0 <= v < camera.height:
            pixel = (float(u), float(v))
    visible = [clip_near(corners[:, list(face)]) for face in BOX_FACES.values()] + [clip_near(corners[:, [2, 3, 7, 6]])]
    points = np.concatenate([p for p in visible if p.shape[1]], axis=1) if any(p.shape[1] for p in visible) else None
    bbox = None
    if points is not None:
        uv = camera.project(points)
        x1, y1 = np.clip(uv.min(axis=1), 0, [camera.width, camera.height])
        x2, y2 = np.clip(uv.max(axis=1), 0, [camera.width, camera.height])
        if x2 > x1 and y2 > y1:
            bbox = (float(x1), float(y1), float(x2), float(y2))
    return Projection(pixel, bbox)


# ---------------------------------------------------------------- drawing

def _fill(image: np.ndarray, camera: Camera, polygon_camera: np.ndarray, colour) -> None:
    clipped = clip_near(polygon_camera)
    if clipped.shape[1] < 3:
        return
    pixels = np.round(camera.project(clipped).T * (1 << SHIFT)).astype(np.int32)
    line = cv2.LINE_AA if image.dtype == np.uint8 else cv2.LINE_8
    cv2.fillPoly(image, [pixels], colour, lineType=line, shift=SHIFT)


def _rectangle(x1: float, x2: float, y1: float, y2: float) -> np.ndarray:
    return np.array([[x1, x2, x2, x1], [y1, y1, y2, y2], [0.0, 0.0, 0.0, 0.0]])


def road_polygons(road: RoadLayout, ego_x: float, ego_y: float) -> list[tuple[np.ndarray, tuple]]:
    """Ground polygons (3xN, map frame) with colours, in drawing order, near the ego."""
    lo, hi = max(road.x_min, ego_x - 400), min(road.x_max, ego_x + 400)
    polygons = [(_rectangle(ego_x - 1000, ego_x + 1000, ego_y - 1000, ego_y + 1000), GROUND)]
    # all sidewalks first, then all asphalt, so that each road cuts through the other's sidewalks
    sidewalks = [_rectangle(lo, hi, side * PARKING_EDGE, side * SIDEWALK_EDGE) for side in (1, -1)]
    asphalt = [_rectangle(lo, hi, -PARKING_EDGE, PARKING_EDGE)]
    gaps = []  # x spans where the main road's markings stop (intersection)
    markings = []
    if road.intersection_x is not None:
        xi = road.intersection_x
        y_lo, y_hi = ego_y - 400, ego_y + 400
        sidewalks += [_rectangle(xi + side * PARKING_EDGE, xi + side * SIDEWALK_EDGE, y_lo, y_hi) for side in (1, -1)]
        asphalt.append(_rectangle(xi - PARKING_EDGE, xi + PARKING_EDGE, y_lo, y_hi))
        gaps.append((xi - PARKING_EDGE, xi + PARKING_EDGE))
        markings += _markings_along_y(xi, y_lo, y_hi, (-PARKING_EDGE, PARKING_EDGE))
        markings.append((_rectangle(xi - PARKING_EDGE - 0.5, xi - PARKING_EDGE, -ROAD_HALF_WIDTH, 0), WHITE))
    polygons += [(p, SIDEWALK) for p in sidewalks] + [(p, ASPHALT) for p in asphalt] + markings
    polygons += _markings_along_x(max(lo, ego_x - DRAW_RANGE), min(hi, ego_x + DRAW_RANGE), gaps)
    if road.crosswalk_x is not None:
        for k in range(-6, 7):  # zebra stripes parallel to traffic
            y = k * 1.0
            polygons.append((_rectangle(road.crosswalk_x - 2.0, road.crosswalk_x + 2.0, y - 0.25, y + 0.25), WHITE))
    return polygons


def _markings_along_x(lo: float, hi: float, gaps: list[tuple[float, float]]) -> list[tuple[np.ndarray, tuple]]:
    marks = []
    spans = [(lo, hi)]
    for g_lo, g_hi in gaps:
        spans = [piece for a, b in spans for piece in ((a, min(b, g_lo)), (max(a, g_hi), b)) if piece[1] > piece[0]]
    for a, b in spans:
        for y in (-0.15, 0.15):  # double yellow centre line
            marks.append((_rectangle(a, b, y - 0.06, y + 0.06), YELLOW))
        for side in (1, -1):
            marks.append((_rectangle(a, b, side * ROAD_HALF_WIDTH - 0.08, side * ROAD_HALF_WIDTH + 0.08), WHITE))
            x = math.floor(a / 9.0) * 9.0
            while x < b:  # 3 m dashes, 6 m gaps between the two lanes of a direction
                if x + 3 > a:
                    marks.append((_rectangle(max(x, a), min(x + 3, b), side * LANE_WIDTH - 0.07,
                                             side * LANE_WIDTH + 0.07), WHITE))
                x += 9.0
    return marks


def _markings_along_y(x: float, lo: float, hi: float, gap: tuple[float, float]) -> list[tuple[np.ndarray, tuple]]:
    marks = []
    for a, b in ((lo, gap[0]), (gap[1], hi)):
        for dx in (-0.15, 0.15):
            marks.append((_rectangle(x + dx - 0.06, x + dx + 0.06, a, b), YELLOW))
    return marks


@dataclass(frozen=True)
class Part:
    """A coloured sub-box of an object, in the object's box frame (x forward, y left, z up from the ground)."""

    centre: tuple[float, float, float]
    size: tuple[float, float, float]  # length, width, height
    colour: tuple[int, int, int]


def object_parts(obj: ObjectState) -> list[Part]:
    """The boxes an object is drawn with; their union stays inside the annotated box."""
    length, width, height = obj.size
    colour = COLOURS.get(obj.colour, (0, 140, 255))
    if obj.kind == "car":
        return [Part((0.0, 0.0, 0.3 * height), (length, width, 0.6 * height), colour),
                Part((-0.1 * length, 0.0, 0.8 * height), (0.5 * length, 0.9 * width, 0.4 * height), (60, 50, 45))]
    if obj.kind == "truck":
        return [Part((0.38 * length, 0.0, 0.4 * height), (0.24 * length, width, 0.8 * height), colour),
                Part((-0.12 * length, 0.0, 0.5 * height), (0.76 * length, width, height), (200, 200, 200))]
    if obj.kind == "bus":
        return [Part((0.0, 0.0, 0.35 * height), (length, width, 0.7 * height), colour),
                Part((0.0, 0.0, 0.85 * height), (length, width, 0.3 * height), (70, 60, 50))]
    if obj.kind == "pedestrian":
        return [Part((0.0, 0.0, 0.72 * height), (0.3, 0.45, 0.56 * height), colour),
                Part((0.0, 0.0, 0.93 * height), (0.22, 0.22, 0.14 * height), (120, 150, 200))]
    if obj.kind == "cyclist":
        return [Part((0.0, 0.0, 0.28 * height), (length, 0.12, 0.5 * height), (40, 40, 40)),
                Part((-0.1, 0.0, 0.75 * height), (0.45, width * 0.75, 0.45 * height), colour)]
    if obj.kind == "cone":
        return [Part((0.0, 0.0, 0.5 * height), (0.3 * length, 0.3 * width, height), (0, 120, 255)),
                Part((0.0, 0.0, 0.05), (length, width, 0.1), (0, 120, 255))]
    return [Part((0.0, 0.0, 0.5 * height), (length, width, height), (60, 60, 210) if obj.kind == "barrier" else colour)]


def _lights(obj: ObjectState) -> list[tuple[str, np.ndarray, tuple[int, int, int]]]:
    """(face, 3x4 quad in the box frame, colour) for brake lights, turn signals and headlights."""
    if obj.kind not in ("car", "truck", "bus"):
        return []
    length, width, height = obj.size
    z = 0.45 * height if obj.kind == "car" else 0.25 * height
    lights = []
    for side in (1, -1):
        y = side * (width / 2 - 0.25)
        brake = (0, 0, 255) if obj.brake_lights else (20, 20, 100)
        lights.append(("back", _light_quad(-length / 2 - 0.02, y, z, 0.38 if obj.brake_lights else 0.3, 0.14), brake))
        lights.append(("front", _light_quad(length / 2 + 0.02, y, z, 0.3, 0.12), (200, 240, 255)))
        if obj.turn_signal == side:
            for face, x in (("back", -length / 2 - 0.03), ("front", length / 2 + 0.03)):
                lights.append((face, _light_quad(x, side * (width / 2 - 0.06), z + 0.12, 0.14, 0.12), (0, 165, 255)))
            lights.append(("left" if side > 0 else "right",
                           _side_quad(side * (width / 2 + 0.02), 0.35 * length, z, 0.3, 0.1), (0, 165, 255)))
    return lights


def _light_quad(x: float, y: float, z: float, w: float, h: float) -> np.ndarray:
    return np.array([[x] * 4, [y - w / 2, y + w / 2, y + w / 2, y - w / 2],
                     [z + h / 2, z + h / 2, z - h / 2, z - h / 2]])


def _side_quad(y: float, x: float, z: float, w: float, h: float) -> np.ndarray:
    return np.array([[x - w / 2, x + w / 2, x + w / 2, x - w / 2], [y] * 4,
                     [z + h / 2, z + h / 2, z - h / 2, z - h / 2]])


def _object_matrix(obj: ObjectState) -> np.ndarray:
    """Box frame (origin on the ground under the centre) -> map."""
    return transform_matrix([obj.x, obj.y, 0.0], yaw_quaternion(obj.yaw))


CORNER_SIGNS = np.array([[1, 1, 1, 1, -1, -1, -1, -1], [1, -1, -1, 1, 1, -1, -1, 1], [1, 1, -1, -1, 1, 1, -1, -1]]) / 2
FACE_INDEX = np.array(list(BOX_FACES.values()))  # 5 faces x 4 corners


def _box_corners(centre: tuple[float, float, float], size: tuple[float, float, float]) -> np.ndarray:
    """3x8 corners of an axis-aligned box (length, width, height) in Box.corners() order."""
    return np.asarray(centre, dtype=float).reshape(3, 1) + CORNER_SIGNS * np.asarray(size, dtype=float).reshape(3, 1)


def _facing_camera(corners_camera: np.ndarray) -> np.ndarray:
    """Per face of BOX_FACES: whether its outward normal points towards the camera origin."""
    quads = corners_camera[:, FACE_INDEX]  # 3 x faces x 4
    normals = np.cross((quads[:, :, 1] - quads[:, :, 0]).T, (quads[:, :, 2] - quads[:, :, 1]).T)  # faces x 3
    return np.einsum("fk,kf->f", normals, quads.mean(axis=2)) < 0


def _draw_part(image: np.ndarray, camera: Camera, to_camera: np.ndarray, part: Part, colour_override=None) -> None:
    corners = transform_points(to_camera, _box_corners(part.centre, part.size))
    for (name, face), facing in zip(BOX_FACES.items(), _facing_camera(corners), strict=True):
        if facing:
            shade = colour_override if colour_override is not None else tuple(
                int(c * FACE_SHADE[name]) for c in part.colour)
            _fill(image, camera, corners[:, list(face)], shade)


def _in_frustum(camera: Camera, centre: np.ndarray, radius: float) -> bool:
    """Bounding-sphere test against the near plane and the four image-side planes."""
    x, y, z = centre
    (fx, _, cx), (_, fy, cy) = camera.intrinsic[0], camera.intrinsic[1]
    w, h = camera.width, camera.height
    return bool(z > -radius
                and (fx * x + cx * z) / math.hypot(fx, cx) > -radius
                and (-fx * x + (w - cx) * z) / math.hypot(fx, w - cx) > -radius
                and (fy * y + cy * z) / math.hypot(fy, cy) > -radius
                and (-fy * y + (h - cy) * z) / math.hypot(fy, h - cy) > -radius)


def _draw_legs(image: np.ndarray, camera: Camera, camera_from_box: np.ndarray, obj: ObjectState, colour) -> None:
    """Two legs: a stride (feet apart along the heading) when walking, together when standing."""
    hip = 0.44 * obj.size[2]
    stride = 0.32 if obj.walking else 0.0
    for side, forward in ((1, stride), (-1, -stride)):
        leg = np.array([[0.0, forward], [side * 0.1, side * 0.1], [hip, 0.0]])
        points = transform_points(camera_from_box, leg)
        if (points[2] < NEAR_PLANE).any():
            continue
        (u1, u2), (v1, v2) = camera.project(points)
        thickness = max(1, round(camera.intrinsic[0, 0] * 0.13 / points[2].mean()))
        cv2.line(image, (round(u1), round(v1)), (round(u2), round(v2)), colour, thickness,
                 cv2.LINE_AA if image.dtype == np.uint8 else cv2.LINE_8)


def draw_object(image: np.ndarray, camera: Camera, world_to_camera: np.ndarray, obj: ObjectState,
                instance_colour=None) -> None:
    """Draw one object; ``instance_colour`` paints every part in one flat value (instance masks)."""
    camera_from_box = world_to_camera @ _object_matrix(obj)
    parts = sorted(object_parts(obj), key=lambda p: -np.linalg.norm(transform_points(
        camera_from_box, np.array(p.centre, dtype=float).reshape(3, 1))))
    if obj.kind == "pedestrian":
        _draw_legs(image, camera, camera_from_box, obj, instance_colour or (60, 50, 50))
    for part in parts:
        _draw_part(image, camera, camera_from_box, part, instance_colour)
    if instance_colour is not None:
        return
    facing = _facing_camera(transform_points(camera_from_box, _box_corners((0.0, 0.0, obj.size[2] / 2), obj.size)))
    faces = {name for name, visible in zip(BOX_FACES, facing, strict=True) if visible}
    for face, quad, colour in _lights(obj):
        if face in faces:
            _fill(image, camera, transform_points(camera_from_box, quad), colour)


def _sorted_far_to_near(state: WorldState, camera: Camera, world_to_camera: np.ndarray) -> list[ObjectState]:
    ranked = []
    for obj in state.objects:
        if math.hypot(obj.x - state.ego_x, obj.y - state.ego_y) > DRAW_RANGE:
            continue
        centre = transform_points(world_to_camera, np.array(obj.centre, dtype=float).reshape(3, 1))[:, 0]
        if not _in_frustum(camera, centre, float(np.linalg.norm(obj.size)) / 2):
            continue
        ranked.append((float(np.linalg.norm(centre)), obj))
    return [obj for _, obj in sorted(ranked, key=lambda item: -item[0])]


def _sky(camera: Camera) -> np.ndarray:
    """Vertical gradient down to the horizon row (cameras are level, so the horizon is at cy)."""
    rows = np.linspace(0.0, 1.0, camera.height)[:, None]
    horizon = camera.intrinsic[1, 2] / camera.height
    t = np.clip(rows / max(horizon, 1e-3), 0, 1)
    column = (SKY_TOP * (1 - t) + SKY_HORIZON * t).astype(np.uint8)
    return np.repeat(column[:, None, :], camera.width, axis=1)


def _blur_road(image: np.ndarray, camera: Camera, ego_speed: float) -> None:
    """Exposure motion blur of the road below the horizon, in place: how one frame shows the ego's speed.

    The near road moves across side views and down front/back views; markings smear by focal x speed x
    exposure / distance pixels (about 7 px at 12 m/s in a 224-px-wide view).
    """
    forward, left, _ = camera.rotation.rotate([0.0, 0.0, 1.0])  # optical axis in the ego frame
    length = camera.intrinsic[0, 0] * ego_speed * BLUR_EXPOSURE_S / NEAR_ROAD_DISTANCE
    horizon = int(camera.intrinsic[1, 2])
    road = image[horizon:]
    across, down = round(length * abs(left)), round(length * abs(forward))
    if across > 1:
        cv2.blur(road, (across, 1), dst=road)
    if down > 1:
        cv2.blur(road, (1, down), dst=road)


class Renderer:
    """Renders camera views of world states; caches the sky per camera."""

    def __init__(self, cameras: list[Camera]) -> None:
        self.cameras = cameras
        self._skies = {camera.name: _sky(camera) for camera in cameras}

    def render(self, state: WorldState, camera: Camera) -> np.ndarray:
        world_to_camera = camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw)
        image = self._skies[camera.name].copy()
        for polygon, colour in road_polygons(state.road, state.ego_x, state.ego_y):
            _fill(image, camera, transform_points(world_to_camera, polygon), colour)
        _blur_road(image, camera, state.ego_speed)
        for obj in _sorted_far_to_near(state, camera, world_to_camera):
            draw_object(image, camera, world_to_camera, obj)
        return image

    @staticmethod
    def instance_mask(state: WorldState, camera: Camera) -> np.ndarray:
        """int32 image of instance index + 1 (0: background), drawn with the same painter's order."""
        world_to_camera = camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw)
        mask = np.zeros((camera.height, camera.width), dtype=np.int32)
        for obj in _sorted_far_to_near(state, camera, world_to_camera):
            draw_object(mask, camera, world_to_camera, obj, instance_colour=obj.instance + 1)
        return mask
