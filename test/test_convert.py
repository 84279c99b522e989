"""convert-nuscenes: topics, types, frame ids, counts, stamps and rates read back with rosbags; bad dataroots."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from drive_mllm_ros.cameras import NUSCENES_CAMERAS
from drive_mllm_ros.data.convert import ConvertOptions, convert
from drive_mllm_ros.data.convert import main as convert_main
from drive_mllm_ros.data.synthetic import WorldOptions, generate

SWEEPS = 18  # 1.5 s at 12 Hz


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(WorldOptions(out, scenes=2, seed=11, duration=SWEEPS / 12, width=160, height=90,
                          scenarios=("cruise", "turn_right")))
    return out / "nuscenes"


def read_bag(path: Path) -> dict[str, list]:
    """topic -> [(bag time, message)]"""
    messages = defaultdict(list)
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        for connection, timestamp, data in reader.messages():
            messages[connection.topic].append((timestamp, connection.msgtype, reader.deserialize(data,
                                                                                                  connection.msgtype)))
    return messages


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_layout_counts_stamps_and_rates(dataroot, tmp_path, storage):
    figures = convert(ConvertOptions(dataroot, tmp_path, scenes=("scene-0001",), storage=storage))
    assert figures["bags"] == 1
    bag = read_bag(tmp_path / "scene-0001")
    expected = {"/tf_static", "/tf", "/odom"} | {f"/{c}/image_rect_compressed" for c in NUSCENES_CAMERAS} | {
        f"/{c}/camera_info" for c in NUSCENES_CAMERAS}
    assert set(bag) == expected
    sample_data = json.loads((dataroot / "v1.0-mini/sample_data.json").read_text())
    front_stamps = sorted(r["timestamp"] for r in sample_data if "__CAM_FRONT__" in r["filename"]
                          and "synthetic-s11-0001" in r["filename"])
    for camera in NUSCENES_CAMERAS:
        images = bag[f"/{camera}/image_rect_compressed"]
        assert len(images) == SWEEPS and len(bag[f"/{camera}/camera_info"]) == SWEEPS
        for timestamp, msgtype, msg in images:
            assert msgtype == "sensor_msgs/msg/CompressedImage" and msg.format == "jpeg"
            assert msg.header.frame_id == camera
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == timestamp
            assert bytes(msg.data[:2]) == b"\xff\xd8"
        stamps = np.array([t for t, _, _ in images])
        assert np.diff(stamps).mean() / 1e9 == pytest.approx(1 / 12, rel=0.01)
        info = bag[f"/{camera}/camera_info"][0][2]
        assert (info.width, info.height) == (160, 90) and info.header.frame_id == camera
    assert [t // 1000 for t, _, _ in bag["/CAM_FRONT/image_rect_compressed"]] == front_stamps
    (_, static_type, static), = bag["/tf_static"]
    assert static_type == "tf2_msgs/msg/TFMessage"
    assert {t.child_frame_id for t in static.transforms} == set(NUSCENES_CAMERAS)
    assert {t.header.frame_id for t in static.transforms} == {"base_link"}
    assert len(bag["/tf"]) == len(bag["/odom"]) == SWEEPS
    tf = bag["/tf"][0][2].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("map", "base_link")
    odom = bag["/odom"][-1][2]
    assert odom.twist.twist.linear.x > 1.0  # the ego drives forward in base_link


def test_raw_images_and_camera_subset(dataroot, tmp_path):
    convert(ConvertOptions(dataroot, tmp_path, scenes=("scene-0002",), cameras=("CAM_FRONT",), raw=True))
    bag = read_bag(tmp_path / "scene-0002")
    assert set(bag) == {"/tf_static", "/tf", "/odom", "/CAM_FRONT/image_rect", "/CAM_FRONT/camera_info"}
    _, msgtype, image = bag["/CAM_FRONT/image_rect"][0]
    assert msgtype == "sensor_msgs/msg/Image"
    assert (image.width, image.height, image.encoding, image.step) == (160, 90, "bgr8", 480)


def test_missing_image_names_the_file(dataroot, tmp_path, capsys):
    broken = tmp_path / "nuscenes"
    shutil.copytree(dataroot, broken)
    victim = sorted((broken / "sweeps" / "CAM_BACK").iterdir())[3]
    victim.unlink()
    assert convert_main(["--dataroot", str(broken), "--out", str(tmp_path / "bags")]) == 2
    assert f"missing image {victim}" in capsys.readouterr().err


def test_missing_table_names_the_file(dataroot, tmp_path, capsys):
    broken = tmp_path / "nuscenes"
    shutil.copytree(dataroot / "v1.0-mini", broken / "v1.0-mini")
    (broken / "v1.0-mini" / "ego_pose.json").unlink()
    assert convert_main(["--dataroot", str(broken), "--out", str(tmp_path / "bags")]) == 2
    assert "ego_pose.json" in capsys.readouterr().err
    assert convert_main(["--dataroot", str(broken), "--version", "v1.0-trainval", "--out", str(tmp_path)]) == 2
    assert "v1.0-trainval" in capsys.readouterr().err
