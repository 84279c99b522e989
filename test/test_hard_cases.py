"""Hard cases without ROS: judging, the retention policy (worst N per hour, max size), the folder format."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from drive_mllm_ros.cameras import NUSCENES_CAMERAS
from drive_mllm_ros.hard_case_store import DRIVELM_JSON, MANIFEST, TEMP_PREFIX
from drive_mllm_ros.hard_cases import (
    DISAGREEMENT,
    FLAGGED,
    HOUR_NS,
    LOW_CONFIDENCE,
    UNPARSED,
    HardCase,
    HardCaseRecorder,
    HardCaseSettings,
    Kept,
    RetentionPolicy,
    judge,
)
from drive_mllm_ros.scene import Scene
from drive_mllm_ros.sync import NS

from rosutil import camera_picture, jpeg_bytes

SETTINGS = HardCaseSettings(enabled=True, min_confidence=0.5)


def qa(stage: str, answer: str, confidence: float = 0.9) -> dict:
    return {"stage": stage, "question": f"{stage}?", "answer": answer, "confidence": confidence, "min_prob": 0.1}


# ---- judging -------------------------------------------------------------------------------------------------
def test_judge_names_each_reason_and_badness_orders_frames():
    calm = [qa("perception", "A car <c1,CAM_FRONT,800.0,450.0>."), qa("planning", "Follow <c1,CAM_FRONT,805.0,452.0>.")]
    assert judge(calm, 0, NUSCENES_CAMERAS, SETTINGS).reasons == []

    unsure = [qa("perception", "A car.", 0.2), qa("planning", "Go.", 0.7)]
    verdict = judge(unsure, 0, NUSCENES_CAMERAS, SETTINGS)
    assert verdict.reasons == [LOW_CONFIDENCE] and verdict.confidence == 0.2 and "perception" in verdict.details[0]

    moved = [
        qa("perception", "A car <c1,CAM_FRONT,800.0,450.0>."),
        qa("prediction", "Yes, <c1,CAM_BACK,800.0,450.0>."),  # another camera
        qa("planning", "Mind <c1,CAM_FRONT,900.0,450.0> and <c7,CAM_FRONT,1.0,1.0>."),  # 100 px away; unknown c7
    ]
    verdict = judge(moved, 2, NUSCENES_CAMERAS, SETTINGS, flags=["near miss"])
    assert verdict.reasons == [UNPARSED, DISAGREEMENT, FLAGGED]
    assert sum("c7" in d for d in verdict.details) == 1 and len(verdict.details) == 5
    assert (
        "flagged: near miss" in verdict.details
        and verdict.badness > judge(unsure, 0, NUSCENES_CAMERAS, SETTINGS).badness
    )

    off = HardCaseSettings(min_confidence=0.0, on_unparsed=False, on_disagreement=False)
    assert judge(moved + unsure, 2, NUSCENES_CAMERAS, off).reasons == []
    assert judge([qa("planning", "Mind <c7,CAM_FRONT,1.0,1.0>.")], 0, NUSCENES_CAMERAS, SETTINGS).reasons == []


@pytest.mark.parametrize(
    ("name", "value"), [("min_confidence", 1.5), ("max_per_hour", 0), ("max_mb", 0), ("jpeg_quality", 101)]
)
def test_settings_errors_name_the_parameter(name, value):
    with pytest.raises(ValueError, match=f"hard_cases.{name}"):
        HardCaseSettings(**{name: value}).validate()


def test_default_folder_is_under_ros_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_HOME", str(tmp_path))
    assert HardCaseSettings().folder() == tmp_path / "drive_mllm" / "hard_cases"
    assert HardCaseSettings(dir="~/x").folder() == Path.home() / "x"


# ---- retention policy ----------------------------------------------------------------------------------------
def offer(policy: RetentionPolicy, key: str, hour: int, badness: float, size: int = 10, second: int = 0) -> bool:
    candidate = Kept(key, hour * HOUR_NS + second * NS, badness, size)
    evict = policy.plan(candidate)
    if evict is not None:
        policy.apply(candidate, evict)
    return evict is not None


def test_worst_n_per_hour_rotate_out_the_better_and_older_ones():
    policy = RetentionPolicy(max_per_hour=3, max_bytes=10**9)
    for second, badness in enumerate([1.2, 1.5, 1.1]):
        assert offer(policy, f"a{second}", 0, badness, second=second)
    assert offer(policy, "a3", 0, 1.9, second=3)  # worse than the best kept one: a2 (1.1) goes
    assert not offer(policy, "a4", 0, 1.0, second=4)  # better than every kept one: not kept
    assert offer(policy, "b0", 1, 1.0)  # another hour has its own quota
    assert sorted(policy.kept) == ["a0", "a1", "a3", "b0"]
    assert offer(policy, "a5", 0, 1.2, second=5)  # as bad as a0 but newer: the older one rotates out
    assert sorted(policy.kept) == ["a1", "a3", "a5", "b0"]


def test_max_size_evicts_the_oldest_hour_least_bad_first():
    policy = RetentionPolicy(max_per_hour=10, max_bytes=35)
    assert offer(policy, "old-bad", 0, 2.0) and offer(policy, "old-mild", 0, 1.0, second=1)
    assert offer(policy, "new", 1, 1.0)
    assert offer(policy, "newer", 2, 1.5)  # 40 bytes > 35: the oldest hour's least bad frame goes
    assert sorted(policy.kept) == ["new", "newer", "old-bad"] and policy.total_bytes == 30
    assert not offer(policy, "huge", 3, 5.0, size=36)  # can never fit
    assert not offer(policy, "older", 0, 0.5, second=2, size=10)  # it would be the first to go itself
    assert sorted(policy.kept) == ["new", "newer", "old-bad"]


def test_the_same_frame_again_keeps_its_worse_judgement():
    policy = RetentionPolicy(max_per_hour=1, max_bytes=100)
    assert offer(policy, "f", 0, 1.5)
    assert not offer(policy, "f", 0, 1.2)
    assert offer(policy, "f", 0, 2.5) and policy.kept["f"].badness == 2.5 and len(policy.kept) == 1


# ---- the recorder and its folder -----------------------------------------------------------------------------
def header(stamp_ns: int) -> SimpleNamespace:
    return SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // NS, nanosec=stamp_ns % NS))


@pytest.fixture(scope="module")
def jpegs() -> dict[str, bytes]:
    return {camera: jpeg_bytes(camera_picture(i, (160, 90))) for i, camera in enumerate(NUSCENES_CAMERAS)}


def case(jpegs: dict[str, bytes], stamp_ns: int, confidence: float, raw_camera: str = "") -> HardCase:
    """A frame as the node hands it over: scene dict, verdict, one message per camera (one raw if asked)."""
    messages = {}
    for i, camera in enumerate(NUSCENES_CAMERAS):
        if camera == raw_camera:
            pixels = camera_picture(i, (160, 90))
            messages[camera] = SimpleNamespace(
                encoding="rgb8",
                height=90,
                width=160,
                step=480,
                data=pixels.tobytes(),
                header=header(stamp_ns + (i - 1) * 1000),
            )
        else:
            messages[camera] = SimpleNamespace(
                format="jpeg", data=jpegs[camera], header=header(stamp_ns + (i - 1) * 1000)
            )
    scene = Scene(stamp_ns, "CAM_FRONT", "tiny", "per_view", dict.fromkeys(NUSCENES_CAMERAS, "ok"))
    scene.qa = [qa("perception", "A car <c1,CAM_FRONT,800.0,450.0>.", confidence), qa("behavior", "Go.", 0.9)]
    verdict = judge(scene.qa, 0, NUSCENES_CAMERAS, SETTINGS)
    return HardCase(scene.to_dict(), stamp_ns, verdict, messages)


def recorder(folder: Path, max_per_hour: int = 2, max_mb: int = 10) -> tuple[HardCaseRecorder, list[str]]:
    reports: list[str] = []
    settings = HardCaseSettings(enabled=True, dir=str(folder), max_per_hour=max_per_hour, max_mb=max_mb)
    return HardCaseRecorder(settings, lambda condition, message: reports.append(message)), reports


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / MANIFEST).read_text().splitlines()]


def test_recorder_writes_a_drivelm_dataset_that_training_loads(jpegs, tmp_path):
    from drive_mllm_ros.prompt import PromptBuilder
    from drive_mllm_ros.train.arguments import DataArguments
    from drive_mllm_ros.train.data import DataReport, read_drivelm

    rec, reports = recorder(tmp_path)
    for k, confidence in enumerate([0.3, 0.1, 0.4]):  # the third is better than both kept ones: not kept
        assert rec.offer(case(jpegs, 100 * NS + k * NS // 2, confidence, raw_camera="CAM_BACK"))
    rec.close()
    assert rec.counts["hard cases kept"] == 2 and rec.counts["hard cases not kept (policy)"] == 1 and not reports
    lines = manifest(tmp_path)
    assert [line["stamp_ns"] for line in lines] == [100 * NS, 100 * NS + NS // 2]
    first = lines[0]
    assert first["reasons"] == [LOW_CONFIDENCE] and first["confidence"] == 0.3 and first["badness"] == 1.7
    assert [s["stage"] for s in first["answer_scores"]] == ["perception", "behavior"]
    assert first["image_paths"]["CAM_FRONT"] == "frames/100000000/drive_mllm__CAM_FRONT__100000000.jpg"
    assert (tmp_path / first["image_paths"]["CAM_FRONT"]).read_bytes() == jpegs["CAM_FRONT"]  # as received
    raw_file = tmp_path / first["image_paths"]["CAM_BACK"]
    assert raw_file.read_bytes()[:2] == b"\xff\xd8"  # raw images are JPEG-encoded
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["100000000", "100500000"]

    drivelm = json.loads((tmp_path / DRIVELM_JSON).read_text())
    frame = drivelm["drive_mllm_hard_cases"]["key_frames"]["100000000"]
    assert (
        frame["QA"]["perception"][0]["A"] == "A car <c1,CAM_FRONT,800.0,450.0>." and "C" in frame["QA"]["perception"][0]
    )
    assert frame["image_paths"]["CAM_FRONT"] == "../frames/100000000/drive_mllm__CAM_FRONT__100000000.jpg"
    report = DataReport()
    args = DataArguments(missing_images="fail", open_choices=False)
    samples = read_drivelm(tmp_path / DRIVELM_JSON, None, PromptBuilder(layout="per_view"), args, report)
    assert report.frames == 2 and len(samples) == 4 and all(Path(p).is_file() for p in samples[0].image_paths)


def test_restart_continues_the_folder_and_cleans_half_written_frames(jpegs, tmp_path):
    rec, _ = recorder(tmp_path, max_per_hour=1)
    rec.offer(case(jpegs, 5 * NS, 0.3))
    rec.close()
    (tmp_path / "frames" / f"{TEMP_PREFIX}9000000").mkdir()  # a crash mid-write
    set_aside = tmp_path / "frames" / f"{TEMP_PREFIX}old-5000000"  # a crash while replacing frame 5000000
    os.replace(tmp_path / "frames" / "5000000", set_aside)

    again, reports = recorder(tmp_path, max_per_hour=1)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["5000000"] and not reports
    again.offer(case(jpegs, 6 * NS, 0.4))  # better than the kept frame of the same hour: not kept
    again.offer(case(jpegs, 7 * NS, 0.05))  # worse: replaces it
    again.close()
    assert [line["frame"] for line in manifest(tmp_path)] == ["7000000"]
    assert again.counts == {
        "hard cases kept": 1,
        "hard cases not kept (policy)": 1,
        "hard cases dropped (busy)": 0,
        "hard case write errors": 0,
    }


def test_size_limit_and_a_write_error_never_stop_the_writer(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (180, 320, 3), np.uint8)
    jpegs = dict.fromkeys(NUSCENES_CAMERAS, jpeg_bytes(noise))  # ~60 kB each: few frames fill 1 MB
    frame_bytes = sum(len(data) for data in jpegs.values())
    rec, reports = recorder(tmp_path, max_per_hour=100, max_mb=1)
    frames = tmp_path / "frames"
    frames.rename(tmp_path / "moved")
    frames.write_text("not a folder")  # every write fails now
    rec.offer(case(jpegs, 1 * NS, 0.2))
    assert_eventually(lambda: rec.counts["hard case write errors"] == 1)
    assert any("writing a frame failed" in r for r in reports)
    frames.unlink()
    (tmp_path / "moved").rename(frames)
    count = 1_000_000 // frame_bytes + 3  # more than fit in 1 MB
    for k in range(count):  # one frame per hour: space goes to the newest hours
        rec.keep(case(jpegs, (2 + k) * HOUR_NS, 0.2))
    rec.close()
    kept = manifest(tmp_path)
    assert 0 < len(kept) < count and rec.policy.total_bytes <= 1_000_000
    assert sum(line["size_bytes"] for line in kept) == rec.policy.total_bytes
    on_disk = sum(f.stat().st_size for f in frames.rglob("*") if f.is_file())
    assert abs(on_disk - rec.policy.total_bytes) < 100 * len(kept)
    assert [line["stamp_ns"] for line in kept] == [(2 + k) * HOUR_NS for k in range(count - len(kept), count)]


def assert_eventually(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_images_left_out_when_blank(jpegs, tmp_path):
    rec, _ = recorder(tmp_path)
    hard = case(jpegs, NS, 0.1)
    del hard.messages["CAM_BACK"]
    assert rec.keep(hard)
    rec.close()
    line = manifest(tmp_path)[0]
    assert "CAM_BACK" not in line["image_paths"] and len(line["image_paths"]) == 5
    assert np.all([(tmp_path / p).is_file() for p in line["image_paths"].values()])


def test_a_folder_that_cannot_be_used_is_an_error_naming_the_parameter(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"hard_cases.dir: cannot use '.*file/sub'"):
        recorder(tmp_path / "file" / "sub")
