"""`drive-mllm world`: synthetic driving data with ground truth, shaped like nuScenes + DriveLM.

Writes ``OUT/nuscenes`` (a dataroot that ``nuscenes-devkit`` opens as ``--version``, see
``nuscenes_export``) and ``OUT/drivelm/v1_1_{train,val}_nus.json`` (DriveLM v1.1, see ``drivelm_qa``),
whose ``image_paths`` are ``../nuscenes/samples/...`` relative to the JSON's folder. Scenes cycle
through the conditions of ``--condition`` (``render.LOOKS``: clear, night, rain, fog) and, once per round of
conditions, through the scenario presets of ``world.SCENARIOS`` (``scene_plan``: every scenario in every
condition); ``--rig`` picks the camera rig (``render.RIGS``). Each scene has its own seed derived from
``--seed`` (noise and rain included), so the output is deterministic. The condition and rig are
recorded in the scene table's description ("... (condition=night, rig=alt)") and in every DriveLM key
frame ("condition", "rig"). Cameras sweep at 12 Hz, key frames every sixth sweep (2 Hz).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..cameras import NUSCENES_IMAGE_SIZE
from .drivelm_qa import FrameQA, SeenObject, ego_corridor, in_ego_path
from .nuscenes_export import NuScenesWriter, image_filename, token
from .render import CONDITIONS, RIGS, Camera, Renderer, nuscenes_cameras, project_object, yaw_quaternion
from .world import OBJECT_CLASSES, SCENARIOS, ObjectState, WorldState, build_world

SWEEP_HZ = 12
KEY_FRAME_EVERY = 6  # sweeps per key frame: 2 Hz
HORIZON_SWEEPS = 36  # 3 s of future for behaviour and trajectory answers
ANNOTATION_RANGE = 60.0  # metres around the ego that get sample_annotation rows
MASK_SCALE = 0.25  # instance masks for occlusion are rendered at a quarter of the image size
FIRST_TIMESTAMP_US = 1_533_151_603_512_404
SCENE_SPACING_US = 1_000_000_000


@dataclass(frozen=True)
class WorldOptions:
    out: Path
    scenes: int = 2
    seed: int = 0
    duration: float = 20.0
    width: int = NUSCENES_IMAGE_SIZE[0]
    height: int = NUSCENES_IMAGE_SIZE[1]
    version: str = "v1.0-mini"
    val_fraction: float = 0.2
    density: float = 0.5
    jpeg_quality: int = 90
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    conditions: tuple[str, ...] = ("clear",)  # cycled through per scene; see scene_plan
    rig: str = "nuscenes"

    def check(self) -> None:
        problems = []
        if self.scenes < 1:
            problems.append(f"--scenes: expected at least 1 scene, got {self.scenes}")
        if not 0.5 <= self.duration <= 600:
            problems.append(f"--duration: expected 0.5..600 seconds per scene, got {self.duration}")
        if self.width < 16 or self.height < 16:
            problems.append(f"--width/--height: expected at least 16x16 pixels, got {self.width}x{self.height}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"--val-fraction: expected 0 <= fraction < 1, got {self.val_fraction}")
        if not 0.0 <= self.density <= 1.0:
            problems.append(f"--density: expected a traffic density in 0..1, got {self.density}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"--jpeg-quality: expected 1..100, got {self.jpeg_quality}")
        if unknown := [s for s in self.scenarios if s not in SCENARIOS]:
            problems.append(f"--scenarios: unknown {unknown}; expected names from {sorted(SCENARIOS)}")
        if not self.conditions:
            problems.append(f"--condition: expected at least one of {list(CONDITIONS)}")
        elif unknown := [c for c in self.conditions if c not in CONDITIONS]:
            problems.append(f"--condition: unknown {unknown}; expected names from {list(CONDITIONS)}")
        if self.rig not in RIGS:
            problems.append(f"--rig: unknown '{self.rig}'; expected one of {sorted(RIGS)}")
        if (self.out / "nuscenes" / self.version).exists():
            problems.append(f"--out {self.out}: {self.out / 'nuscenes' / self.version} exists already; "
                            "choose an empty folder")
        if problems:
            raise ValueError("; ".join(problems))


def simulate(scenario: str, seed: int, sweeps: int, density: float) -> tuple[str, list[WorldState]]:
    """The world's states at every sweep, plus the horizon after the last one."""
    world = build_world(scenario, seed, density)
    states = [world.state()]
    for _ in range(sweeps + HORIZON_SWEEPS - 1):
        states.append(world.step(1.0 / SWEEP_HZ))
    return world.description, states


