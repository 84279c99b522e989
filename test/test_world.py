"""Synthetic world: projection geometry (both rigs), listing rule, determinism, DriveLM schema, nuscenes-devkit
loading, conditions and rig recorded in the data and kept by `eval prepare` and the training loader."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.geometry_utils import BoxVisibility, view_points

from drive_mllm_ros.answers import parse_behavior
from drive_mllm_ros.cameras import NUSCENES_CAMERAS
from drive_mllm_ros.data.drivelm_qa import CAMERA_DIRECTIONS
from drive_mllm_ros.data.render import ALT_CALIBRATION, nuscenes_cameras, object_box, project_object, transform_points
from drive_mllm_ros.data.synthetic import WorldOptions, generate, scene_plan
from drive_mllm_ros.data.synthetic import main as world_main
from drive_mllm_ros.data.world import SCENARIOS, EgoCommand, build_world
from drive_mllm_ros.drivelm import Q_MOST_IMPORTANT_DIRECTION, Q_OBJECTS_IN_CAMERA, QA_STAGES, TAG_PATTERN
from drive_mllm_ros.evaluation.prepare import LISTED_OPTION, prepare_file

WIDTH, HEIGHT = 320, 180
SMALL = (224, 126)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(WorldOptions(out, scenes=3, seed=7, duration=2.0, width=WIDTH, height=HEIGHT, val_fraction=0.34,
                          scenarios=("lead_brake", "pedestrian_crossing", "turn_left")))
    return out


@pytest.fixture(scope="module")
def alt_dataset(tmp_path_factory) -> Path:
    """The alternative rig, one scene at night and one in fog."""
    out = tmp_path_factory.mktemp("alt_world")
    generate(WorldOptions(out, scenes=2, seed=3, duration=1.5, width=SMALL[0], height=SMALL[1], val_fraction=0.0,
                          scenarios=("lead_brake", "pedestrian_crossing"), conditions=("night", "fog"), rig="alt"))
    return out


def load_drivelm(out: Path) -> dict:
    merged = {}
    for split in ("train", "val"):
        merged.update(json.loads((out / "drivelm" / f"v1_1_{split}_nus.json").read_text()))
    return merged


def test_devkit_loads_the_dataroot(dataset):
    nusc = NuScenes(version="v1.0-mini", dataroot=str(dataset / "nuscenes"), verbose=False)
    assert len(nusc.scene) == 3
    assert len(nusc.sample) == 3 * 4  # 2 s at 2 Hz
    assert len(nusc.sample_data) == 3 * 24 * 6  # 12 Hz sweeps x 6 cameras
    sample = nusc.sample[0]
    assert set(sample["data"]) == set(NUSCENES_CAMERAS)
    assert sample["anns"]
    path = Path(nusc.get_sample_data_path(sample["data"]["CAM_FRONT"]))
    assert path.is_file() and path.parent.name == "CAM_FRONT"
    log = nusc.get("log", nusc.get("scene", sample["scene_token"])["log_token"])["logfile"]
    assert path.name == f"{log}__CAM_FRONT__{nusc.get('sample_data', sample['data']['CAM_FRONT'])['timestamp']}.jpg"


def test_tags_are_projections_of_box_centres_through_the_devkit(dataset):
    assert tags_checked_through_the_devkit(dataset, WIDTH, HEIGHT) > 10


def test_alt_rig_tags_are_projections_of_box_centres_through_the_devkit(alt_dataset):
    assert tags_checked_through_the_devkit(alt_dataset, *SMALL) > 5


def tags_checked_through_the_devkit(dataset: Path, width: int, height: int) -> int:
    """Every key-object tag equals the devkit's projection of an annotated box centre in the tag's camera (through
    the calibration the tables hold); returns how many tags were checked."""
    nusc = NuScenes(version="v1.0-mini", dataroot=str(dataset / "nuscenes"), verbose=False)
    checked = 0
    for scene in load_drivelm(dataset).values():
        for sample_token, frame in scene["key_frames"].items():
            sample = nusc.get("sample", sample_token)
            for tag, info in frame["key_object_infos"].items():
                _, camera, x, y = TAG_PATTERN.fullmatch(tag).groups()
                _, boxes, intrinsic = nusc.get_sample_data(sample["data"][camera], box_vis_level=BoxVisibility.NONE)
                centres = np.array([view_points(b.center.reshape(3, 1), intrinsic, True)[:2, 0] for b in boxes
                                    if b.center[2] > 0])
                assert np.abs(centres - [float(x), float(y)]).max(axis=1).min() <= 0.05 + 1e-6
                x1, y1, x2, y2 = info["2d_bbox"]
                assert 0 <= x1 <= float(x) <= x2 <= width and 0 <= y1 <= float(y) <= y2 <= height
                checked += 1
    return checked


@pytest.mark.parametrize("rig", ["nuscenes", "alt"])
def test_listing_rule_and_box_projection(rig):
    """Listed iff the centre is in front and inside; the 2-D box of a box fully in front is its corners' span."""
    world = build_world("cruise", seed=3)
    for _ in range(24):
        state = world.step(1 / 12)
    listed = 0
    for camera in nuscenes_cameras(WIDTH, HEIGHT, rig=rig):
        to_camera = camera.world_to_camera(state.ego_x, state.ego_y, state.ego_yaw)
        for obj in state.objects:
            projection = project_object(camera, to_camera, obj)
            centre = transform_points(to_camera, np.array(obj.centre).reshape(3, 1))
            u, v = view_points(centre, camera.intrinsic, True)[:2, 0]
            inside = centre[2, 0] > 0 and 0 <= u < WIDTH and 0 <= v < HEIGHT
            assert (projection.centre is not None) == inside
            if inside:
                listed += 1
                assert projection.centre == pytest.approx((u, v), abs=1e-6)
            corners = transform_points(to_camera, object_box(obj).corners())
            if (corners[2] > 0.5).all() and projection.bbox is not None:
                uv = view_points(corners, camera.intrinsic, True)[:2]
                expected = np.clip([*uv.min(axis=1), *uv.max(axis=1)], 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
                assert projection.bbox == pytest.approx(tuple(expected), abs=1e-6)
    assert listed > 5


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_deterministic_per_seed(tmp_path):
    def make(name: str, seed: int) -> str:
        generate(WorldOptions(tmp_path / name, scenes=1, seed=seed, duration=1.0, width=96, height=54,
                              scenarios=("cut_in",)))
        return _digest(tmp_path / name)

    first = make("a", 5)
    assert make("b", 5) == first
    assert make("c", 6) != first


def test_drivelm_schema(dataset):
    drivelm = load_drivelm(dataset)
    nusc_scenes = {s["token"] for s in json.loads((dataset / "nuscenes/v1.0-mini/scene.json").read_text())}
    assert set(drivelm) == nusc_scenes
    letter, yes_no = re.compile(r"^[ABCD]\.$"), {"Yes.", "No."}
    for scene in drivelm.values():
        assert set(scene) == {"scene_description", "key_frames"} and scene["scene_description"]
        for frame in scene["key_frames"].values():
            assert set(frame) == {"key_object_infos", "QA", "image_paths", "condition", "rig"}
            assert (frame["condition"], frame["rig"]) == ("clear", "nuscenes")
            for info in frame["key_object_infos"].values():
                assert set(info) == {"Category", "Status", "Visual_description", "2d_bbox"}
                assert len(info["2d_bbox"]) == 4
            assert set(frame["QA"]) == {*QA_STAGES, "trajectory"}
            for items in frame["QA"].values():
                for item in items:
                    assert set(item) == {"Q", "A", "C", "con_up", "con_down", "cluster", "layer"}
                    assert all(item[k] is None for k in ("C", "con_up", "con_down", "cluster", "layer"))
                    for tag in TAG_PATTERN.finditer(item["Q"] + item["A"]):
                        assert tag.group(0) in frame["key_object_infos"]
            perception = frame["QA"]["perception"][0]["A"]
            assert perception.startswith("There is ") and "The IDs of these objects are <c1," in perception
            for item in frame["QA"]["prediction"]:
                if item["Q"].startswith("What is the moving status"):
                    assert letter.match(item["A"])
                elif item["Q"].startswith("Would"):
                    assert item["A"] in yes_no
                else:
                    assert item["A"].startswith("Firstly notice that <c")
            assert letter.match(frame["QA"]["behavior"][0]["A"])
            points = re.findall(r"\((-?\d+\.\d), (-?\d+\.\d)\)", frame["QA"]["trajectory"][0]["A"])
            assert len(points) == 6
            assert set(frame["image_paths"]) == set(NUSCENES_CAMERAS)
            for relative in frame["image_paths"].values():
                assert relative.startswith("../nuscenes/samples/")
                assert (dataset / "drivelm" / relative).resolve().is_file()


def test_the_where_question_names_the_first_key_objects_camera(dataset):
    for scene in load_drivelm(dataset).values():
        for frame in scene["key_frames"].values():
            where = next(item for item in frame["QA"]["perception"] if item["Q"] == Q_MOST_IMPORTANT_DIRECTION)
            first_camera = TAG_PATTERN.fullmatch(next(iter(frame["key_object_infos"]))).group(2)
            assert where["A"] == f"The most important object is {CAMERA_DIRECTIONS[first_camera]} the ego car."


def test_per_camera_questions_list_each_views_objects_left_to_right(dataset):
    """Every frame asks each camera for its objects; a key object appears in its tag's camera at its tag's centre."""
    point = re.compile(r"at \((\d+\.\d), (\d+\.\d)\)")
    for scene in load_drivelm(dataset).values():
        for frame in scene["key_frames"].values():
            asked = {Q_OBJECTS_IN_CAMERA.format(direction=direction): camera
                     for camera, direction in CAMERA_DIRECTIONS.items()}
            answers = {item["Q"]: item["A"] for item in frame["QA"]["perception"] if item["Q"] in asked}
            assert set(answers) == set(asked)
            points = {}
            for question, answer in answers.items():
                xs = [(float(x), float(y)) for x, y in point.findall(answer)]
                assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in xs)
                assert [x for x, _ in xs] == sorted(x for x, _ in xs)
                assert xs or answer.startswith("There is no object")
                points[asked[question]] = xs
            for tag in frame["key_object_infos"]:
                _, camera, x, y = TAG_PATTERN.fullmatch(tag).groups()
                assert (float(x), float(y)) in points[camera]


