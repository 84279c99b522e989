"""The README's first command end to end: synthetic scene -> bag -> node with the embedded student -> score -> report."""

from __future__ import annotations

import json
import subprocess
import sys

from drive_mllm_ros.model import parameter_count, parameter_label
from drive_mllm_ros.paths import embedded_model_dir


def test_demo_scores_the_embedded_student_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "drive_mllm_ros.cli", "demo", "--out", str(out), "--duration", "2"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = out / "report" / "report.md"
    assert run.stdout.strip().endswith(f"report: {report}")
    text = report.read_text()
    assert f"| **student** | {parameter_label(parameter_count(embedded_model_dir()))} |" in text
    scores = json.loads((out / "report" / "scores.json").read_text())
    assert scores["accuracy"] is not None and scores["items"]["total"] > 0
    # Whole answers: the test set's long object listings are not cut by the node's camera-rate token budgets.
    assert "malformed_coordinates" not in scores["input_issues"]["counts"]
    assert len(list((out / "report").glob("*.png"))) >= 2  # subscores and at least one key frame figure
