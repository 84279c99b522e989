"""`drive-mllm gate`: the decision as a pure function, and one real run of the command on a tiny suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drive_mllm_ros.cli import main as drive_mllm
from drive_mllm_ros.data.synthetic import WorldOptions, generate
from drive_mllm_ros.evaluation.gate import GateRule, decide, file_sha256
from drive_mllm_ros.evaluation.prepare import prepare_file


def scores(**accuracy: float | None) -> dict[str, dict]:
    """by_condition-shaped scores with accuracy and match F1 (0..100, the gate divides it by 100)."""
    return {name: {"accuracy": value, "match_f1": None if value is None else value * 100}
            for name, value in accuracy.items()}


CURRENT = scores(clear=0.80, night=0.30, rain=0.60)


def test_accepts_a_large_enough_target_gain_with_other_conditions_within_the_allowed_regression():
    decision = decide(CURRENT, scores(clear=0.79, night=0.45, rain=0.65), GateRule("night"))
    assert decision.accepted
    assert [c.condition for c in decision.checks] == ["night", "clear", "rain"]
    assert decision.checks[0].delta == pytest.approx(0.15) and decision.checks[1].delta == pytest.approx(-0.01)
    assert decision.reasons[0].startswith("night (target): accuracy 0.3000 -> 0.4500, gain +0.1500 >= required")


@pytest.mark.parametrize("candidate, failing", [
    (scores(clear=0.80, night=0.44, rain=0.60), "night (target): accuracy 0.3000 -> 0.4400, gain +0.1400 < required"),
    (scores(clear=0.77, night=0.90, rain=0.60), "clear: accuracy 0.8000 -> 0.7700, change -0.0300, over the allowed"),
    (scores(clear=0.80, night=0.90, rain=0.10), "rain: accuracy 0.6000 -> 0.1000, change -0.5000, over the allowed"),
])
def test_rejects_a_small_target_gain_or_any_regression(candidate, failing):
    decision = decide(CURRENT, candidate, GateRule("night"))
    failed = [check.reason for check in decision.checks if not check.passed]
    assert not decision.accepted and len(failed) == 1 and failed[0].startswith(failing)


def test_thresholds_and_metric_are_settable():
    candidate = scores(clear=0.70, night=0.35, rain=0.60)
    assert not decide(CURRENT, candidate, GateRule("night")).accepted
    assert decide(CURRENT, candidate, GateRule("night", "match_f1", min_gain=0.05, max_regression=0.10)).accepted
    assert decide(CURRENT, scores(clear=0.8, night=0.3, rain=0.6), GateRule("night", min_gain=0.0)).accepted


def test_a_condition_without_the_metric_is_not_checked_but_the_target_must_have_it():
    current, candidate = scores(clear=None, night=0.3), scores(clear=None, night=0.5)
    decision = decide(current, candidate, GateRule("night"))
    assert decision.accepted and decision.reasons[1] == "clear: accuracy not scored, no check"
    with pytest.raises(ValueError, match="--metric accuracy: nothing of that kind is scored in the target"):
        decide(candidate, current, GateRule("clear"))


@pytest.mark.parametrize("rule, message", [
    (GateRule("snow"), "--target snow: the suite has no frames of that condition; it has \\['clear', 'night', 'rain'\\]"),
    (GateRule("night", "bleu"), "--metric: expected one of"),
])
def test_bad_rules_are_refused(rule, message):
    with pytest.raises(ValueError, match=message):
        decide(CURRENT, CURRENT, rule)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """A two-condition suite: one night and one clear scene of one key frame each, prepared like a real one."""
    out = tmp_path_factory.mktemp("suite_world")
    generate(WorldOptions(out, scenes=2, seed=1, duration=0.5, width=224, height=126, val_fraction=0.0,
                          scenarios=("lead_brake", "cruise"), conditions=("night", "clear")))
    prepare_file(out / "drivelm" / "v1_1_train_nus.json", out / "drivelm" / "test.json")
    return out / "drivelm"


def test_gate_command_rejects_a_model_that_does_not_improve_on_itself(tiny_per_view_checkpoint, suite, tmp_path):
    out = tmp_path / "gate"
    argv = ["gate", "--current", str(tiny_per_view_checkpoint), "--candidate", str(tiny_per_view_checkpoint),
            "--suite", str(suite), "--target", "night", "--out", str(out), "--max-new-tokens", "2"]
    assert drive_mllm(argv) == 1
    record = json.loads((out / "gate.json").read_text())
    assert record["decision"] == "rejected" and record["rule"]["target"] == "night"
    assert set(record["by_condition"]["candidate"]) == {"clear", "night"}
    weights = file_sha256(tiny_per_view_checkpoint / "model.safetensors")
    assert record["checkpoints"]["current"]["weights_sha256"] == {"model.safetensors": weights}
    report = (out / "gate.md").read_text()
    assert report.startswith("# Checkpoint gate: REJECTED") and weights in report and "FAIL: night (target)" in report
    assert "| candidate | night |" in report and "Signed off: drive-mllm gate, " in report
    assert (out / "gate.png").stat().st_size > 1000
    assert all((out / role / name).is_file() for role in ("current", "candidate")
               for name in ("predictions.json", "scores.json", "report.md"))


@pytest.mark.parametrize("change, message", [
    ({"--suite": "missing"}, "--suite {tmp}/missing: expected a folder with test.json"),
    ({"--candidate": "."}, "--candidate .: expected a checkpoint folder with *.safetensors weights"),
    ({"--target": "fog"}, "--target fog: the suite has no frames of that condition; it has ['clear', 'night']"),
    ({"--min-gain": "-0.1"}, "--min-gain: expected a metric difference in 0..1, got -0.1"),
])
def test_gate_command_names_bad_input(tiny_per_view_checkpoint, suite, tmp_path, capsys, change, message):
    args = {"--current": str(tiny_per_view_checkpoint), "--candidate": str(tiny_per_view_checkpoint),
            "--suite": str(suite), "--target": "night", "--out": str(tmp_path / "gate")}
    args.update({flag: str(tmp_path / value) if flag == "--suite" else value for flag, value in change.items()})
    assert drive_mllm(["gate", *[part for pair in args.items() for part in pair]]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"drive-mllm gate: {message.format(tmp=tmp_path)}") and "\n" not in error
    assert not (tmp_path / "gate").exists()
