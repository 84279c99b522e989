"""`drive-mllm convert-nuscenes`: a nuScenes dataroot (real or synthetic) -> one ROS 2 bag per scene.

Layout of public nuScenes ROS 2 bags, at the data's own stamps (header stamp = bag time =
``sample_data.timestamp``): ``/CAM_*/image_rect_compressed`` (``sensor_msgs/CompressedImage``, jpeg
bytes as stored, frame id = camera name) or ``/CAM_*/image_rect`` (raw ``sensor_msgs/Image`` bgr8
with ``--raw``), ``/CAM_*/camera_info`` with every image, ``/tf_static`` once (base_link -> cameras,
latched QoS), ``/tf`` (map -> base_link) and ``/odom`` (``nav_msgs/Odometry``) at every ego pose.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pyquaternion import Quaternion
from rosbags.convert.converter import LATCH
from tqdm import tqdm

from ..cameras import DEFAULT_TOPIC_PATTERN, NUSCENES_CAMERAS
from .bags import default_typestore, open_writer, stamp_from_ns
from .nuscenes_export import TABLES

RAW_TOPIC_PATTERN = "/{camera}/image_rect"
INFO_TOPIC_PATTERN = "/{camera}/camera_info"


def load_nuscenes(dataroot: Path, version: str):
    """NuScenes tables, after checking every table file so that a missing one is named."""
    table_root = dataroot / version
    if not table_root.is_dir():
        raise ValueError(f"nuScenes dataroot {dataroot}: no table folder {table_root} (is --version right?)")
    for table in TABLES:
        if not (table_root / f"{table}.json").is_file():
            raise ValueError(f"nuScenes dataroot {dataroot}: missing table {table_root / f'{table}.json'}")
    from nuscenes.nuscenes import NuScenes  # slow import: only once the input looks right

    return NuScenes(version=version, dataroot=str(dataroot), verbose=False)


@dataclass(frozen=True)
class Frame:
    """One camera image of a scene."""

    stamp_us: int
    camera: str
    path: Path
    calibrated_sensor: dict
    ego_pose: dict
    width: int
    height: int


def scene_frames(nusc, scene: dict, cameras: tuple[str, ...]) -> list[Frame]:
    """Every image (key frames and sweeps) of the chosen cameras, in time order; missing files are errors."""
    first_sample = nusc.get("sample", scene["first_sample_token"])
    frames = []
    for camera in cameras:
        if camera not in first_sample["data"]:
            raise ValueError(f"nuScenes dataroot {nusc.dataroot}: scene {scene['name']} has no camera {camera}")
        token = first_sample["data"][camera]
        while token:
            record = nusc.get("sample_data", token)
            path = Path(nusc.dataroot) / record["filename"]
            if not path.is_file():
                raise ValueError(f"nuScenes dataroot {nusc.dataroot}: missing image {path} "
                                 f"(sample_data {token} of scene {scene['name']})")
            frames.append(Frame(record["timestamp"], camera, path,
                                nusc.get("calibrated_sensor", record["calibrated_sensor_token"]),
                                nusc.get("ego_pose", record["ego_pose_token"]), record["width"], record["height"]))
            token = record["next"]
    return sorted(frames, key=lambda f: (f.stamp_us, cameras.index(f.camera)))


class MessageFactory:
    """Builds rosbags message objects and their CDR bytes."""

    def __init__(self) -> None:
        self.store = default_typestore()
        self.types = self.store.types

    def serialize(self, message, msgtype: str) -> bytes:
        return bytes(self.store.serialize_cdr(message, msgtype))

    def header(self, stamp_us: int, frame_id: str):
        return self.types["std_msgs/msg/Header"](stamp=stamp_from_ns(stamp_us * 1000, self.store), frame_id=frame_id)

    def transform(self, stamp_us: int, parent: str, child: str, translation, rotation):
        t = self.types
        w, x, y, z = rotation
        return t["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_us, parent), child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=float(translation[0]), y=float(translation[1]),
                                                           z=float(translation[2])),
                rotation=t["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w))))

    def tf(self, transforms: list) -> bytes:
        return self.serialize(self.types["tf2_msgs/msg/TFMessage"](transforms=transforms), "tf2_msgs/msg/TFMessage")

    def compressed_image(self, frame: Frame) -> bytes:
        message = self.types["sensor_msgs/msg/CompressedImage"](
            header=self.header(frame.stamp_us, frame.camera), format="jpeg",
            data=np.frombuffer(frame.path.read_bytes(), dtype=np.uint8))
        return self.serialize(message, "sensor_msgs/msg/CompressedImage")

    def raw_image(self, frame: Frame) -> bytes:
        pixels = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)
        if pixels is None:
            raise ValueError(f"image {frame.path}: not a readable JPEG/PNG")
        height, width = pixels.shape[:2]
        message = self.types["sensor_msgs/msg/Image"](
            header=self.header(frame.stamp_us, frame.camera), height=height, width=width, encoding="bgr8",
            is_bigendian=0, step=width * 3, data=pixels.reshape(-1))
        return self.serialize(message, "sensor_msgs/msg/Image")

    def camera_info(self, frame: Frame) -> bytes:
        k = np.array(frame.calibrated_sensor["camera_intrinsic"], dtype=float)
        projection = np.hstack([k, np.zeros((3, 1))])
        t = self.types
        message = t["sensor_msgs/msg/CameraInfo"](
            header=self.header(frame.stamp_us, frame.camera), height=frame.height, width=frame.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1),
            p=projection.reshape(-1), binning_x=0, binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
        return self.serialize(message, "sensor_msgs/msg/CameraInfo")

    def odometry(self, pose: dict, previous: dict | None) -> bytes:
        t = self.types
        translation, rotation = pose["translation"], Quaternion(pose["rotation"])
        linear, angular = np.zeros(3), np.zeros(3)
        if previous is not None and pose["timestamp"] > previous["timestamp"]:
            dt = (pose["timestamp"] - previous["timestamp"]) * 1e-6
            velocity_map = (np.array(translation) - np.array(previous["translation"])) / dt
            linear = rotation.inverse.rotate(velocity_map)  # twist is expressed in base_link
            turn = Quaternion(previous["rotation"]).inverse * rotation
            angular = np.array(turn.axis) * turn.angle / dt if turn.angle else np.zeros(3)
        vector = t["geometry_msgs/msg/Vector3"]
        message = t["nav_msgs/msg/Odometry"](
            header=self.header(pose["timestamp"], "map"), child_frame_id="base_link",
            pose=t["geometry_msgs/msg/PoseWithCovariance"](
                pose=t["geometry_msgs/msg/Pose"](
                    position=t["geometry_msgs/msg/Point"](x=float(translation[0]), y=float(translation[1]),
                                                          z=float(translation[2])),
                    orientation=t["geometry_msgs/msg/Quaternion"](x=rotation.x, y=rotation.y, z=rotation.z,
                                                                  w=rotation.w)),
                covariance=np.zeros(36)),
            twist=t["geometry_msgs/msg/TwistWithCovariance"](
                twist=t["geometry_msgs/msg/Twist"](linear=vector(x=float(linear[0]), y=float(linear[1]),
                                                                 z=float(linear[2])),
                                                   angular=vector(x=float(angular[0]), y=float(angular[1]),
                                                                  z=float(angular[2]))),
                covariance=np.zeros(36)))
        return self.serialize(message, "nav_msgs/msg/Odometry")


@dataclass(frozen=True)
class ConvertOptions:
    dataroot: Path
    out: Path
    version: str = "v1.0-mini"
    scenes: tuple[str, ...] = ()  # names; empty: all
    cameras: tuple[str, ...] = NUSCENES_CAMERAS
    raw: bool = False
    storage: str = "mcap"


def _events(frames: list[Frame], factory: MessageFactory, raw: bool) -> Iterator[tuple[int, str, str, bytes]]:
    """(stamp ns, topic, type, CDR) in time order: static tf first, then per frame tf/odom, image, camera info."""
    first = frames[0].stamp_us
    static = [factory.transform(first, "base_link", camera, cs["translation"], cs["rotation"])
              for camera, cs in {f.camera: f.calibrated_sensor for f in frames}.items()]
    yield first * 1000, "/tf_static", "tf2_msgs/msg/TFMessage", factory.tf(static)
    last_pose = None
    for frame in frames:
        pose = frame.ego_pose
        if last_pose is None or pose["timestamp"] != last_pose["timestamp"]:
            transform = factory.transform(pose["timestamp"], "map", "base_link", pose["translation"], pose["rotation"])
            yield pose["timestamp"] * 1000, "/tf", "tf2_msgs/msg/TFMessage", factory.tf([transform])
            yield pose["timestamp"] * 1000, "/odom", "nav_msgs/msg/Odometry", factory.odometry(pose, last_pose)
            last_pose = pose
        stamp = frame.stamp_us * 1000
        if raw:
            topic = RAW_TOPIC_PATTERN.format(camera=frame.camera)
            yield stamp, topic, "sensor_msgs/msg/Image", factory.raw_image(frame)
        else:
            yield (stamp, DEFAULT_TOPIC_PATTERN.format(camera=frame.camera), "sensor_msgs/msg/CompressedImage",
                   factory.compressed_image(frame))
        yield (stamp, INFO_TOPIC_PATTERN.format(camera=frame.camera), "sensor_msgs/msg/CameraInfo",
               factory.camera_info(frame))


def convert_scene(nusc, scene: dict, options: ConvertOptions, factory: MessageFactory) -> tuple[Path, int, int]:
    """Write one scene's bag; returns (bag path, messages, bytes)."""
    frames = scene_frames(nusc, scene, options.cameras)
    bag_path = options.out / scene["name"]
    connections = {}
    count = size = 0
    with open_writer(bag_path, options.storage) as writer, tqdm(
            total=len(frames), unit="img", desc=scene["name"], leave=False) as progress:
        for stamp, topic, msgtype, data in _events(frames, factory, options.raw):
            if topic not in connections:
                qos = LATCH if topic == "/tf_static" else ()
                connections[topic] = writer.add_connection(topic, msgtype, typestore=factory.store,
                                                           offered_qos_profiles=qos)
            writer.write(connections[topic], stamp, data)
            count, size = count + 1, size + len(data)
            if msgtype.startswith("sensor_msgs/msg/Image") or msgtype.endswith("CompressedImage"):
                progress.update(1)
    return bag_path, count, size


