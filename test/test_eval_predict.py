"""`drive-mllm eval predict`: a checkpoint answers a prepared test file's questions from its camera images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.evaluation import cli
from drive_mllm_ros.evaluation.predict import frame_views
from drive_mllm_ros.evaluation.testset import load_test
from drive_mllm_ros.prompt import PromptBuilder

QUESTIONS = (("perception", "What are the important objects in the current scene?", "A red car.", 2),
             ("behavior", "Predict the behavior of the ego vehicle. A. Stop. B. Go.", "A", 0))


def write_test_file(folder: Path) -> Path:
    """A prepared test file with two key frames, each with six 64x36 camera images beside it."""
    rng = np.random.default_rng(0)
    frames = {}
    for name in ("frame_a", "frame_b"):
        paths = {}
        for camera in CameraRig().names:
            path = folder / "samples" / f"{name}_{camera}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 255, (36, 64, 3), dtype=np.uint8))
            paths[camera] = f"samples/{path.name}"
        qa = {"perception": [], "prediction": [], "planning": [], "behavior": []}
        for stage, question, answer, tag in QUESTIONS:
            qa[stage].append({"Q": question, "A": answer, "tag": [tag]})
        frames[name] = {"QA": qa, "image_paths": paths}
    test = folder / "test.json"
    test.write_text(json.dumps({"scene": {"key_frames": frames}}))
    return test


def test_predict_answers_every_question_and_scores(tiny_per_view_checkpoint, tmp_path):
    test = write_test_file(tmp_path)
    for name, extra in (("pred", []), ("blank", ["--blank-images"])):
        out = tmp_path / f"{name}.json"
        argv = ["predict", "--model", str(tiny_per_view_checkpoint), "--gt", str(test), "--out", str(out),
                "--max-new-tokens", "4", *extra]
        assert cli.main(argv) == 0
        predictions = json.loads(out.read_text())
        assert [p["id"] for p in predictions] == [item.id for item in load_test(test)]
        assert all(isinstance(p["answer"], str) for p in predictions)
        assert cli.main(["score", "--gt", str(test), "--pred", str(out), "--out", str(tmp_path / name)]) == 0


def test_blank_views_are_black_and_keep_sizes(tmp_path):
    test = write_test_file(tmp_path)
    frame = json.loads(test.read_text())["scene"]["key_frames"]["frame_a"]
    builder = PromptBuilder(layout="per_view")
    views = frame_views(frame, builder, tmp_path, blank=False)
    blank = frame_views(frame, builder, tmp_path, blank=True)
    assert [v.shape for v in views] == [b.shape for b in blank] == [(36, 64, 3)] * 6
    assert views[0].any() and not any(b.any() for b in blank)
