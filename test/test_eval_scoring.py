"""Hand-worked cases of the official scoring: final formula, language scorers, match, gating, accuracy, and the
same metrics per recording condition."""

from __future__ import annotations

import json
import math

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from drive_mllm_ros.evaluation.language import language_scores
from drive_mllm_ros.evaluation.match import decimal_points, has_malformed_coordinates, match_result
from drive_mllm_ros.evaluation.predictions import InputIssues
from drive_mllm_ros.evaluation.report import write_report
from drive_mllm_ros.evaluation.score import PAPER_TABLE, evaluate, final_score, gate, language_score
from drive_mllm_ros.evaluation.testset import TAG_ACCURACY, TAG_LANGUAGE, TAG_MATCH, GtItem, load_test
from drive_mllm_ros.evaluation.tokenizer import ptb_tokenize


def test_final_formula_reproduces_the_papers_final_column() -> None:
    complete = [row for row in PAPER_TABLE if row.bleu is not None]
    assert len(complete) == 6
    for row in complete:
        language = language_score(row.bleu, row.rouge_l, row.cider)
        assert final_score(row.accuracy, row.judge, language, row.match) == pytest.approx(row.final, abs=1e-4), row


def test_final_weights_on_a_hand_worked_row() -> None:
    # Lang = 4 x 0.6 / 12 + 0.9 / 3 + 3.0 / 30 = 0.6; final = 0.4 x 0.5 + 0.2 x 0.6 + 0.2 x 0.4 + 0.2 x 0.7
    assert language_score((0.6,) * 4, 0.9, 3.0) == pytest.approx(0.6)
    assert final_score(0.7, 50.0, 0.6, 40.0) == pytest.approx(0.54)


