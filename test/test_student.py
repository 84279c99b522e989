"""The shipped student (models/student) against the goals of issue 6, on freshly generated scenes.

Scenes come from a seed no training run uses (the recipe trains on seed 1 and holds out seed 9001), so the
committed weights are proven on data they never saw. The teacher it was distilled from ships beside it
(models/teacher) for the student-versus-teacher goals. Skipped until a student is committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drive_mllm_ros.cli import main as drive_mllm
from drive_mllm_ros.data.world import SCENARIOS
from drive_mllm_ros.model import parameter_count
from drive_mllm_ros.paths import EMBEDDED_WORLD_SIZE

MODELS = Path(__file__).resolve().parents[1] / "models"
STUDENT, TEACHER = MODELS / "student", MODELS / "teacher"
FRESH_SEED = 9101
MIN_ACCURACY, MIN_CAMERA_GAIN, MIN_MATCH_F1 = 0.75, 0.25, 50.0  # match F1 is scored on 0..100
MIN_SHARE_OF_TEACHER, MAX_PARAMETER_SHARE = 0.90, 0.25
MAX_MODELS_BYTES = 30 * 1024 * 1024

pytestmark = pytest.mark.skipif(not (STUDENT / "model.safetensors").is_file(), reason="no student in models/student")


def scores_of(model: Path, test: Path, out: Path, blank: bool = False) -> dict:
    prediction = out / "pred.json"
    predict = ["eval", "predict", "--model", str(model), "--gt", str(test), "--out", str(prediction)]
    assert drive_mllm(predict + (["--blank-images"] if blank else [])) == 0
    assert drive_mllm(["eval", "score", "--gt", str(test), "--pred", str(prediction), "--out", str(out)]) == 0
    return json.loads((out / "scores.json").read_text())


@pytest.fixture(scope="module")
def fresh_scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Scores of the student, the student fed black views and the teacher on scenes of a fresh seed, every scenario
    once: with fewer, the black-view baseline swings with the scenes' speeds (its guess is the commonest class)."""
    world = tmp_path_factory.mktemp("fresh_world")
    assert drive_mllm(["world", "--out", str(world), "--scenes", str(len(SCENARIOS)), "--seed", str(FRESH_SEED),
                       "--duration", "4", "--width", str(EMBEDDED_WORLD_SIZE[0]), "--height", str(EMBEDDED_WORLD_SIZE[1]),
                       "--val-fraction", "0"]) == 0
    test = world / "drivelm" / "test.json"
    assert drive_mllm(["eval", "prepare", "--drivelm", str(world / "drivelm" / "v1_1_train_nus.json"),
                       "--out", str(test)]) == 0
    return {"student": scores_of(STUDENT, test, world / "student"),
            "blank": scores_of(STUDENT, test, world / "blank", blank=True),
            "teacher": scores_of(TEACHER, test, world / "teacher")}


def test_models_fit_the_size_budget():
    assert sum(path.stat().st_size for path in MODELS.rglob("*") if path.is_file()) <= MAX_MODELS_BYTES


def test_student_is_accurate_on_fresh_scenes(fresh_scores):
    assert fresh_scores["student"]["accuracy"] >= MIN_ACCURACY


def test_student_reads_the_cameras(fresh_scores):
    assert fresh_scores["student"]["accuracy"] - fresh_scores["blank"]["accuracy"] >= MIN_CAMERA_GAIN


def test_student_keeps_most_of_the_teacher_with_a_quarter_of_its_parameters(fresh_scores):
    student, teacher = fresh_scores["student"], fresh_scores["teacher"]
    assert parameter_count(STUDENT) <= MAX_PARAMETER_SHARE * parameter_count(TEACHER)
    assert student["accuracy"] >= MIN_SHARE_OF_TEACHER * teacher["accuracy"]
    assert student["judge_free_final"] >= MIN_SHARE_OF_TEACHER * teacher["judge_free_final"]


@pytest.mark.xfail(strict=True, reason="issue 6's match F1 goal is not met yet: the recipe's student lists 39.8-46.5 "
                   "on seeds 9001/9101/9201 (docs/STUDENT.md run 12)")
def test_student_locates_the_listed_objects(fresh_scores):
    assert fresh_scores["student"]["match_f1"] >= MIN_MATCH_F1


def test_student_locates_objects_from_the_views(fresh_scores):
    # What the listing does reach (9101: 46.5) and that it comes from the views (black views: 0.0).
    assert fresh_scores["student"]["match_f1"] >= fresh_scores["blank"]["match_f1"] + 25.0
