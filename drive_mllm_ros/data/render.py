"""Six calibrated pinhole cameras and an OpenCV renderer for ``WorldState`` (no rclpy).

Cameras follow nuScenes conventions: intrinsics and extrinsics (sensor -> ego, ego = rear axle on
the ground, x forward, y left) close to the real rig, optical frame x right, y down, z forward.
Objects are 3-D boxes (``nuscenes.utils.data_classes.Box``) drawn far to near with shaded faces;
a car's brake lights, turn signals and a pedestrian's stride are drawn so that the state the QA
asks about is visible. ``project_object`` gives the exact tag centre and 2-D box.

Two camera rigs (``RIGS``): ``nuscenes`` and ``alt`` (other mounting heights, yaw angles and focal
lengths); cameras stay level so the horizon is the row ``cy``. Conditions (``LOOKS``) shift the domain:
``night`` (dark, lamps lit with glow, ego headlight beam, sensor noise), ``rain`` (streaks, wet-road
reflections, lower contrast), ``fog`` (colour blends toward the fog by distance); ``clear`` is the
plain look, pixel for pixel what the renderer drew before conditions existed. Noise and streaks are
seeded: a (seed, camera, time) triple always gives the same image.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

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
SKY_TOP, SKY_HORIZON = (200, 150, 110), (235, 215, 200)  # BGR
GROUND, ASPHALT, SIDEWALK = (92, 112, 104), (72, 72, 74), (160, 160, 155)
WHITE, YELLOW = (230, 230, 230), (40, 190, 225)
TAIL_LIGHT, TAIL_LIGHT_LIT, BRAKE_LIGHT = (20, 20, 100), (40, 40, 190), (0, 0, 255)
OPTICAL_TO_BODY = Quaternion(matrix=np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))

# name -> (x, y, z in ego frame, yaw in degrees, focal length, cx, cy) at 1600x900, close to the nuScenes rig
Calibration = dict[str, tuple[float, float, float, float, float, float, float]]
NUSCENES_CALIBRATION: Calibration = {
    "CAM_FRONT": (1.70, 0.02, 1.51, 0.0, 1266.4, 816.3, 491.5),
    "CAM_FRONT_RIGHT": (1.55, -0.49, 1.49, -55.0, 1260.8, 808.0, 495.3),
    "CAM_FRONT_LEFT": (1.52, 0.49, 1.51, 55.0, 1272.6, 826.6, 479.8),
    "CAM_BACK": (0.03, 0.00, 1.57, 180.0, 809.2, 829.2, 481.8),
    "CAM_BACK_LEFT": (1.04, 0.48, 1.56, 110.0, 1256.7, 817.8, 451.9),
    "CAM_BACK_RIGHT": (1.07, -0.49, 1.55, -110.0, 1259.5, 807.3, 501.2),
}
# A second rig, as on a taller vehicle: front cameras higher and wider-angle, side and back cameras lower,
# yaw angles and focal lengths changed. Level like the nuScenes rig (the sky and road blur rely on it).
ALT_CALIBRATION: Calibration = {
    "CAM_FRONT": (2.10, 0.00, 2.05, 0.0, 1050.0, 800.0, 450.0),
    "CAM_FRONT_RIGHT": (1.90, -0.80, 1.85, -65.0, 1100.0, 790.0, 455.0),
    "CAM_FRONT_LEFT": (1.90, 0.80, 1.85, 65.0, 1100.0, 810.0, 445.0),
    "CAM_BACK": (-0.60, 0.00, 1.20, 180.0, 950.0, 800.0, 450.0),
    "CAM_BACK_LEFT": (0.90, 0.85, 1.25, 120.0, 1150.0, 805.0, 460.0),
    "CAM_BACK_RIGHT": (0.90, -0.85, 1.25, -120.0, 1150.0, 795.0, 440.0),
}
RIGS: dict[str, Calibration] = {"nuscenes": NUSCENES_CALIBRATION, "alt": ALT_CALIBRATION}


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
                     names: tuple[str, ...] = NUSCENES_CAMERAS, rig: str = "nuscenes") -> list[Camera]:
    """The six nuScenes-named cameras of a rig (``RIGS``) scaled to ``width`` x ``height`` (intrinsics scale
    with the image)."""
    if width < 16 or height < 16:
        raise ValueError(f"image size: expected at least 16x16 pixels, got {width}x{height}")
    if rig not in RIGS:
        raise ValueError(f"rig: expected one of {sorted(RIGS)}, got '{rig}'")
    sx, sy = width / NUSCENES_IMAGE_SIZE[0], height / NUSCENES_IMAGE_SIZE[1]
    cameras = []
    for name in names:
        x, y, z, yaw_deg, focal, cx, cy = RIGS[rig][name]
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


# ---------------------------------------------------------------- conditions

Colour = tuple[int, int, int]
Paint = Callable[[Colour], Colour]


@dataclass(frozen=True)
class Look:
    """What a condition does to the picture; the defaults are the clear day, which changes nothing."""

    sky_top: Colour = SKY_TOP
    sky_horizon: Colour = SKY_HORIZON
    exposure: float = 1.0  # scale of every surface colour; lamps keep theirs
    lamps_on: bool = False  # head and tail lights lit and glowing, the ego's headlight beam on the road
    fog_colour: Colour | None = None
    fog_distance: float = 35.0  # metres over which 1 - 1/e of a colour turns to fog
    reflection: float = 0.0  # opacity of the objects mirrored in the wet road
    haze: float = 0.0  # blend of the whole image toward grey: lower contrast
    streaks: bool = False  # falling rain
    noise: float = 0.0  # sensor noise, standard deviation in 8-bit levels

    @property
    def per_pixel(self) -> bool:
        """Whether any effect works on pixels rather than on drawing colours."""
        return bool(self.lamps_on or self.fog_colour or self.reflection or self.haze or self.streaks or self.noise)

    def tint(self, colour: Colour, distance: float = 0.0, lamp: bool = False) -> Colour:
        """A surface (or lamp) colour as this condition shows it at ``distance`` metres from the camera."""
        if self.exposure == 1.0 and self.fog_colour is None:
            return colour  # the very same tuple: clear stays pixel-identical
        value = np.asarray(colour, dtype=float) * (1.0 if lamp else self.exposure)
        if self.fog_colour is not None:
            value += (np.asarray(self.fog_colour) - value) * fog_fraction(distance, self.fog_distance)
        return tuple(int(round(v)) for v in value)


def fog_fraction(distance: np.ndarray | float, fog_distance: float) -> np.ndarray | float:
    """Share of the fog colour in what is seen at ``distance`` (Beer-Lambert extinction)."""
    return 1.0 - np.exp(-np.asarray(distance) / fog_distance)


LOOKS: dict[str, Look] = {
    "clear": Look(),
    "night": Look(sky_top=(22, 10, 6), sky_horizon=(48, 36, 32), exposure=0.28, lamps_on=True, noise=6.0),
    "rain": Look(sky_top=(140, 135, 130), sky_horizon=(175, 172, 168), exposure=0.75, reflection=0.35, haze=0.3,
                 streaks=True, noise=2.0),
    "fog": Look(sky_top=(200, 200, 196), sky_horizon=(200, 200, 196), exposure=0.95, fog_colour=(200, 200, 196)),
}
CONDITIONS: tuple[str, ...] = tuple(LOOKS)


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


def _lights(obj: ObjectState, lamps_on: bool = False) -> list[tuple[str, np.ndarray, tuple[int, int, int]]]:
    """(face, 3x4 quad in the box frame, colour) for brake lights, turn signals and headlights; with
    ``lamps_on`` (night) tail lights glow too, dimmer and smaller than brake lights."""
    if obj.kind not in ("car", "truck", "bus"):
        return []
    length, width, height = obj.size
    z = 0.45 * height if obj.kind == "car" else 0.25 * height
    lights = []
    for side in (1, -1):
        y = side * (width / 2 - 0.25)
        brake = BRAKE_LIGHT if obj.brake_lights else TAIL_LIGHT_LIT if lamps_on else TAIL_LIGHT
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


def _draw_part(image: np.ndarray, camera: Camera, to_camera: np.ndarray, part: Part, colour_override,
               paint: Paint) -> None:
    corners = transform_points(to_camera, _box_corners(part.centre, part.size))
    for (name, face), facing in zip(BOX_FACES.items(), _facing_camera(corners), strict=True):
        if facing:
            shade = colour_override if colour_override is not None else paint(tuple(
                int(c * FACE_SHADE[name]) for c in part.colour))
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


def _draw_legs(image: np.ndarray, camera: Camera, camera_from_box: np.ndarray, obj: ObjectState, colour,
               z_sign: float = 1.0) -> None:
    """Two legs: a stride (feet apart along the heading) when walking, together when standing."""
    hip = z_sign * 0.44 * obj.size[2]
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
                instance_colour=None, look: Look | None = None, distance: float = 0.0, mirror: bool = False) -> None:
    """Draw one object; ``instance_colour`` paints every part in one flat value (instance masks). ``look`` tints
    colours for a condition (``distance``: camera to object, for fog); ``mirror`` draws the object reflected in
    the ground plane (a wet road)."""
    look = look or LOOKS["clear"]
    paint, lamp = partial(look.tint, distance=distance), partial(look.tint, distance=distance, lamp=True)
    z_sign = -1.0 if mirror else 1.0
    camera_from_box = world_to_camera @ _object_matrix(obj)
    parts = [Part((x, y, z_sign * z), p.size, p.colour) for p in object_parts(obj) for x, y, z in [p.centre]]
    parts.sort(key=lambda p: -np.linalg.norm(transform_points(camera_from_box, np.array(p.centre).reshape(3, 1))))
    if obj.kind == "pedestrian":
        _draw_legs(image, camera, camera_from_box, obj, instance_colour or paint((60, 50, 50)), z_sign)
    for part in parts:
        _draw_part(image, camera, camera_from_box, part, instance_colour, paint)
    if instance_colour is not None:
        return
    box = _box_corners((0.0, 0.0, z_sign * obj.size[2] / 2), obj.size)
    facing = _facing_camera(transform_points(camera_from_box, box))
    faces = {name for name, visible in zip(BOX_FACES, facing, strict=True) if visible}
    for face, quad, colour in _lights(obj, look.lamps_on):
        if face in faces:
            _fill(image, camera, transform_points(camera_from_box, quad * [[1.0], [1.0], [z_sign]]), lamp(colour))


def _sorted_far_to_near(state: WorldState, camera: Camera,
                        world_to_camera: np.ndarray) -> list[tuple[float, ObjectState]]:
    """(distance from the camera, object) of the objects in view, farthest first."""
    ranked = []
    for obj in state.objects:
        if math.hypot(obj.x - state.ego_x, obj.y - state.ego_y) > DRAW_RANGE:
            continue
        centre = transform_points(world_to_camera, np.array(obj.centre, dtype=float).reshape(3, 1))[:, 0]
        if not _in_frustum(camera, centre, float(np.linalg.norm(obj.size)) / 2):
            continue
        ranked.append((float(np.linalg.norm(centre)), obj))
    return sorted(ranked, key=lambda item: -item[0])


def _sky(camera: Camera, top: Colour = SKY_TOP, horizon_colour: Colour = SKY_HORIZON) -> np.ndarray:
    """Vertical gradient down to the horizon row (cameras are level, so the horizon is at cy)."""
    rows = np.linspace(0.0, 1.0, camera.height)[:, None]
    horizon = camera.intrinsic[1, 2] / camera.height
    t = np.clip(rows / max(horizon, 1e-3), 0, 1)
    column = (np.array(top) * (1 - t) + np.array(horizon_colour) * t).astype(np.uint8)
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


EGO_FRONT = 3.8  # metres from the rear axle (ego origin) to the front bumper: where the headlight beam starts
BEAM_GAIN, BEAM_RANGE = 1.6, 22.0  # brightening of the lit road at the bumper and its 1/e fall-off in metres
GLOW_LEVEL, GLOW_GAIN = 180, 1.5  # channels this bright at night are lamps (lit road stays below): they bloom
GLOW_SCALE = 4  # the bloom is blurred at a quarter of the image size: same look, a fraction of the cost
HAZE_GREY = 150.0
NOISE_MARGIN = 64  # noise and streak layers are cut at a random offset from a larger, once-drawn bank


def ground_points(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel (height x width): where its ray meets the ground in the ego frame (x, y) and how far from the
    camera that is (inf for rays at or above the horizon)."""
    v, u = np.mgrid[0:camera.height, 0:camera.width]
    pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    rays = (camera.rotation.rotation_matrix @ np.linalg.inv(camera.intrinsic)) @ pixels  # ego-frame directions
    tx, ty, tz = camera.translation
    down = rays[2] < -1e-9
    with np.errstate(divide="ignore", invalid="ignore"):  # rays that never reach the ground are masked out
        scale = np.where(down, tz / -rays[2], np.inf)
        x = np.where(down, tx + scale * rays[0], -np.inf)
        y = np.where(down, ty + scale * rays[1], 0.0)
    distance = scale * np.linalg.norm(rays, axis=0)
    return tuple(a.reshape(camera.height, camera.width) for a in (x, y, distance))


