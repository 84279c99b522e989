"""`drive-mllm eval grounding`: answer loss with own, other-scene and black views, per question kind."""

from __future__ import annotations

import json

import pytest
from test_eval_predict import QUESTIONS, write_test_file

from drive_mllm_ros.evaluation import cli
from drive_mllm_ros.evaluation.grounding import question_kind


def test_grounding_rows_per_kind_from_real_forward_passes(tiny_per_view_checkpoint, tmp_path, capsys):
    drivelm = write_test_file(tmp_path)
    data = json.loads(drivelm.read_text())
    data["scene"]["key_frames"]["frame_b"]["QA"]["perception"][0]["A"] = "A blue truck."  # frames differ in answers
    drivelm.write_text(json.dumps(data))
    out = tmp_path / "grounding.json"
    argv = ["grounding", "--model", str(tiny_per_view_checkpoint), "--drivelm", str(drivelm), "--out", str(out),
            "--frames", "0"]
    assert cli.main(argv) == 0
    rows = json.loads(out.read_text())
    kinds = [question_kind(question) for _, question, _, _ in QUESTIONS]
    assert list(rows) == ["all", *sorted(kinds)]
    assert rows["all"]["qa"] == 4 and all(rows[kind]["qa"] == 2 for kind in kinds)
    for row in rows.values():
        assert row["gap_other"] == pytest.approx(row["other"] - row["own"])
        assert row["gap_blank"] == pytest.approx(row["blank"] - row["own"])
    # The random-init checkpoint's answers depend on its images, so swapping or blanking them changes the loss.
    assert rows["all"]["gap_other"] != 0 and rows["all"]["gap_blank"] != 0
    mean_own = sum(rows[kind]["own"] * rows[kind]["qa"] for kind in kinds) / 4
    assert rows["all"]["own"] == pytest.approx(mean_own)
    assert "| question kind |" in capsys.readouterr().out


def test_question_kind_drops_tags_and_options():
    question = ("What is the moving status of object <c1,CAM_FRONT,1.0,2.0>? Please select the correct answer from "
                "the following options: A. Stopped. B. Going ahead.")
    assert question_kind(question) == "What is the moving status of object <object>?"
    assert question_kind("Where is the cyclist in a blue shirt in the current scene?") == question_kind(
        "Where is the red car in the current scene?") == "Where is the <object> in the current scene?"


def test_grounding_names_a_frame_without_all_cameras(tiny_per_view_checkpoint, tmp_path, capsys):
    drivelm = write_test_file(tmp_path)
    data = json.loads(drivelm.read_text())
    del data["scene"]["key_frames"]["frame_b"]["image_paths"]["CAM_BACK"]
    drivelm.write_text(json.dumps(data))
    argv = ["grounding", "--model", str(tiny_per_view_checkpoint), "--drivelm", str(drivelm), "--out",
            str(tmp_path / "g.json")]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "frame 'frame_b'" in error and "CAM_BACK" in error