def seen_objects(state: WorldState, future: list[WorldState], cameras: list[Camera],
                 mask_cameras: list[Camera]) -> tuple[list[SeenObject], dict[int, float]]:
    """Objects listed by at least one camera (centre in front and inside the image), and every object's visibility."""
    masks = [Renderer.instance_mask(state, camera) for camera in mask_cameras]
    pixel_counts = [np.bincount(mask.ravel(), minlength=len(state.objects) + 1) for mask in masks]
    corridor = ego_corridor(state, future)
    seen, visibility = [], {}
    for obj in state.objects:
        distance = math.hypot(obj.x - state.ego_x, obj.y - state.ego_y)
        if distance > ANNOTATION_RANGE:
            continue
        best = None
        visibility[obj.instance] = 0.0
        for camera, mask_camera, counts in zip(cameras, mask_cameras, pixel_counts, strict=True):
            projection = project_object(camera, camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw), obj)
            if projection.bbox is None:
                continue
            fraction = _visible_fraction(obj, state, mask_camera, counts[obj.instance + 1])
            visibility[obj.instance] = max(visibility[obj.instance], fraction)
            area = (projection.bbox[2] - projection.bbox[0]) * (projection.bbox[3] - projection.bbox[1])
            if projection.centre is not None and (best is None or area > best[0]):
                best = (area, camera.name, projection, fraction)
        if best is not None:
            _, camera_name, projection, fraction = best
            seen.append(SeenObject(obj, camera_name, (round(projection.centre[0], 1), round(projection.centre[1], 1)),
                                   projection.bbox, fraction, distance,
                                   in_ego_path(state, future, obj.instance, corridor)))
    return seen, visibility


def _visible_fraction(obj: ObjectState, state: WorldState, mask_camera: Camera, visible_pixels: int) -> float:
    """Unoccluded pixels over the pixels of the box's own silhouette (its projected convex hull in the image)."""
    projection = project_object(mask_camera, mask_camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw),
                                obj)
    if projection.bbox is None:
        return 0.0
    x1, y1, x2, y2 = projection.bbox
    silhouette = max((x2 - x1) * (y2 - y1) * 0.8, 1.0)  # a box's hull fills most of its 2-D box
    return min(1.0, visible_pixels / silhouette)


