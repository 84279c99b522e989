"""`drive-mllm label`: recorded hard cases labeled from the synthetic world's ground truth or a teacher checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_hard_cases import header

from drive_mllm_ros.cli import COMMANDS
from drive_mllm_ros.cli import main as drive_mllm
from drive_mllm_ros.drivelm import Q_BEHAVIOR_OPEN, Q_IMPORTANT_OBJECTS
from drive_mllm_ros.hard_case_store import DRIVELM_JSON
from drive_mllm_ros.hard_cases import HardCase, HardCaseRecorder, HardCaseSettings, Verdict
from drive_mllm_ros.prompt import PromptBuilder
from drive_mllm_ros.scene import Scene
from drive_mllm_ros.train.arguments import DataArguments
from drive_mllm_ros.train.data import DataReport, read_drivelm

NODE_ANSWER = "RECORDED"


def file_stamp_ns(path: Path) -> int:
    """nuScenes file names end in `__<CAMERA>__<timestamp_us>.jpg`."""
    return int(path.stem.rsplit("__", 1)[1]) * 1000


def recorded_case(images: dict[str, Path]) -> HardCase:
    """A frame as the node would keep it: the world's JPEGs as received, the node's (placeholder) answers."""
    messages = {
        camera: SimpleNamespace(format="jpeg", data=path.read_bytes(), header=header(file_stamp_ns(path)))
        for camera, path in images.items()
    }
    stamp_ns = file_stamp_ns(images["CAM_FRONT"])
    scene = Scene(stamp_ns, "CAM_FRONT", "student", "per_view", dict.fromkeys(images, "ok"))
    scene.qa = [
        {"stage": stage, "question": question, "answer": NODE_ANSWER, "confidence": 0.1, "min_prob": 0.05}
        for stage, question in (("perception", Q_IMPORTANT_OBJECTS), ("behavior", Q_BEHAVIOR_OPEN))
    ]
    return HardCase(scene.to_dict(), stamp_ns, Verdict(["flagged"], ["flagged: test"], 0.1), messages)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    assert drive_mllm(["world", "--out", str(out), "--scenes", "1", "--duration", "1", "--width", "224",
                       "--height", "126"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def dataset(world, tmp_path_factory) -> Path:
    """The world's key frames plus one in-between sweep, recorded as the node's hard-case folder."""
    gt_path = world / "drivelm" / "v1_1_train_nus.json"
    gt = json.loads(gt_path.read_text())
    folder = tmp_path_factory.mktemp("hard_cases")
    recorder = HardCaseRecorder(HardCaseSettings(enabled=True, dir=str(folder)), lambda condition, message: None)
    for scene in gt.values():
        for frame in scene["key_frames"].values():
            recorder.keep(recorded_case({c: gt_path.parent / p for c, p in frame["image_paths"].items()}))
    sweeps = world / "nuscenes" / "sweeps"
    recorder.keep(recorded_case({c.name: sorted(c.iterdir())[2] for c in sweeps.iterdir()}))
    recorder.close()
    return folder


def load_for_training(path: Path) -> tuple[list, DataReport]:
    report = DataReport()
    args = DataArguments(missing_images="fail", open_choices=False)
    return read_drivelm(path, None, PromptBuilder(layout="per_view"), args, report), report


def test_ground_truth_labels_match_key_frames_by_cam_front_stamp(world, dataset, tmp_path, capsys):
    gt = json.loads((world / "drivelm" / "v1_1_train_nus.json").read_text())
    out = tmp_path / "labeled"
    assert "label" in COMMANDS
    command = ["label", "--dataset", str(dataset), "--ground-truth", str(world / "drivelm" / "v1_1_train_nus.json")]
    assert drive_mllm([*command, "--out", str(out)]) == 0
    assert "1 without a ground-truth key frame" in capsys.readouterr().out
    labeled = json.loads((out / "v1_1_train_nus.json").read_text())
    assert labeled.keys() == gt.keys()
    for scene, data in gt.items():
        assert data["key_frames"].keys() == labeled[scene]["key_frames"].keys()
        for token, frame in data["key_frames"].items():
            ours = labeled[scene]["key_frames"][token]
            assert ours["QA"] == frame["QA"] and ours["key_object_infos"] == frame["key_object_infos"]
            for camera, path in ours["image_paths"].items():  # the recorded images, relative to the output
                assert (out / path).read_bytes() == (world / "drivelm" / frame["image_paths"][camera]).read_bytes()
    samples, report = load_for_training(out / "v1_1_train_nus.json")
    assert report.frames == sum(len(s["key_frames"]) for s in gt.values()) and len(samples) == sum(report.qa.values())


def test_teacher_answers_every_recorded_question(dataset, tiny_per_view_checkpoint, tmp_path):
    out = tmp_path / "teacher"
    command = ["label", "--dataset", str(dataset), "--teacher", str(tiny_per_view_checkpoint), "--out", str(out)]
    assert drive_mllm([*command, "--max-new-tokens", "4", "--device", "cpu"]) == 0
    recorded = json.loads((dataset / DRIVELM_JSON).read_text())
    labeled = json.loads((out / "v1_1_train_nus.json").read_text())
    frames = labeled["drive_mllm_hard_cases"]["key_frames"]
    assert frames.keys() == recorded["drive_mllm_hard_cases"]["key_frames"].keys() and len(frames) == 3
    answers = [item for frame in frames.values() for items in frame["QA"].values() for item in items]
    assert answers and all(item["A"] and item["A"] != NODE_ANSWER for item in answers)
    assert {item["Q"] for item in answers} <= {Q_IMPORTANT_OBJECTS, Q_BEHAVIOR_OPEN}
    assert load_for_training(out / "v1_1_train_nus.json")[1].frames == 3


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--dataset", "/nonexistent", "--ground-truth", "x.json"], "--dataset /nonexistent: expected a hard-case"),
        (["--dataset", "DATASET", "--ground-truth", "/nonexistent.json"], "--ground-truth file '/nonexistent.json'"),
        (["--dataset", "DATASET", "--teacher", "/nonexistent"], "--teacher: model checkpoint folder"),
        (["--dataset", "DATASET", "--ground-truth", "x.json", "--tolerance", "0"], "--tolerance must be > 0"),
    ],
)
def test_bad_input_names_the_argument(arguments, expected, dataset, capsys):
    arguments = [str(dataset) if a == "DATASET" else a for a in arguments]
    assert drive_mllm(["label", *arguments]) == 2
    assert expected in capsys.readouterr().err
