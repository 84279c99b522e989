"""A nuScenes-format dataroot writer: the JSON tables ``nuscenes-devkit`` loads, and image paths.

Layout (``DATAROOT``)::

    v1.0-mini/{category,attribute,visibility,instance,sensor,calibrated_sensor,ego_pose,log,scene,
               sample,sample_data,sample_annotation,map}.json
    samples/CAM_FRONT/{log}__CAM_FRONT__{timestamp_us}.jpg   key frames (2 Hz)
    sweeps/CAM_FRONT/{log}__CAM_FRONT__{timestamp_us}.jpg    the other camera frames (12 Hz in all)
    maps/{token}.png                                          a road mask (the devkit wants one map)

Tokens are deterministic 32-hex digests of readable keys, so a seed reproduces the tables exactly.
As in nuScenes, an ``ego_pose`` token equals its ``sample_data`` token; a sweep's ``sample_token`` is
the key frame before it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from pyquaternion import Quaternion

VISIBILITY_LEVELS = (("1", "v0-40", 0.4), ("2", "v40-60", 0.6), ("3", "v60-80", 0.8), ("4", "v80-100", 1.01))
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "pedestrian.moving", "pedestrian.standing",
              "cycle.with_rider")
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")


def token(*key: object) -> str:
    return hashlib.md5("/".join(str(k) for k in key).encode()).hexdigest()


def image_filename(folder: str, log_name: str, camera: str, timestamp_us: int) -> str:
    """nuScenes naming: the evaluator maps a stamp back to a key frame through the CAM_FRONT path."""
    return f"{folder}/{camera}/{log_name}__{camera}__{timestamp_us}.jpg"


def visibility_token(fraction: float) -> str:
    return next(tok for tok, _, upper in VISIBILITY_LEVELS if fraction < upper)


class NuScenesWriter:
    """Collects table rows scene by scene and writes them with ``close``."""

    def __init__(self, dataroot: Path, version: str = "v1.0-mini") -> None:
        self.dataroot = Path(dataroot)
        self.version = version
        self.tables: dict[str, list[dict]] = {name: [] for name in TABLES}
        self.tables["attribute"] = [{"token": token("attribute", a), "name": a, "description": a} for a in ATTRIBUTES]
        self.tables["visibility"] = [{"token": tok, "level": level, "description": f"visibility of whole object is "
                                      f"in {level[1:]} %"} for tok, level, _ in VISIBILITY_LEVELS]
        self._categories: dict[str, str] = {}
        self._sensors: dict[str, str] = {}
        self._instances: dict[str, dict] = {}  # instance token -> its row
        self._last_annotation: dict[str, dict] = {}  # instance token -> its latest annotation row

    def category_token(self, name: str) -> str:
        if name not in self._categories:
            self._categories[name] = token("category", name)
            self.tables["category"].append({"token": self._categories[name], "name": name, "description": name})
        return self._categories[name]

    def sensor_token(self, channel: str) -> str:
        if channel not in self._sensors:
            self._sensors[channel] = token("sensor", channel)
            self.tables["sensor"].append({"token": self._sensors[channel], "channel": channel, "modality": "camera"})
        return self._sensors[channel]

    def add_log(self, log_name: str, location: str, date: str) -> str:
        log_token = token("log", log_name)
        self.tables["log"].append({"token": log_token, "logfile": log_name, "vehicle": "synthetic-ego",
                                   "date_captured": date, "location": location})
        return log_token

    def add_calibrated_sensor(self, scene_name: str, channel: str, translation, rotation: Quaternion,
                              intrinsic: np.ndarray) -> str:
        cs_token = token("calibrated_sensor", scene_name, channel)
        self.tables["calibrated_sensor"].append({
            "token": cs_token, "sensor_token": self.sensor_token(channel),
            "translation": [float(v) for v in translation],
            "rotation": [float(v) for v in rotation.elements], "camera_intrinsic": intrinsic.tolist()})
        return cs_token

    def add_scene(self, name: str, description: str, log_token: str, sample_tokens: list[str]) -> str:
        scene_token = token("scene", name)
        self.tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(sample_tokens),
                                     "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                                     "name": name, "description": description})
        return scene_token

    def add_samples(self, scene_token: str, sample_tokens: list[str], timestamps: list[int]) -> None:
        for i, (sample_token, stamp) in enumerate(zip(sample_tokens, timestamps, strict=True)):
            self.tables["sample"].append({
                "token": sample_token, "timestamp": stamp, "scene_token": scene_token,
                "prev": sample_tokens[i - 1] if i else "", "next": sample_tokens[i + 1] if i + 1 < len(sample_tokens)
                else ""})

    def add_sample_data(self, sd_token: str, sample_token: str, cs_token: str, filename: str, stamp: int,
                        key_frame: bool, size: tuple[int, int], ego_pose: tuple[list[float], Quaternion],
                        prev: str, following: str) -> None:
        translation, rotation = ego_pose
        self.tables["ego_pose"].append({"token": sd_token, "timestamp": stamp, "translation": translation,
                                        "rotation": [float(v) for v in rotation.elements]})
        self.tables["sample_data"].append({
            "token": sd_token, "sample_token": sample_token, "ego_pose_token": sd_token,
            "calibrated_sensor_token": cs_token, "timestamp": stamp, "fileformat": "jpg", "is_key_frame": key_frame,
            "height": size[1], "width": size[0], "filename": filename, "prev": prev, "next": following})

    def add_annotation(self, sample_token: str, instance_key: str, category: str, translation: list[float],
                       size_wlh: list[float], rotation: Quaternion, attribute: str | None, visibility: float) -> None:
        """One box; instances and their prev/next chains are kept up to date as annotations arrive."""
        instance_token = token("instance", instance_key)
        ann_token = token("sample_annotation", instance_key, sample_token)
        row = {"token": ann_token, "sample_token": sample_token, "instance_token": instance_token,
               "visibility_token": visibility_token(visibility),
               "attribute_tokens": [token("attribute", attribute)] if attribute else [],
               "translation": translation, "size": size_wlh, "rotation": [float(v) for v in rotation.elements],
               "prev": "", "next": "", "num_lidar_pts": int(visibility > 0), "num_radar_pts": 0}
        previous = self._last_annotation.get(instance_token)
        if previous is None:
            self._instances[instance_token] = {"token": instance_token, "category_token": self.category_token(category),
                                               "nbr_annotations": 0, "first_annotation_token": ann_token,
                                               "last_annotation_token": ann_token}
            self.tables["instance"].append(self._instances[instance_token])
        else:
            previous["next"], row["prev"] = ann_token, previous["token"]
        instance = self._instances[instance_token]
        instance["nbr_annotations"] += 1
        instance["last_annotation_token"] = ann_token
        self._last_annotation[instance_token] = row
        self.tables["sample_annotation"].append(row)

    def close(self, map_mask: np.ndarray, log_tokens: list[str]) -> None:
        """Write the map record and mask, then every table."""
        map_token = token("map", *log_tokens)
        map_file = f"maps/{map_token}.png"
        (self.dataroot / "maps").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(self.dataroot / map_file), map_mask)
        self.tables["map"] = [{"token": map_token, "log_tokens": log_tokens, "category": "semantic_prior",
                               "filename": map_file}]
        table_root = self.dataroot / self.version
        table_root.mkdir(parents=True, exist_ok=True)
        for name, rows in self.tables.items():
            (table_root / f"{name}.json").write_text(json.dumps(rows, indent=0))