class SceneWriter:
    """Renders one scene's sweeps and fills the tables and the DriveLM entries."""

    def __init__(self, options: WorldOptions, writer: NuScenesWriter, qa: FrameQA, progress: tqdm) -> None:
        self.options = options
        self.writer = writer
        self.qa = qa
        self.progress = progress
        self.cameras = nuscenes_cameras(options.width, options.height, rig=options.rig)
        self.mask_cameras = nuscenes_cameras(max(16, round(options.width * MASK_SCALE)),
                                             max(16, round(options.height * MASK_SCALE)), rig=options.rig)
        self.renderer = Renderer(self.cameras)  # replaced by each scene's condition in write()
        self.dataroot = options.out / "nuscenes"

    def write(self, index: int, scenario: str, seed: int, sweeps: int,
              condition: str = "clear") -> tuple[str, dict, str]:
        """(scene token, DriveLM scene entry, log token)."""
        name = f"scene-{index + 1:04d}"
        log_name = f"synthetic-s{self.options.seed}-{index + 1:04d}"
        log_token = self.writer.add_log(log_name, "synthetic-city", "2018-08-01")
        description, states = simulate(scenario, seed, sweeps, self.options.density)
        self.renderer = Renderer(self.cameras, condition, seed)  # per scene: its condition, its noise seed
        stamps = [FIRST_TIMESTAMP_US + index * SCENE_SPACING_US + round(i * 1e6 / SWEEP_HZ) for i in range(sweeps)]
        key_indices = list(range(0, sweeps, KEY_FRAME_EVERY))
        sample_tokens = [token("sample", name, i) for i in key_indices]
        table_description = f"{description} (condition={condition}, rig={self.options.rig})"
        scene_token = self.writer.add_scene(name, table_description, log_token, sample_tokens)
        self.writer.add_samples(scene_token, sample_tokens, [stamps[i] for i in key_indices])
        cs_tokens = {c.name: self.writer.add_calibrated_sensor(name, c.name, c.translation, c.rotation, c.intrinsic)
                     for c in self.cameras}
        key_frames = {}
        for i in range(sweeps):
            key = i % KEY_FRAME_EVERY == 0
            sample_token = sample_tokens[i // KEY_FRAME_EVERY]
            paths = self._write_images(name, log_name, states[i], stamps, i, sample_token, cs_tokens, sweeps)
            if key:
                entry = self._key_frame(name, sample_token, states[i], states[i + 1:i + 1 + HORIZON_SWEEPS], paths)
                if entry is not None:
                    key_frames[sample_token] = {**entry, "condition": condition, "rig": self.options.rig}
            self.progress.update(1)
        return scene_token, {"scene_description": description, "key_frames": key_frames}, log_token

    def _write_images(self, name: str, log_name: str, state: WorldState, stamps: list[int], i: int,
                      sample_token: str, cs_tokens: dict[str, str], sweeps: int) -> dict[str, str]:
        key = i % KEY_FRAME_EVERY == 0
        paths = {}
        pose = ([state.ego_x, state.ego_y, 0.0], yaw_quaternion(state.ego_yaw))
        for camera in self.cameras:
            filename = image_filename("samples" if key else "sweeps", log_name, camera.name, stamps[i])
            target = self.dataroot / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            image = self.renderer.render(state, camera)
            cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, self.options.jpeg_quality])
            sd = [token("sample_data", name, camera.name, k) if 0 <= k < sweeps else "" for k in (i - 1, i, i + 1)]
            self.writer.add_sample_data(sd[1], sample_token, cs_tokens[camera.name], filename, stamps[i], key,
                                        (camera.width, camera.height), pose, sd[0], sd[2])
            paths[camera.name] = f"../nuscenes/{filename}"
        return paths

    def _key_frame(self, name: str, sample_token: str, state: WorldState, future: list[WorldState],
                   paths: dict[str, str]) -> dict | None:
        seen, visibility = seen_objects(state, future, self.cameras, self.mask_cameras)
        for obj in state.objects:
            if obj.instance in visibility:
                length, width, height = obj.size
                self.writer.add_annotation(sample_token, f"{name}/{obj.instance}", OBJECT_CLASSES[obj.kind]
                                           .nuscenes_category, [obj.x, obj.y, height / 2], [width, length, height],
                                           yaw_quaternion(obj.yaw), _attribute(obj), visibility[obj.instance])
        return self.qa.entry(state, future, seen, paths, 1.0 / SWEEP_HZ)


def _attribute(obj: ObjectState) -> str | None:
    if obj.kind == "pedestrian":
        return "pedestrian.moving" if obj.walking else "pedestrian.standing"
    if obj.kind == "cyclist":
        return "cycle.with_rider"
    if obj.kind in ("cone", "barrier"):
        return None
    if obj.parked:
        return "vehicle.parked"
    return "vehicle.moving" if obj.speed >= 0.2 else "vehicle.stopped"


