"""End to end: prepare a synthetic DriveLM file, score predictions (file, bag, judge) through the CLI."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from drive_mllm_ros import drivelm
from drive_mllm_ros.evaluation import cli
from drive_mllm_ros.evaluation.prepare import BEHAVIOR_CHOICES, MOVING_STATUS_CHOICES, OPTIONS_PROMPT, prepare
from drive_mllm_ros.evaluation.testset import load_test

CAR = "<c1,CAM_FRONT,812.4,466.0>"
SUV = "<c2,CAM_BACK,300.5,500.2>"
FRAME_STAMPS_US = {"frame_a": 1537291010612404, "frame_b": 1537291011112404}


def frame(stamp_us: int, behaviour: str) -> dict:
    """One key frame in DriveLM v1.1 shape, stage keys deliberately out of scoring order."""
    return {
        "key_object_infos": {
            CAR: {"Category": "Vehicle", "Status": "Moving", "Visual_description": "White sedan.", "2d_bbox": []},
            SUV: {"Category": "Vehicle", "Status": None, "Visual_description": "Black SUV.", "2d_bbox": []},
        },
        "QA": {
            "behavior": [{"Q": drivelm.Q_BEHAVIOR_OPEN, "A": behaviour}],
            "planning": [
                {"Q": "What is the traffic signal that the ego vehicle should pay attention to?", "A": "None."},
                {"Q": drivelm.Q_SAFE_ACTIONS, "A": "Keep going at the same speed, decelerate gradually."},
                {"Q": drivelm.Q_ACTION_FOR_OBJECT.format(object=SUV), "A": "The action is to remain stationary."},
            ],
            "perception": [
                {"Q": f"What is the moving status of object {CAR}?", "A": "Going ahead."},
                {"Q": drivelm.Q_IMPORTANT_OBJECTS,
                 "A": f"There is a white sedan to the front of the ego vehicle and a black SUV to the back. "
                      f"The IDs of these objects are {CAR} and {SUV}."},
            ],
            "prediction": [
                {"Q": drivelm.Q_FUTURE_CONFLICT.format(object=CAR), "A": "Yes."},
                {"Q": drivelm.Q_OBJECTS_IN_PATH, "A": f"Firstly notice {CAR}. Secondly notice {SUV}."},
            ],
        },
        "image_paths": {"CAM_FRONT": f"../nuscenes/samples/CAM_FRONT/n008-2018-09-18-13-10-39-0400__CAM_FRONT__"
                                     f"{stamp_us}.jpg"},
    }


def drivelm_data() -> dict:
    behaviours = ("The ego vehicle is going straight. The ego vehicle is driving slowly.",
                  "The ego vehicle is steering to the left. The ego vehicle is driving fast.")
    return {"scene_1": {"scene_description": "", "key_frames": {
        name: frame(stamp, behaviour) for (name, stamp), behaviour in zip(FRAME_STAMPS_US.items(), behaviours,
                                                                          strict=True)}}}


@pytest.fixture()
def test_file(tmp_path: Path) -> Path:
    source, out = tmp_path / "drivelm.json", tmp_path / "test.json"
    source.write_text(json.dumps(drivelm_data()))
    assert cli.main(["prepare", "--drivelm", str(source), "--out", str(out)]) == 0
    return out


def perfect_predictions(test_file: Path) -> list[dict]:
    return [{"id": item.id, "question": item.question, "answer": item.answer} for item in load_test(test_file)]


def score(tmp_path: Path, test_file: Path, predictions: list | str, *extra: str) -> tuple[int, dict]:
    pred = tmp_path / "pred.json"
    pred.write_text(predictions if isinstance(predictions, str) else json.dumps(predictions))
    out = tmp_path / "out"
    status = cli.main(["score", "--gt", str(test_file), "--pred", str(pred), "--out", str(out), *extra])
    return status, json.loads((out / "scores.json").read_text()) if (out / "scores.json").exists() else {}


def test_prepare_tags_and_numbers_qa_in_the_official_stage_order(test_file: Path) -> None:
    items = load_test(test_file)
    assert [item.id for item in items[:7]] == [f"scene_1_frame_a_{i}" for i in range(7)]
    assert [item.tags for item in items[:7]] == [(2,), (0,), (3,), (0,), (1,), (1,), (0,)]
    assert items[0].question == drivelm.Q_IMPORTANT_OBJECTS and items[3].answer == "Yes."
    assert items[2].answer.startswith("Firstly notice")


def options_of(question: str) -> dict[str, str]:
    listed = question.split(OPTIONS_PROMPT)[1]
    parts = [part.strip() for part in listed.replace(" B. ", "|").replace(" C. ", "|").replace(" D. ", "|").split("|")]
    return dict(zip("ABCD", [parts[0].removeprefix("A. "), *parts[1:]], strict=True))


def test_prepare_builds_four_option_choices_with_the_answer_letter(test_file: Path) -> None:
    items = {item.id: item for item in load_test(test_file)}
    moving, behaviour = items["scene_1_frame_a_1"], items["scene_1_frame_b_6"]
    for qa, choices, answer in ((moving, MOVING_STATUS_CHOICES, "Going ahead."),
                                (behaviour, BEHAVIOR_CHOICES, "The ego vehicle is steering to the left. "
                                                              "The ego vehicle is driving fast.")):
        options = options_of(qa.question)
        assert len(set(options.values())) == 4 and set(options.values()) <= set(choices)
        assert options[qa.answer] == answer
    assert prepare(drivelm_data(), seed=3) == prepare(drivelm_data(), seed=3)


def test_prepare_keeps_an_existing_choice_question_and_letters_its_answer() -> None:
    data = drivelm_data()
    options = drivelm.format_options(drivelm.MOVING_STATUS_OPTIONS)
    data["scene_1"]["key_frames"]["frame_a"]["QA"]["perception"][0] = {
        "Q": drivelm.Q_MOVING_STATUS.format(object=CAR, options=options), "A": "Turn left."}
    qa = prepare(data)["scene_1"]["key_frames"]["frame_a"]["QA"]["perception"][1]
    assert qa["A"] == "B" and qa["Q"].count(OPTIONS_PROMPT.strip()) == 1


def test_prepare_keeps_a_letter_answer_as_written_and_finds_moving_status_in_prediction() -> None:
    """The synthetic world asks moving status in prediction and answers "B.": the scored answer is what it trains on."""
    data = drivelm_data()
    options = drivelm.format_options(drivelm.MOVING_STATUS_OPTIONS)
    frame = data["scene_1"]["key_frames"]["frame_a"]["QA"]
    frame["perception"] = [qa for qa in frame["perception"] if "moving status" not in qa["Q"]]
    frame["prediction"].insert(0, {"Q": drivelm.Q_MOVING_STATUS.format(object=CAR, options=options), "A": "B."})
    moving = [qa for qa in prepare(data)["scene_1"]["key_frames"]["frame_a"]["QA"]["perception"]
              if "moving status" in qa["Q"]]
    assert len(moving) == 1 and moving[0]["A"] == "B."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "expected JSON"),
        ('{"scene_1": {"frames": {}}}', "has no 'key_frames'"),
        (json.dumps({"scene_1": {"key_frames": {"f": {"QA": {"perception": [{"Q": "What is the moving status of "
                                                                                "object x?", "A": "Flying."}]}}}}}),
         "official choices"),
    ],
)
def test_prepare_rejects_bad_input_naming_it(tmp_path: Path, capsys, content: str, message: str) -> None:
    source = tmp_path / "bad.json"
    source.write_text(content)
    assert cli.main(["prepare", "--drivelm", str(source), "--out", str(tmp_path / "t.json")]) == 2
    error = capsys.readouterr().err
    assert str(source) in error and message in error


def test_score_of_perfect_predictions_writes_all_reports(tmp_path: Path, test_file: Path) -> None:
    status, scores = score(tmp_path, test_file, perfect_predictions(test_file))
    assert status == 0
    assert scores["accuracy"] == 1.0 and scores["match_f1"] == pytest.approx(100.0, abs=1e-5)
    assert scores["language"]["Bleu_4"] == pytest.approx(1.0) and scores["language"]["ROUGE_L"] == 1.0
    assert scores["judge"] is None and scores["final"] is None
    assert scores["judge_free_final"] == pytest.approx(0.2 * scores["language_score"] + 0.2 * 0.5 + 0.2 * 1.0)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| Mini-InternVL-DA-1B | 1B | 0.7007 |" in report and "| **ours** |" in report
    assert (tmp_path / "out" / "subscores.png").read_bytes().startswith(b"\x89PNG")


def test_score_counts_bad_predictions_and_keeps_scoring(tmp_path: Path, test_file: Path) -> None:
    predictions = perfect_predictions(test_file)
    by_id = {p["id"]: p for p in predictions}
    by_id["scene_1_frame_a_1"]["answer"] = "Z"  # overwritten by the duplicate below: last wins
    by_id["scene_1_frame_a_6"]["answer"] = ""
    by_id["scene_1_frame_b_2"]["answer"] = "Firstly notice <c1,CAM_FRONT,812.4>."
    del by_id["scene_1_frame_b_3"]
    entries = [*by_id.values(), {"id": "scene_1_frame_a_1", "answer": items_answer(test_file, "scene_1_frame_a_1")},
               {"id": "scene_9_frame_x_0", "answer": "?"}, {"id": 5}]
    text = json.dumps(entries).replace('"Yes."', '"Yes.\\udc80"', 1)  # one answer with an undecodable byte
    status, scores = score(tmp_path, test_file, text)
    counts = json.loads((tmp_path / "out" / "scores.json").read_text())["input_issues"]["counts"]
    assert status == 0
    assert counts == {"duplicate_id": 1, "unknown_id": 1, "malformed_entry": 1, "missing_prediction": 1,
                      "empty_answer": 1, "non_utf8_answer": 1, "malformed_coordinates": 1}
    # Accuracy items: 6; wrong: the empty behaviour answer, the missing yes/no, the "Yes.\ufffd" one.
    assert scores["accuracy"] == pytest.approx(3 / 6)


def items_answer(test_file: Path, item_id: str) -> str:
    return next(item.answer for item in load_test(test_file) if item.id == item_id)


def test_score_decodes_a_non_utf8_file_and_counts_it(tmp_path: Path, test_file: Path) -> None:
    pred = tmp_path / "raw.json"
    entries = perfect_predictions(test_file)
    entries[3]["answer"] = "YES_MARK"
    pred.write_bytes(json.dumps(entries).encode().replace(b"YES_MARK", b"Yes.\xff"))
    out = tmp_path / "raw_out"
    assert cli.main(["score", "--gt", str(test_file), "--pred", str(pred), "--out", str(out)]) == 0
    document = json.loads((out / "scores.json").read_text())
    assert document["input_issues"]["counts"] == {"non_utf8_answer": 1}


def test_score_rejects_a_prediction_file_that_is_not_a_list(tmp_path: Path, test_file: Path, capsys) -> None:
    status, _ = score(tmp_path, test_file, '{"id": "x"}')
    assert status == 2 and "expected a JSON list of {id, question, answer}" in capsys.readouterr().err


class FakeJudge(BaseHTTPRequestHandler):
    """OpenAI-compatible chat endpoint: rates 80, or replies without a number for the answer 'unsure'."""

    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append({"path": self.path, **body})
        content = "I cannot say" if body["messages"][1]["content"].endswith("This is my answer: unsure") else "80"
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}],
                            "usage": {"total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def judge_url():
    server = HTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeJudge.requests.clear()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_judge_scores_open_and_match_items_through_the_endpoint(tmp_path: Path, test_file: Path,
                                                                judge_url: str) -> None:
    predictions = perfect_predictions(test_file)
    predictions[4]["answer"] = "unsure"  # scene_1_frame_a_4, a judged planning item: no number in the reply
    status, scores = score(tmp_path, test_file, predictions, "--judge-url", judge_url, "--judge-model", "judge-m")
    assert status == 0
    assert scores["judge"] == pytest.approx((0 + 80 * 3) / 4)
    assert scores["match_judge"] == 80.0 and scores["match"] == pytest.approx((scores["match_f1"] + 80) / 2)
    expected = 0.4 * scores["judge"] / 100 + 0.2 * scores["language_score"] + 0.2 * scores["match"] / 100 + 0.2
    assert scores["final"] == pytest.approx(expected)
    assert len(FakeJudge.requests) == 6
    request = FakeJudge.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["model"] == "judge-m"
    assert request["messages"][0]["content"] == "an evaluator who rates my answer based on the correct answer"
    assert "This is the correct answer: " in request["messages"][1]["content"]


def test_an_unreachable_judge_is_a_clear_error_and_other_metrics_are_reported(tmp_path: Path, test_file: Path,
                                                                             capsys) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, scores = score(tmp_path, test_file, perfect_predictions(test_file), "--judge-url",
                           f"http://127.0.0.1:{port}/v1", "--judge-model", "m", "--judge-timeout-s", "2")
    assert status == 1
    assert "unreachable" in scores["judge_error"] and "unreachable" in capsys.readouterr().err
    assert scores["accuracy"] == 1.0 and scores["language"] is not None and scores["judge_free_final"] is not None
    assert "**Judge error**" in (tmp_path / "out" / "report.md").read_text()


def write_scene_bag(path: Path, messages: list[tuple[int, str]]) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    string = typestore.types["std_msgs/msg/String"]
    with Writer(path, version=9) as writer:
        connection = writer.add_connection("/drive_mllm/scene", "std_msgs/msg/String", typestore=typestore)
        for time_ns, data in messages:
            writer.write(connection, time_ns, typestore.serialize_cdr(string(data=data), "std_msgs/msg/String"))


def scene_json(stamp_us: int, qa: list[tuple[str, str]]) -> str:
    stamp = {"sec": stamp_us // 1_000_000, "nanosec": stamp_us % 1_000_000 * 1000}
    return json.dumps({"stamp": stamp, "qa": [{"stage": "perception", "question": q, "answer": a} for q, a in qa]})


def test_score_from_bag_maps_scene_messages_to_key_frames(tmp_path: Path, test_file: Path) -> None:
    items = load_test(test_file)
    frame_a = [(f"  {item.question}  ".replace(" ", "  ", 1), item.answer) for item in items if item.frame == "frame_a"]
    frame_b = [(item.question, item.answer) for item in items if item.frame == "frame_b"][:3]
    stamp_a, stamp_b = FRAME_STAMPS_US["frame_a"] + 10_000, FRAME_STAMPS_US["frame_b"] - 20_000
    bag = tmp_path / "bag"
    write_scene_bag(bag, [(1, scene_json(stamp_a, frame_a)), (2, scene_json(stamp_b, frame_b)),
                          (3, scene_json(FRAME_STAMPS_US["frame_b"] + 100_000, frame_b)), (4, "{broken")])
    out = tmp_path / "bag_out"
    assert cli.main(["score", "--gt", str(test_file), "--from-bag", str(bag), "--out", str(out)]) == 0
    document = json.loads((out / "scores.json").read_text())
    assert document["input_issues"]["counts"] == {"bad_scene_message": 1, "scene_message_without_key_frame": 1,
                                                  "missing_prediction": 4}
    assert document["items"]["accuracy"] == 6 and document["accuracy"] == pytest.approx(4 / 6)


def test_score_from_bag_names_a_missing_topic(tmp_path: Path, test_file: Path, capsys) -> None:
    bag = tmp_path / "bag"
    write_scene_bag(bag, [])
    out = tmp_path / "o"
    assert cli.main(["score", "--gt", str(test_file), "--from-bag", str(bag), "--scene-topic", "/x", "--out",
                     str(out)]) == 2
    assert "no topic '/x'" in capsys.readouterr().err