def test_locate_questions_answer_where_a_uniquely_described_object_is(dataset):
    """"Where is the silver car?" is asked only when one object looks like that; a key object is found at its tag."""
    question = re.compile(r"^Where is the (.+) in the current scene\?$")
    answer = re.compile(r"^The (.+) is (to the .+ of) the ego car at \((\d+\.\d), (\d+\.\d)\)\.$")
    located = 0
    for scene in load_drivelm(dataset).values():
        for frame in scene["key_frames"].values():
            items = [item for item in frame["QA"]["perception"] if question.match(item["Q"])]
            descriptions = [question.match(item["Q"]).group(1) for item in items]
            assert len(descriptions) == len(set(descriptions)) and len(items) <= 4
            for item, description in zip(items, descriptions, strict=True):
                said, direction, x, y = answer.match(item["A"]).groups()
                assert said == description
                for tag, info in frame["key_object_infos"].items():
                    if info["Visual_description"][:-1].lower() == description:
                        _, camera, tag_x, tag_y = TAG_PATTERN.fullmatch(tag).groups()
                        assert (CAMERA_DIRECTIONS[camera], x, y) == (direction, tag_x, tag_y)
                        located += 1
    assert located > 0


def test_answer_classes_are_balanced(dataset):
    letters = Counter()
    conflicts = Counter()
    for scene in load_drivelm(dataset).values():
        for frame in scene["key_frames"].values():
            letters.update(item["A"] for item in frame["QA"]["behavior"])
            conflicts.update(item["A"] for item in frame["QA"]["prediction"] if item["Q"].startswith("Would"))
    assert max(letters.values()) - min(letters.values()) <= 1 and len(letters) == 4
    assert set(conflicts) == {"Yes.", "No."}