def headlight_gain(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Brightening of the ground lit by the ego's low beams: a cone widening ahead, fading with distance."""
    ahead = x - EGO_FRONT
    spread = 1.0 + 0.35 * np.clip(ahead, 0.0, None)
    beam = np.where(ahead > 0, np.exp(-(y / spread) ** 2 - np.clip(ahead, 0.0, None) / BEAM_RANGE), 0.0)
    return 1.0 + BEAM_GAIN * beam


@dataclass(frozen=True)
class GroundMaps:
    """Per-camera, per-pixel factors of a look, computed once: headlight gain (3 channels) and fog weights."""

    gain: np.ndarray | None = None
    fog: np.ndarray | None = None  # share of the fog colour
    clear: np.ndarray | None = None  # 1 - fog
    fog_image: np.ndarray | None = None


class Atmosphere:
    """The per-pixel side of a look: ground maps per camera, seeded noise and rain layers per image size."""

    def __init__(self, look: Look, seed: int) -> None:
        self.look, self.seed = look, seed
        self._ground: dict[str, GroundMaps] = {}
        self._banks: dict[tuple[str, int, int], np.ndarray] = {}

    def ground(self, image: np.ndarray, camera: Camera) -> None:
        """Headlight beam and fog on what is drawn so far (sky and road), in place."""
        maps = self._ground_maps(camera)
        if maps.gain is not None:
            cv2.multiply(image, maps.gain, dst=image, dtype=cv2.CV_8U)
        if maps.fog is not None:
            image[:] = cv2.blendLinear(image, maps.fog_image, maps.clear, maps.fog)

    def _ground_maps(self, camera: Camera) -> GroundMaps:
        if camera.name not in self._ground:
            x, y, distance = ground_points(camera)
            maps = GroundMaps()
            if self.look.lamps_on:
                maps = GroundMaps(gain=cv2.merge([headlight_gain(x, y).astype(np.float32)] * 3))
            if self.look.fog_colour is not None:
                fog = fog_fraction(distance, self.look.fog_distance).astype(np.float32)
                fog_image = np.empty((camera.height, camera.width, 3), np.uint8)
                fog_image[:] = self.look.fog_colour
                maps = GroundMaps(maps.gain, fog, 1.0 - fog, fog_image)
            self._ground[camera.name] = maps
        return self._ground[camera.name]

    def finish(self, image: np.ndarray, camera: Camera, time_s: float) -> None:
        """Lamp glow, haze, rain streaks and sensor noise on the finished image, in place."""
        rng = np.random.default_rng([self.seed, zlib.crc32(camera.name.encode()), round(time_s * 1000)])
        height, width = image.shape[:2]
        if self.look.lamps_on:
            cv2.addWeighted(image, 1.0, glow(image), GLOW_GAIN, 0.0, dst=image)
        if self.look.haze:
            cv2.convertScaleAbs(image, dst=image, alpha=1.0 - self.look.haze, beta=self.look.haze * HAZE_GREY)
        if self.look.streaks:
            streaks = np.ascontiguousarray(self._cut(self._bank("streaks", width, height), rng, height, width))
            cv2.add(image, cv2.cvtColor(streaks, cv2.COLOR_GRAY2BGR), dst=image)
        if self.look.noise:
            cv2.add(image, self._cut(self._bank("noise", width, height), rng, height, width), dst=image,
                    dtype=cv2.CV_8U)

    @staticmethod
    def _cut(bank: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        dy, dx = rng.integers(0, NOISE_MARGIN, 2)
        return bank[dy:dy + height, dx:dx + width]

    def _bank(self, kind: str, width: int, height: int) -> np.ndarray:
        """A noise (int16, 3 channels) or streak (uint8) layer NOISE_MARGIN larger than the image, drawn once."""
        key = (kind, width, height)
        if key not in self._banks:
            rng = np.random.default_rng([self.seed, zlib.crc32(kind.encode())])
            size = (height + NOISE_MARGIN, width + NOISE_MARGIN)
            if kind == "noise":
                self._banks[key] = np.round(rng.normal(0.0, self.look.noise, (*size, 3))).astype(np.int16)
            else:
                self._banks[key] = rain_streaks(rng, *size)
        return self._banks[key]


def glow(image: np.ndarray) -> np.ndarray:
    """The bloom of the lamps: channels at or above GLOW_LEVEL, blurred over about 0.6 % of the image width."""
    height, width = image.shape[:2]
    _, lit = cv2.threshold(image, GLOW_LEVEL - 1, 255, cv2.THRESH_TOZERO)
    small = (max(1, width // GLOW_SCALE), max(1, height // GLOW_SCALE))
    blurred = cv2.GaussianBlur(cv2.resize(lit, small, interpolation=cv2.INTER_AREA), (0, 0), max(0.5, width / 640))
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)


def rain_streaks(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Short, slanted, faint light lines (falling drops during the exposure), one per ~400 pixels."""
    layer = np.zeros((height, width), dtype=np.uint8)
    count = height * width // 400
    starts = rng.uniform([0, 0], [width, height], (count, 2))
    lengths = rng.uniform(0.04, 0.1, count) * height
    slant = math.radians(12.0)
    ends = starts + np.stack([lengths * math.sin(slant), lengths * math.cos(slant)], axis=1)
    for start, end, level in zip(starts.astype(int), ends.astype(int), rng.integers(20, 45, count), strict=True):
        cv2.line(layer, tuple(map(int, start)), tuple(map(int, end)), int(level), 1, cv2.LINE_AA)
    return layer


class Renderer:
    """Renders camera views of world states under one condition (``LOOKS``); caches the sky per camera.

    ``seed`` drives the condition's noise and rain, so a (seed, camera, state time) always gives the same image.
    """

    def __init__(self, cameras: list[Camera], condition: str = "clear", seed: int = 0) -> None:
        if condition not in LOOKS:
            raise ValueError(f"condition: expected one of {list(LOOKS)}, got '{condition}'")
        self.cameras = cameras
        self.condition = condition
        self.look = LOOKS[condition]
        self.atmosphere = Atmosphere(self.look, seed) if self.look.per_pixel else None
        self._skies = {camera.name: _sky(camera, self.look.sky_top, self.look.sky_horizon) for camera in cameras}

    def render(self, state: WorldState, camera: Camera) -> np.ndarray:
        world_to_camera = camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw)
        image = self._skies[camera.name].copy()
        for polygon, colour in road_polygons(state.road, state.ego_x, state.ego_y):
            _fill(image, camera, transform_points(world_to_camera, polygon), self.look.tint(colour))
        _blur_road(image, camera, state.ego_speed)
        ranked = _sorted_far_to_near(state, camera, world_to_camera)
        if self.atmosphere is not None:
            self.atmosphere.ground(image, camera)
        if self.look.reflection:
            self._reflect(image, camera, world_to_camera, ranked)
        for distance, obj in ranked:
            draw_object(image, camera, world_to_camera, obj, look=self.look, distance=distance)
        if self.atmosphere is not None:
            self.atmosphere.finish(image, camera, state.time)
        return image

    def _reflect(self, image: np.ndarray, camera: Camera, world_to_camera: np.ndarray,
                 ranked: list[tuple[float, ObjectState]]) -> None:
        """Objects mirrored in the ground plane, blended onto the road: a wet road's reflections."""
        wet = image.copy()
        for distance, obj in ranked:
            draw_object(wet, camera, world_to_camera, obj, look=self.look, distance=distance, mirror=True)
        cv2.addWeighted(image, 1.0 - self.look.reflection, wet, self.look.reflection, 0.0, dst=image)

    @staticmethod
    def instance_mask(state: WorldState, camera: Camera) -> np.ndarray:
        """int32 image of instance index + 1 (0: background), drawn with the same painter's order."""
        world_to_camera = camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw)
        mask = np.zeros((camera.height, camera.width), dtype=np.int32)
        for _, obj in _sorted_far_to_near(state, camera, world_to_camera):
            draw_object(mask, camera, world_to_camera, obj, instance_colour=obj.instance + 1)
        return mask