def test_language_scores_equal_the_pycocoevalcap_scorers_on_the_same_tokens() -> None:
    answers = ["There is a white sedan <c1,CAM_FRONT,812.4,466.0>.", "A truck, stopped.", "Nothing here"]
    references = ["There is a white sedan to the front <c1,CAM_FRONT,812.4,466.0>.", "A black truck is stopped.",
                  "A pedestrian crossing the road."]
    gts = {i: [ptb_tokenize(text)] for i, text in enumerate(references)}
    res = {i: [ptb_tokenize(text)] for i, text in enumerate(answers)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = [*bleu, Rouge().compute_score(gts, res)[0], Cider().compute_score(gts, res)[0]]
    assert list(language_scores(answers, references).values()) == pytest.approx(expected)


def test_language_scores_hand_worked() -> None:
    # "a b" vs "a b c d": LCS 2, precision 1, recall 0.5 -> ROUGE-L = 2.44 x 0.5 / (0.5 + 1.44);
    # BLEU-1: unigram precision 1, brevity penalty exp(1 - 4/2).
    scores = language_scores(["A b."], ["a B c d"])
    assert scores["ROUGE_L"] == pytest.approx(2.44 * 0.5 / 1.94)
    assert scores["Bleu_1"] == pytest.approx(math.exp(-1), rel=1e-6)


def test_match_reads_only_decimals_in_order_and_drops_an_odd_last_number() -> None:
    assert decimal_points("<c1,CAM_FRONT,812,466> at 3.5 m then <c2,CAM_BACK,10.5,20.0> 7.25") == [(3.5, 10.5),
                                                                                                   (20.0, 7.25)]
    assert decimal_points("<c1,CAM_FRONT,812,466>") == []
    _, f1 = match_result("<c1,CAM_FRONT,812,466>", "<c1,CAM_FRONT,812.4,466.0>")
    assert f1 == 0.0  # integers are invisible to the official scorer


def test_match_is_greedy_nearest_l1_with_a_strict_16_pixel_threshold() -> None:
    gt = "<c1,CAM_FRONT,95.0,100.0> <c2,CAM_FRONT,110.0,100.0>"
    # Greedy: (100, 100) takes the nearer (95, 100); (90, 100) is then 20 from (110, 100): one of two.
    matched, f1 = match_result("<c1,CAM_FRONT,100.0,100.0> <c2,CAM_FRONT,90.0,100.0>", gt)
    assert matched == [(95.0, 100.0)] and f1 == pytest.approx(0.5)
    assert match_result("<c1,CAM_FRONT,111.0,100.0>", "<c1,CAM_FRONT,95.0,100.0>")[1] == 0.0  # L1 = 16: no match
    assert match_result("<c1,CAM_FRONT,110.9,100.0>", "<c1,CAM_FRONT,95.0,100.0>")[1] > 0.6  # 15.9
    assert match_result("<c1,CAM_FRONT,110.0,110.0>", "<c1,CAM_FRONT,100.0,100.0>")[1] == 0.0  # L2 14.1, L1 20
    # Camera and c-id are ignored.
    assert match_result("<c9,CAM_BACK,100.0,100.0>", "<c1,CAM_FRONT,100.0,100.0>")[1] > 0.99


def test_a_perfect_three_point_item_scores_as_the_official_epsilon_terms_give() -> None:
    tags = "<c1,CAM_FRONT,1.5,2.5> <c2,CAM_FRONT,300.5,400.5> <c3,CAM_BACK,800.5,600.5>"
    assert match_result(tags, tags)[1] * 100 == pytest.approx(99.99999917, abs=1e-8)


def test_malformed_coordinates_are_detected() -> None:
    assert has_malformed_coordinates("<c1,CAM_FRONT,812.4>")
    assert has_malformed_coordinates("at 812.4")  # odd number of decimals
    assert not has_malformed_coordinates("<c1,CAM_FRONT,812.4,466.0> and <c2,CAM_BACK,1.5,2.5>")


def item(index: int, question: str, answer: str, tag: int, frame: str = "f", condition: str = "clear") -> GtItem:
    return GtItem(f"s_{frame}_{index}", "s", frame, index, question, answer, (tag,), condition)


C1, C2 = "<c1,CAM_FRONT,812.4,466.0>", "<c2,CAM_BACK,300.5,500.2>"
FRAME = [
    item(0, "What are the important objects?", f"Objects {C1} and {C2}.", TAG_LANGUAGE),
    item(1, f"What is the moving status of object {C1}? A. x B. y", "A", TAG_ACCURACY),
    item(2, f"Would {C2} be in the moving direction?", "Yes.", TAG_ACCURACY),
    item(3, "Predict the behavior of the ego vehicle.", "B", TAG_ACCURACY),
    item(4, "Which objects first?", f"Firstly {C1}.", TAG_MATCH),
]


def test_gating_keeps_questions_whose_points_the_first_answer_matched() -> None:
    answers = {"s_f_0": "Objects <c1,CAM_FRONT,810.0,460.0>.", "s_f_1": "A", "s_f_2": "Yes.", "s_f_3": "B",
               "s_f_4": f"Firstly {C1}."}
    scored = gate(FRAME, answers, InputIssues())
    assert [i.index for i, _ in scored.accuracy] == [1, 3]  # item 2 asks about c2, which was not matched
    assert scored.gated_out == 1 and [i.index for i, _ in scored.match] == [4]


def test_a_missing_first_answer_gates_out_every_question_with_points() -> None:
    issues = InputIssues()
    scores = evaluate(FRAME, {"s_f_3": "B"}, issues)
    assert scores["items"]["gated_out"] == 2
    assert scores["accuracy"] == 1.0  # item 3 has no points and is scored; items 1, 2 are skipped, not zero
    assert scores["match_f1"] == 0.0  # item 4 is scored, its prediction is missing


def test_accuracy_compares_whole_strings() -> None:
    frame = [item(0, "Q?", "B", TAG_ACCURACY), item(1, "Q?", "Yes.", TAG_ACCURACY), item(2, "Q?", "No.", TAG_ACCURACY)]
    scores = evaluate(frame, {"s_f_0": "B.", "s_f_1": "yes.", "s_f_2": "No."}, InputIssues())
    assert scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["final"] is None and scores["judge"] is None  # no judge: judge parts missing


def condition_frame(frame: str, condition: str) -> list[GtItem]:
    """Four items without points in their questions (so nothing is gated out)."""
    return [item(0, "What are the important objects?", "A white car to the front.", TAG_LANGUAGE, frame, condition),
            item(1, "Moving status? A. x B. y", "A", TAG_ACCURACY, frame, condition),
            item(2, "Would it cross?", "Yes.", TAG_ACCURACY, frame, condition),
            item(3, "Which objects first?", f"Firstly {C1}.", TAG_MATCH, frame, condition)]


CONDITION_ITEMS = condition_frame("c", "clear") + condition_frame("n", "night")
# Clear answered perfectly; at night the first choice, the description and the point are wrong.
CONDITION_ANSWERS = {**{f"s_c_{i}": it.answer for i, it in enumerate(CONDITION_ITEMS[:4])},
                     "s_n_0": "A red truck to the back.", "s_n_1": "B", "s_n_2": "Yes.",
                     "s_n_3": "Firstly <c1,CAM_FRONT,900.4,466.0>."}


def test_every_metric_is_reported_per_condition() -> None:
    scores = evaluate(CONDITION_ITEMS, CONDITION_ANSWERS, InputIssues())
    clear, night = scores["by_condition"]["clear"], scores["by_condition"]["night"]
    assert list(scores["by_condition"]) == ["clear", "night"]
    assert (scores["accuracy"], clear["accuracy"], night["accuracy"]) == (0.75, 1.0, 0.5)
    assert clear["match_f1"] == pytest.approx(100, abs=1e-5) and night["match_f1"] == 0.0
    assert scores["match_f1"] == pytest.approx(50, abs=1e-5)
    assert clear["language"]["Bleu_1"] == pytest.approx(1.0) and night["language"]["Bleu_1"] < 0.5
    assert clear["judge_free_final"] > scores["judge_free_final"] > night["judge_free_final"]
    assert clear["items"]["total"] == night["items"]["total"] == 4 and scores["items"]["total"] == 8
    # One code path: a condition's scores are exactly the scores of its frames alone.
    for condition, items in (("clear", CONDITION_ITEMS[:4]), ("night", CONDITION_ITEMS[4:])):
        alone = evaluate(items, CONDITION_ANSWERS, InputIssues())
        assert list(alone["by_condition"]) == [condition]
        assert {**alone, "by_condition": None} == {**scores["by_condition"][condition], "by_condition": None}


def test_frames_without_a_condition_count_as_clear_and_the_report_has_a_row_per_condition(tmp_path) -> None:
    frames = {}
    for frame, condition in (("a", None), ("b", "night")):
        qa = {"perception": [], "prediction": [{"Q": "Would it cross?", "A": "Yes.", "tag": [TAG_ACCURACY]}],
              "planning": [], "behavior": []}
        frames[frame] = {"QA": qa, "image_paths": {}, **({"condition": condition} if condition else {})}
    test = tmp_path / "test.json"
    test.write_text(json.dumps({"s": {"key_frames": frames}}))
    assert [it.condition for it in load_test(test)] == ["clear", "night"]
    scores = evaluate(load_test(test), {"s_a_0": "Yes.", "s_b_0": "No."}, InputIssues())
    write_report(scores, InputIssues(), tmp_path / "out", "student", "429K")
    assert json.loads((tmp_path / "out" / "scores.json").read_text())["by_condition"]["night"]["accuracy"] == 0.0
    report = (tmp_path / "out" / "report.md").read_text()
    for row in ("| **student** | 429K | 0.5000 |", "| all | 2 | 0.5000 |", "| clear | 1 | 1.0000 |",
                "| night | 1 | 0.0000 |"):
        assert row in report


def test_a_condition_that_is_not_a_string_is_refused(tmp_path) -> None:
    test = tmp_path / "test.json"
    test.write_text(json.dumps({"s": {"key_frames": {"a": {"QA": {}, "condition": 3}}}}))
    with pytest.raises(ValueError, match="frame 'a': expected \\['condition'\\] to be a non-empty string"):
        load_test(test)