def convert(options: ConvertOptions) -> dict[str, float]:
    unknown = [c for c in options.cameras if c not in NUSCENES_CAMERAS]
    if unknown:
        raise ValueError(f"--cameras: unknown {unknown}; expected names from {list(NUSCENES_CAMERAS)}")
    nusc = load_nuscenes(options.dataroot, options.version)
    by_name = {scene["name"]: scene for scene in nusc.scene}
    if missing := [name for name in options.scenes if name not in by_name]:
        raise ValueError(f"--scenes: {missing} not in {options.dataroot} ({sorted(by_name)[:5]}...)")
    chosen = [by_name[name] for name in options.scenes] if options.scenes else list(nusc.scene)
    factory = MessageFactory()
    started, messages, size = time.perf_counter(), 0, 0
    for scene in tqdm(chosen, unit="scene", desc="convert"):
        _, count, scene_bytes = convert_scene(nusc, scene, options, factory)
        messages, size = messages + count, size + scene_bytes
    seconds = time.perf_counter() - started
    return {"bags": len(chosen), "messages": messages, "bytes": size, "seconds": seconds,
            "messages_per_s": messages / seconds if seconds else math.inf}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drive-mllm convert-nuscenes", description=__doc__.split("\n")[0])
    p.add_argument("--dataroot", type=Path, required=True, help="nuScenes dataroot (holds VERSION/ and samples/)")
    p.add_argument("--out", type=Path, required=True, help="folder for the bags (one folder per scene)")
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--scenes", nargs="*", default=[], help="scene names (default: all)")
    p.add_argument("--cameras", nargs="*", default=list(NUSCENES_CAMERAS))
    p.add_argument("--raw", action="store_true", help="raw sensor_msgs/Image (bgr8) instead of CompressedImage")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    options = ConvertOptions(args.dataroot, args.out, args.version, tuple(args.scenes), tuple(args.cameras),
                             args.raw, args.storage)
    try:
        figures = convert(options)
    except ValueError as err:
        print(f"drive-mllm convert-nuscenes: {err}", file=sys.stderr)
        return 2
    print(f"convert-nuscenes: {figures['bags']} bags, {figures['messages']} messages, "
          f"{figures['bytes'] / 1e6:.1f} MB in {figures['seconds']:.1f} s: {figures['messages_per_s']:.0f} msg/s")
    return 0
