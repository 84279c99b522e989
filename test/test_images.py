"""ROS image messages -> RGB arrays: raw encodings with row padding, JPEG/PNG (reduced decode), clear errors."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from drive_mllm_ros.bench.preprocess import jpeg_message, synthetic_camera_image
from drive_mllm_ros.images import ImageConversionError, camera_set_to_rgb, jpeg_size, to_rgb

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def raw_message(pixels: np.ndarray, encoding: str, padding: int = 0) -> SimpleNamespace:
    """A sensor_msgs/Image-shaped message whose rows carry `padding` extra bytes."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, padding), 255, np.uint8)], axis=1)
    return SimpleNamespace(encoding=encoding, height=height, width=width, step=padded.shape[1],
                           data=padded.tobytes())


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize(("encoding", "pixels"), [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
def test_raw_encodings_give_rgb(encoding, pixels, padding):
    out = to_rgb(raw_message(np.ascontiguousarray(pixels), encoding, padding))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_grey_rgb():
    grey = RGB[..., 0].copy()
    out = to_rgb(raw_message(grey[..., None], "mono8", padding=1))
    np.testing.assert_array_equal(out, np.dstack([grey] * 3))


def test_raw_errors_name_source_and_expectation():
    with pytest.raises(ImageConversionError, match=r"/CAM_FRONT/image_raw: unsupported image encoding '16UC1'"):
        to_rgb(raw_message(RGB, "16UC1"), "/CAM_FRONT/image_raw")
    short = raw_message(RGB, "rgb8")
    short.data = short.data[:-1]
    with pytest.raises(ImageConversionError, match=r"CAM_BACK: rgb8 data has 104 bytes, expected height x step"):
        to_rgb(short, "CAM_BACK")
    narrow = raw_message(RGB, "rgb8")
    narrow.step = 20
    with pytest.raises(ImageConversionError, match="step 20 is shorter than a rgb8 row"):
        to_rgb(narrow)


@pytest.mark.parametrize("image_format", ["png", "rgb8; png compressed bgr8"])
def test_png_is_lossless(image_format):
    _, encoded = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    out = to_rgb(SimpleNamespace(format=image_format, data=encoded.tobytes()))
    np.testing.assert_array_equal(out, RGB)


def test_jpeg_full_and_reduced_decode():
    scene = synthetic_camera_image(1)
    message = jpeg_message(scene)
    message.format = "rgb8; jpeg compressed bgr8"
    assert jpeg_size(message.data) == (1600, 900)
    full = to_rgb(message)
    assert full.shape == (900, 1600, 3)
    reference = cv2.cvtColor(cv2.imdecode(np.frombuffer(message.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(full, reference)
    assert np.abs(full.astype(int) - scene).mean() < 8  # JPEG noise; swapped channels would be ~20
    # a 896x448 mosaic view needs no more than half size; a 448x448 tile needs half size too (225 < 448)
    assert to_rgb(message, target_size=(896, 448)).shape == (450, 800, 3)
    assert to_rgb(message, target_size=(448, 448)).shape == (450, 800, 3)
    assert to_rgb(message, target_size=(300, 200)).shape == (225, 400, 3)
    assert to_rgb(message, target_size=(200, 100)).shape == (113, 200, 3)
    assert to_rgb(message, target_size=(1600, 900)).shape == (900, 1600, 3)


def test_corrupt_compressed_data_is_reported():
    message = jpeg_message(synthetic_camera_image(2, (64, 48)))
    with pytest.raises(ImageConversionError, match=r"CAM_FRONT: corrupt or truncated jpeg data \(40 bytes\)"):
        to_rgb(SimpleNamespace(format="jpeg", data=message.data[:40]), "CAM_FRONT")
    with pytest.raises(ImageConversionError, match="corrupt or truncated png data"):
        to_rgb(SimpleNamespace(format="png", data=b"not a png"), "CAM_BACK")
    with pytest.raises(ImageConversionError, match="unsupported compressed format 'tiff'"):
        to_rgb(SimpleNamespace(format="tiff", data=b""), "CAM_BACK")
    with pytest.raises(ImageConversionError, match="expected a sensor_msgs/Image or CompressedImage, got int"):
        to_rgb(3)


def test_camera_set_keeps_order():
    scenes = [synthetic_camera_image(seed, (320, 180)) for seed in range(3)]
    views = camera_set_to_rgb([jpeg_message(s) for s in scenes], ["a", "b", "c"])
    for view, scene in zip(views, scenes, strict=True):
        assert np.abs(view.astype(int) - scene).mean() < 8


def test_real_ros_messages():
    msg = pytest.importorskip("sensor_msgs.msg")
    padded = raw_message(RGB[..., ::-1].copy(), "bgr8", padding=2)
    image = msg.Image(encoding="bgr8", height=padded.height, width=padded.width, step=padded.step, data=padded.data)
    np.testing.assert_array_equal(to_rgb(image, "/CAM_FRONT/image_raw"), RGB)
    jpeg = jpeg_message(synthetic_camera_image(3))
    compressed = msg.CompressedImage(format="jpeg", data=jpeg.data)
    assert to_rgb(compressed, "/CAM_FRONT/image_rect_compressed", (896, 448)).shape == (450, 800, 3)
