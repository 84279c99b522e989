"""ROS image messages -> RGB uint8 numpy arrays, without cv_bridge or rclpy.

Duck-typed on the message fields: sensor_msgs/Image (`encoding, height, width, step, data`) and
sensor_msgs/CompressedImage (`format, data`). JPEGs are decoded at a reduced size when the caller's
target size allows it (a 2x reduced decode costs about a third of a full one).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import cv2
import numpy as np

# encoding -> (channels, OpenCV conversion to RGB or None when already RGB)
RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}
JPEG_REDUCED_READS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                      (2, cv2.IMREAD_REDUCED_COLOR_2))
# Start-of-frame markers carrying the image size (baseline, extended, progressive, lossless...)
JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# A reduced decode may be enlarged back by at most this much (896 px from an 800-px half-size 1600 view).
MAX_UPSCALE = 1.15


class ImageConversionError(ValueError):
    """An image message that cannot become an RGB array; the message names the source and what was expected."""


def to_rgb(msg: Any, source: str = "image", target_size: tuple[int, int] | None = None) -> np.ndarray:
    """An Image or CompressedImage message -> HxWx3 RGB uint8.

    source names the input in errors (topic or camera). target_size (width, height) lets JPEGs be decoded
    at a reduced size that still covers it (up to MAX_UPSCALE smaller); the result is not resized to it.
    """
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg, source, target_size)
    if hasattr(msg, "encoding"):
        return raw_to_rgb(msg, source)
    raise ImageConversionError(f"{source}: expected a sensor_msgs/Image or CompressedImage, got {type(msg).__name__}")


def camera_set_to_rgb(messages: list[Any], sources: list[str], target_size: tuple[int, int] | None = None,
                      return_errors: bool = False) -> list[np.ndarray | ImageConversionError]:
    """Several messages (one camera set) -> RGB arrays in the same order, decoded in parallel threads
    (OpenCV's decoders release the GIL, so this scales with free cores).

    return_errors: a message that cannot be converted gives its ImageConversionError in its place instead of
    raising, so one bad camera does not sink the set.
    """
    if len(messages) != len(sources):
        raise ValueError(f"sources: expected {len(messages)} names (one per message), got {len(sources)}")
    convert = to_rgb_or_error if return_errors else to_rgb
    return list(decode_pool().map(convert, messages, sources, [target_size] * len(messages)))


def to_rgb_or_error(msg: Any, source: str, target_size: tuple[int, int] | None) -> np.ndarray | ImageConversionError:
    try:
        return to_rgb(msg, source, target_size)
    except ImageConversionError as error:
        return error


@cache
def decode_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="decode")


def raw_to_rgb(msg: Any, source: str = "image") -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8, rows padded to `step` bytes) -> RGB uint8."""
    encoding = msg.encoding.lower()
    if encoding not in RAW_ENCODINGS:
        raise ImageConversionError(f"{source}: unsupported image encoding '{msg.encoding}', expected one of "
                                   f"{sorted(RAW_ENCODINGS)}")
    channels, conversion = RAW_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if step < width * channels:
        raise ImageConversionError(f"{source}: step {step} is shorter than a {encoding} row of {width} pixels "
                                   f"({width * channels} bytes)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != height * step:
        raise ImageConversionError(f"{source}: {encoding} data has {data.size} bytes, expected height x step = "
                                   f"{height} x {step} = {height * step}")
    pixels = data.reshape(height, step)[:, :width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(pixels) if conversion is None else cv2.cvtColor(pixels, conversion)


def compressed_to_rgb(msg: Any, source: str = "image", target_size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png; format like 'jpeg' or 'rgb8; jpeg compressed bgr8') -> RGB uint8."""
    image_format = msg.format.lower()
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if "png" in image_format:
        return decode(data, cv2.IMREAD_COLOR, source, "png")
    if "jpeg" in image_format or "jpg" in image_format:
        return decode(data, jpeg_read_flag(bytes(msg.data[:65536]), target_size), source, "jpeg")
    raise ImageConversionError(f"{source}: unsupported compressed format '{msg.format}', expected jpeg or png")


def decode(data: np.ndarray, flag: int, source: str, kind: str) -> np.ndarray:
    """The decoder writes RGB itself (IMREAD_COLOR_RGB): no BGR image and no conversion pass."""
    rgb = cv2.imdecode(data, flag | cv2.IMREAD_COLOR_RGB) if data.size else None
    if rgb is None:
        raise ImageConversionError(f"{source}: corrupt or truncated {kind} data ({data.size} bytes), expected a "
                                   f"decodable {kind} image")
    return rgb


def jpeg_read_flag(data: bytes, target_size: tuple[int, int] | None) -> int:
    """The largest OpenCV reduced-decode flag whose output still covers target_size (within MAX_UPSCALE)."""
    size = jpeg_size(data) if target_size else None
    if size is None:
        return cv2.IMREAD_COLOR
    for factor, flag in JPEG_REDUCED_READS:
        if all(side / factor * MAX_UPSCALE >= target for side, target in zip(size, target_size, strict=True)):
            return flag
    return cv2.IMREAD_COLOR


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header; our own walk because OpenCV has no header-only read."""
    position = 2
    while position + 9 <= len(data) and data[0:2] == b"\xff\xd8":
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in JPEG_SOF_MARKERS:
            height = int.from_bytes(data[position + 5:position + 7], "big")
            width = int.from_bytes(data[position + 7:position + 9], "big")
            return width, height
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return None
