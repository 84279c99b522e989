"""`drive-mllm field-loop`: night bags -> hard cases -> label -> two candidates -> two gate decisions -> report.

End to end at the smallest size with a random model: the gate rejects its candidates, so only the products and the
recorded decisions are checked here; the issue's goals are measured with the trained student (README).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drive_mllm_ros.field_loop import main as field_loop
from drive_mllm_ros.field_loop import replay_weight, training_made


def test_the_loop_end_to_end_at_minimum_size(tiny_per_view_checkpoint, tmp_path):
    out = tmp_path / "loop"
    command = [sys.executable, "-m", "drive_mllm_ros.cli", "field-loop", "--student", str(tiny_per_view_checkpoint),
               "--out", str(out), "--suite-scenes", "2", "--field-scenes", "2", "--replay-scenes", "1", "--duration",
               "1", "--steps", "2", "--vision-steps", "2", "--max-new-tokens", "4", "--min-confidence", "1.0",
               "--check-scenes", "1", "--vision-tries", "2", "--min-speed-reading", "1.0"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.strip().endswith(f"report: {out / 'field_loop.md'}")
    assert (out / "field" / "hard_cases" / "manifest.jsonl").read_text().strip()  # frames the node kept
    labelled = json.loads((out / "field" / "labeled" / "v1_1_train_nus.json").read_text())
    assert len(labelled) == 2
    check = json.loads((out / "field" / "labeled" / "vision_check.json").read_text())
    vision_train = json.loads((out / "field" / "labeled" / "vision_train.json").read_text())
    assert len(check) == 1 and set(check) | set(vision_train) == set(labelled)  # one scene held out of the vision
    summary = json.loads((out / "field_loop.json").read_text())
    for name in ("replay", "night_only"):
        assert (out / "adapt" / name / "model" / "model.safetensors").is_file()
        readings = summary["speed_readings"][name]  # retried while below 1.0, at most twice
        assert len(readings) == (1 if readings[0] == 1.0 else 2) and all(0 <= r <= 1 for r in readings)
        visions = [out / "adapt" / f"{name}_vision", out / "adapt" / f"{name}_vision_2"][: len(readings)]
        for vision in visions:
            card = (vision / "model" / "README.md").read_text()
            assert "name: objects" in card and ("replay/drivelm" in card) == (name == "replay")
            assert "vision_train.json" in card and "vision_check.json" in card
        best = visions[readings.index(max(readings))]
        answers_card = (out / "adapt" / name / "model" / "README.md").read_text()
        assert f"path: {best}/model\n" in answers_card  # the answers start from the best vision
        record = json.loads((out / "gate" / name / "gate.json").read_text())
        assert record["decision"] in ("accepted", "rejected") and record["rule"]["target"] == "night"
        assert {"clear", "night"} <= set(record["by_condition"]["candidate"])
    assert set(summary["decisions"]) == {"replay", "night_only"} and len(summary["steps"]) == 6
    assert "replay)" in summary["steps"][3]["made"]  # the replay candidate trained on both sources
    for name in ("replay", "night_only"):  # the labelled accuracy questions repeated in both
        assert "question_filter: ^(Where is" in (out / "adapt" / name / "model" / "README.md").read_text()
    report = (out / "field_loop.md").read_text()
    assert "(gate/replay/gate.md)" in report and "(gate/night_only/gate.md)" in report
    assert "| night | accuracy |" in report and "## Issue goals (measured)" in report


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--student", "missing"], "--student missing: expected a checkpoint folder"),
        (["--suite-scenes", "1"], "--suite-scenes: expected at least 2, got 1"),
        (["--min-confidence", "2"], "--min-confidence: expected a token probability in 0..1, got 2.0"),
        (["--first-weight", "0"], "--first-weight: expected a number > 0, got 0.0"),
        (["--min-speed-reading", "50"], "--min-speed-reading: expected a share of frames in 0..1, got 50.0"),
        (["--vision-tries", "0"], "--vision-tries: expected at least 1, got 0"),
        (["--replay-json", "none.json"], "--replay-json none.json: expected the student's DriveLM v1.1 training JSON"),
        (["--out", "."], "expected a new or empty folder"),
    ],
)
def test_bad_input_is_named_before_anything_runs(tiny_per_view_checkpoint, tmp_path, capsys, change, message):
    argv = ["--student", str(tiny_per_view_checkpoint), "--out", str(tmp_path / "loop"), *change]
    assert field_loop(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "loop").exists()


def test_replay_weight_gives_the_ratio_of_samples():
    assert replay_weight(1.0, labelled=40, replay=160) == 0.25
    assert replay_weight(2.0, labelled=40, replay=20) == 4.0
    with pytest.raises(ValueError, match="expected a DriveLM JSON with key frames"):
        replay_weight(1.0, 40, 0)


def test_training_made_reads_the_model_card(tmp_path):
    night, replay = Path("/f/labeled.json"), Path("/r/train.json")
    (tmp_path / "README.md").write_text(f"# card\n\n## Data\n30 samples (behavior 4; {night} 10, {replay} 20) from "
                                        "3 frames\n\n## Training\n")
    made = training_made(tmp_path, 5, {"night": night, "replay": replay})
    assert made == "5 steps on 30 samples (10 night, 20 replay)"
    assert training_made(tmp_path, 5, {}) == "5 steps on 30 samples"