def test_behaviour_options_differ_only_in_what_the_views_show(dataset):
    """Every option keeps the ego's steering and no two share a speed: the question alone cannot tell them apart."""
    for scene in load_drivelm(dataset).values():
        for frame in scene["key_frames"].values():
            question = frame["QA"]["behavior"][0]["Q"]
            options = [parse_behavior(text)[:2] for _, text in LISTED_OPTION.findall(question)]
            assert len(options) == 4 and all(steering and speed for steering, speed in options)
            assert len({steering for steering, _ in options}) == 1
            assert len({speed for _, speed in options}) == 4


def test_ego_follows_commands_and_presets_build():
    for name in SCENARIOS:
        assert build_world(name, seed=1).agents
    world = build_world("cruise", seed=2)
    yaw0 = world.state().ego_yaw
    for _ in range(60):
        state = world.step(0.1, EgoCommand(speed=5.0, curvature=0.02))
    assert state.ego_speed == pytest.approx(5.0, abs=0.05)
    travelled = sum(0.1 * 5.0 for _ in range(60))  # about 30 m after the speed settles
    assert state.ego_yaw - yaw0 == pytest.approx(0.02 * travelled, rel=0.25)
    assert math.isfinite(state.ego_x)


@pytest.mark.parametrize("argv, message", [
    (["--scenes", "0"], "--scenes"),
    (["--width", "8"], "--width/--height"),
    (["--duration", "-1"], "--duration"),
    (["--scenarios", "flying_cars"], "--scenarios"),
    (["--condition", "clear", "snow"], "--condition: unknown ['snow']"),
    (["--rig", "roof"], "--rig: unknown 'roof'"),
])
def test_impossible_world_arguments(tmp_path, capsys, argv, message):
    assert world_main(["--out", str(tmp_path / "w"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_conditions_and_rig_are_recorded_in_the_tables_and_drivelm(alt_dataset):
    tables = alt_dataset / "nuscenes" / "v1.0-mini"
    scenes = json.loads((tables / "scene.json").read_text())
    assert [s["description"].rsplit(" (", 1)[1] for s in scenes] == ["condition=night, rig=alt)",
                                                                      "condition=fog, rig=alt)"]
    drivelm = load_drivelm(alt_dataset)
    by_scene = {s["token"]: s["description"] for s in scenes}
    for token, scene in drivelm.items():
        assert scene["key_frames"]
        for frame in scene["key_frames"].values():
            assert f"condition={frame['condition']}, rig={frame['rig']}" in by_scene[token] and frame["rig"] == "alt"
    heights = {round(row["translation"][2], 2) for row in json.loads((tables / "calibrated_sensor.json").read_text())}
    assert heights == {calibration[2] for calibration in ALT_CALIBRATION.values()}


def test_prepare_and_the_training_loader_keep_the_condition(alt_dataset, tmp_path):
    from drive_mllm_ros.cameras import CameraRig
    from drive_mllm_ros.prompt import PromptBuilder
    from drive_mllm_ros.train.arguments import DataArguments
    from drive_mllm_ros.train.data import DataReport, read_drivelm

    source = alt_dataset / "drivelm" / "v1_1_train_nus.json"
    test = prepare_file(source, tmp_path / "test.json")
    frames = [frame for scene in test.values() for frame in scene["key_frames"].values()]
    assert sorted({frame["condition"] for frame in frames}) == ["fog", "night"]
    assert {frame["rig"] for frame in frames} == {"alt"}
    builder = PromptBuilder(rig=CameraRig(image_size=SMALL), layout="per_view")
    report = DataReport()
    samples = read_drivelm(source, None, builder, DataArguments(drivelm_json=str(source)), report)
    assert samples and report.frames == len(frames) and report.missing_image_frames == 0


def test_every_condition_gets_every_scenario():
    scenarios, conditions = tuple(SCENARIOS), ("clear", "night")
    plan = [scene_plan(i, scenarios, conditions) for i in range(len(scenarios) * len(conditions))]
    assert sorted(plan) == sorted((s, c) for s in scenarios for c in conditions)
    assert [condition for _, condition in plan[:4]] == ["clear", "night", "clear", "night"]
    assert [scene_plan(i, scenarios, ("clear",))[0] for i in range(9)] == [*scenarios, scenarios[0]]