def _map_mask(size: int = 200) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 2 - 10:size // 2 + 10, :] = 255
    return mask


def scene_plan(index: int, scenarios: tuple[str, ...], conditions: tuple[str, ...]) -> tuple[str, str]:
    """Scene `index`'s (scenario, condition): conditions change every scene and the scenario every round of them,
    so that each condition gets every scenario. Cycling both per scene would pair them (with 8 scenarios and 2
    conditions the turns would all be at night), and a per-condition comparison would measure the scenarios."""
    return scenarios[(index // len(conditions)) % len(scenarios)], conditions[index % len(conditions)]


def generate(options: WorldOptions) -> dict[str, float]:
    """Write the dataroot and DriveLM JSON; returns figures (images, seconds, images per second)."""
    options.check()
    sweeps = max(1, round(options.duration * SWEEP_HZ))
    writer = NuScenesWriter(options.out / "nuscenes", options.version)
    qa = FrameQA(np.random.default_rng(options.seed))
    val_count = min(options.scenes - 1, round(options.scenes * options.val_fraction)) if options.scenes > 1 else 0
    splits: dict[str, dict] = {"train": {}, "val": {}}
    log_tokens = []
    started = time.perf_counter()
    with tqdm(total=options.scenes * sweeps, unit="sweep", desc="world") as progress:
        scene_writer = SceneWriter(options, writer, qa, progress)
        for index in range(options.scenes):
            scenario, condition = scene_plan(index, options.scenarios, options.conditions)
            scene_seed = options.seed * 100_003 + index
            scene_token, entry, log_token = scene_writer.write(index, scenario, scene_seed, sweeps, condition)
            splits["val" if index >= options.scenes - val_count else "train"][scene_token] = entry
            log_tokens.append(log_token)
    writer.close(_map_mask(), log_tokens)
    drivelm_dir = options.out / "drivelm"
    drivelm_dir.mkdir(parents=True, exist_ok=True)
    for split, scenes in splits.items():
        (drivelm_dir / f"v1_1_{split}_nus.json").write_text(json.dumps(scenes, indent=1))
    seconds = time.perf_counter() - started
    images = options.scenes * sweeps * len(scene_writer.cameras)
    return {"images": images, "sweeps": options.scenes * sweeps, "seconds": seconds, "fps": images / seconds}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drive-mllm world", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (gets nuscenes/ and drivelm/)")
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per scene (nuScenes: 20)")
    p.add_argument("--width", type=int, default=NUSCENES_IMAGE_SIZE[0])
    p.add_argument("--height", type=int, default=NUSCENES_IMAGE_SIZE[1])
    p.add_argument("--version", default="v1.0-mini", help="nuScenes table folder name")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of scenes in the val DriveLM file")
    p.add_argument("--density", type=float, default=0.5, help="background traffic density 0..1")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), help=f"presets to cycle: {list(SCENARIOS)}")
    p.add_argument("--condition", nargs="+", default=["clear"], dest="conditions",
                   help=f"conditions to cycle per scene (each with every scenario): {list(CONDITIONS)}")
    p.add_argument("--rig", default="nuscenes", help=f"camera rig: {sorted(RIGS)}")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    options = WorldOptions(args.out, args.scenes, args.seed, args.duration, args.width, args.height, args.version,
                           args.val_fraction, args.density, args.jpeg_quality, tuple(args.scenarios),
                           tuple(args.conditions), args.rig)
    try:
        figures = generate(options)
    except ValueError as err:
        print(f"drive-mllm world: {err}", file=sys.stderr)
        return 2
    print(f"world: {figures['images']} images ({figures['sweeps']} sweeps x 6 cameras) in {figures['seconds']:.1f} s: "
          f"{figures['fps']:.1f} images/s, {figures['sweeps'] / figures['seconds']:.2f} sweeps/s")
    return 0
