"""The node over real DDS on loopback with a tiny checkpoint: outputs, stamps, bad input, policies, SIGINT."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Path
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from drive_mllm_ros.drivelm import Q_TRAJECTORY
from drive_mllm_ros.paths import default_params_file

from rosutil import NS, CameraRigPublisher, RosHarness, start_node, stop_node, wait_for, write_params

OUTPUTS = {
    "/drive_mllm/perception": String,
    "/drive_mllm/prediction": String,
    "/drive_mllm/planning": String,
    "/drive_mllm/scene": String,
    "/drive_mllm/key_objects": MarkerArray,
    "/drive_mllm/trajectory": Path,
    "/drive_mllm/annotated": CompressedImage,
    "/drive_mllm/answer": String,
    "/diagnostics": DiagnosticArray,
}
FAST = {  # short answers keep a random tiny model quick on 2 cores
    "max_new_tokens__perception": 6,
    "max_new_tokens__prediction": 2,
    "max_new_tokens__planning": 4,
    "max_new_tokens__behavior": 4,
    "max_new_tokens__trajectory": 6,
    "image_qos_reliability": "reliable",
    "diagnostics_period": 0.5,
}


@pytest.fixture(scope="module")
def harness():
    ros = RosHarness()
    for topic, msg_type in OUTPUTS.items():
        ros.subscribe(topic, msg_type)
    yield ros
    ros.close()


def scenes(harness):
    return [json.loads(m.data) for m in harness.messages("/drive_mllm/scene")]


def diagnostic_values(harness) -> dict[str, str]:
    arrays = harness.messages("/diagnostics")
    return {kv.key: kv.value for kv in arrays[-1].status[0].values} if arrays else {}


def stamp_ns(stamp) -> int:
    return stamp.sec * NS + stamp.nanosec


def run_sweeps(rig, harness, condition, start_ns, timeout=90.0, period_ns=NS // 4, **sweep_kwargs):
    """Publish sweeps at 4 Hz (stamps advancing) until `condition` holds; returns the next free stamp."""
    stamp = [start_ns]

    def publish():
        rig.sweep(stamp[0], **sweep_kwargs)
        stamp[0] += period_ns

    assert wait_for(condition, timeout, step=0.25, action=publish), (
        f"timed out waiting; got {len(scenes(harness))} scenes"
    )
    return stamp[0]


def hard_case_lines(folder) -> list[dict]:
    manifest = folder / "manifest.jsonl"
    return [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.is_file() else []


def test_compressed_cameras_to_every_output_with_stamps_and_bad_input(tiny_per_view_checkpoint, harness, tmp_path):
    hard_cases = tmp_path / "hard_cases"
    params = write_params(
        tmp_path / "p.yaml",
        model_path=str(tiny_per_view_checkpoint),
        layout="per_view",
        missing_camera_policy="blank",
        questions__trajectory=[Q_TRAJECTORY],
        hard_cases__enabled=True,
        hard_cases__dir=str(hard_cases),
        hard_cases__min_confidence=1.0,  # every frame qualifies
        hard_cases__max_per_hour=4,
        **FAST,
    )
    node = start_node(params, tmp_path / "node.log")
    rig = CameraRigPublisher(harness, "compressed")
    question = harness.publisher(String, "/drive_mllm/question")
    try:
        # 1. Six synchronized cameras -> every output, stamped with the set's stamp.
        t = run_sweeps(
            rig, harness, lambda: all(harness.messages(t) for t in OUTPUTS if t != "/drive_mllm/answer"), 100 * NS
        )
        scene = scenes(harness)[-1]
        published = {100 * NS + k * NS // 4 for k in range(1000)}
        scene_stamp = scene["stamp"]["sec"] * NS + scene["stamp"]["nanosec"]
        assert scene_stamp in published and scene["frame_id"] == "CAM_FRONT" and not scene["partial"]
        assert [q["stage"] for q in scene["qa"]][:4] == ["perception", "planning", "behavior", "trajectory"]
        assert scene["model"] == "tiny" and scene["latency_ms"]["total"] > 0
        for topic in ("/drive_mllm/key_objects", "/drive_mllm/annotated", "/drive_mllm/trajectory"):
            msg = harness.messages(topic)[-1]
            header = msg.markers[0].header if topic.endswith("key_objects") else msg.header
            assert stamp_ns(header.stamp) in published
        assert harness.messages("/drive_mllm/trajectory")[-1].header.frame_id == "base_link"
        assert harness.messages("/drive_mllm/perception")[-1].data.startswith("stamp=")
        assert wait_for(lambda: int(diagnostic_values(harness).get("sets processed", 0)) >= 1, 10)
        assert (
            diagnostic_values(harness)["model"] == "tiny"
            and float(diagnostic_values(harness)["latency total p95 ms"]) > 0
        )

        # 2. ~/question is answered about the newest set.
        assert wait_for(
            lambda: harness.messages("/drive_mllm/answer"),
            30,
            step=0.5,
            action=lambda: question.publish(String(data="Is it raining?")),
        )

        # 2b. Hard cases: every frame qualifies (min_confidence 1); a flag (topic or service) keeps the newest one.
        assert wait_for(lambda: hard_case_lines(hard_cases), 20, step=0.2)
        line = hard_case_lines(hard_cases)[0]
        assert "low_confidence" in line["reasons"] and 0 < line["confidence"] < 1 and len(line["image_paths"]) == 6
        assert all((hard_cases / path).is_file() for path in line["image_paths"].values())
        flag = harness.publisher(String, "/drive_mllm/flag_frame")
        assert wait_for(  # republished: a message sent while discovery completes can be lost
            lambda: any("flagged: near miss" in d for ln in hard_case_lines(hard_cases) for d in ln["details"]),
            180,  # flags are served between frames, and a frame can take a minute on a loaded 2-core machine
            step=5.0,
            action=lambda: flag.publish(String(data="near miss")),
        )
        client = harness.node.create_client(Trigger, "/drive_mllm/flag_frame")
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        assert wait_for(future.done, 10) and future.result().success
        drivelm = json.loads((hard_cases / "drivelm" / "v1_1_train_nus.json").read_text())
        assert 1 <= len(drivelm["drive_mllm_hard_cases"]["key_frames"]) <= 4

        # 3. A corrupt JPEG on one camera: the set is served with a blank view and the condition reported.
        harness.clear()
        corrupt = {"CAM_BACK": rig.message("CAM_BACK", 0, data=b"\xff\xd8\xff\xe0 not a jpeg")}
        t = run_sweeps(
            rig, harness, lambda: any(s["cameras"]["CAM_BACK"] == "blank" for s in scenes(harness)), t, override=corrupt
        )
        assert wait_for(lambda: any("corrupt" in k for k in diagnostic_values(harness)), 10, step=0.2)

        # 4. A camera that stops: partial sets, CAM_FRONT_LEFT blank.
        harness.clear()
        t = run_sweeps(
            rig,
            harness,
            lambda: any(s["cameras"]["CAM_FRONT_LEFT"] == "blank" for s in scenes(harness)),
            t,
            skip=("CAM_FRONT_LEFT",),
        )
        assert all(s["partial"] for s in scenes(harness)[-1:])

        # 5. The source restarts with older stamps (a looping bag): sets flow again.
        harness.clear()
        run_sweeps(rig, harness, lambda: any(s["stamp"]["sec"] < 100 for s in scenes(harness)), 10 * NS)

        # 6. SIGINT exits 0.
        assert stop_node(node) == 0
    finally:
        if node.poll() is None:
            node.kill()
        print((tmp_path / "node.log").read_text()[-3000:])


def test_raw_images_drop_policy_and_a_frame_that_makes_the_model_raise(tiny_per_view_checkpoint, harness, tmp_path):
    params = write_params(
        tmp_path / "p.yaml",
        model_path=str(tiny_per_view_checkpoint),
        layout="per_view",
        image_transport="raw",
        topic_pattern="/{camera}/image_raw",
        missing_camera_policy="drop",
        **FAST,
    )
    node = start_node(params, tmp_path / "node.log")
    rig = CameraRigPublisher(harness, "raw")
    try:
        harness.clear()
        t = run_sweeps(rig, harness, lambda: len(scenes(harness)) >= 1, 500 * NS)
        # An empty 0x0 image converts but cannot be tiled: the frame fails inside the model path.
        empty = Image(height=0, width=0, encoding="rgb8", step=0, data=b"")
        empty.header.frame_id = "CAM_BACK"
        harness.clear()

        def error_counted():
            return int(diagnostic_values(harness).get("errors", 0)) >= 1

        t = run_sweeps(rig, harness, error_counted, t, override={"CAM_BACK": empty})
        harness.clear()
        t = run_sweeps(rig, harness, lambda: len(scenes(harness)) >= 1, t)  # still serving after the error
        # A camera that stops under the drop policy: no partial sets are published, drops are counted.
        harness.clear()
        run_sweeps(
            rig,
            harness,
            lambda: int(diagnostic_values(harness).get("sets dropped (sync)", 0)) >= 3,
            t,
            skip=("CAM_BACK_RIGHT",),
        )
        assert not any(s["partial"] for s in scenes(harness))
        assert stop_node(node) == 0
    finally:
        if node.poll() is None:
            node.kill()
        print((tmp_path / "node.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def pickle_checkpoint(tiny_per_view_checkpoint, tmp_path_factory):
    """The tiny checkpoint with its weights as a pickle .bin instead of safetensors."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("pickle") / "ckpt"
    shutil.copytree(tiny_per_view_checkpoint, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"missing_camera_policy": "wait"}, "missing_camera_policy"),
        ({"model_path": "/nonexistent/checkpoint"}, "/nonexistent/checkpoint"),
        ({"anchor_camera": "CAM_ROOF"}, "anchor_camera"),
        ({"question_file": "/nonexistent/test.json"}, "question_file"),
        ({"model_path": "PICKLE"}, "safetensors"),
    ],
)
def test_invalid_start_exits_with_an_error_naming_the_cause(overrides, expected, pickle_checkpoint, tmp_path):
    if overrides.get("model_path") == "PICKLE":
        overrides = {"model_path": str(pickle_checkpoint)}
    params = write_params(tmp_path / "p.yaml", **overrides)
    drive_mllm = [sys.executable, "-m", "drive_mllm_ros.cli"]  # the `drive-mllm` console script
    node_args = ["node", "--ros-args", "--params-file", str(default_params_file()), "--params-file", str(params)]
    result = subprocess.run(drive_mllm + node_args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert expected in result.stderr
