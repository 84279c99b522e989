"""Key objects drawn on the stitched mosaic (the node's ~/annotated image and report figures). Pure Python."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from .cameras import MOSAIC_COORD_RANGE, CameraRig

PREDICTED_COLOR = (255, 64, 32)  # RGB
TRUTH_COLOR = (40, 220, 80)


def mosaic_point(rig: CameraRig, camera: str, x: float, y: float) -> tuple[int, int]:
    """Camera pixel -> pixel in the stitched mosaic image."""
    xn, yn = rig.to_mosaic(camera, x, y)
    width, height = rig.mosaic_size
    return int(round(xn / MOSAIC_COORD_RANGE * width)), int(round(yn / MOSAIC_COORD_RANGE * height))


def draw_key_objects(
    mosaic: np.ndarray, rig: CameraRig, objects: Iterable[dict], color=PREDICTED_COLOR, marker: int = cv2.MARKER_CROSS
) -> np.ndarray:
    """Draw each {id, camera, x, y} object on a copy of an RGB mosaic; objects on unknown cameras are skipped."""
    out = np.ascontiguousarray(mosaic).copy()
    for obj in objects:
        if obj["camera"] not in rig.names:
            continue
        point = mosaic_point(rig, obj["camera"], obj["x"], obj["y"])
        cv2.drawMarker(out, point, color, marker, markerSize=28, thickness=3)
        cv2.putText(
            out, obj["id"], (point[0] + 10, point[1] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, color, 2, cv2.LINE_AA
        )
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not JPEG-encode an image of shape {rgb.shape}")
    return buffer.tobytes()
