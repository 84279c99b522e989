"""Scene analysis logic: per-object question expansion, parsing into the ~/scene JSON (schema-checked)."""

import json

import jsonschema
import numpy as np

from drive_mllm_ros.answers import ScoredAnswer
from drive_mllm_ros.drivelm import Q_BEHAVIOR, Q_TRAJECTORY, format_options
from drive_mllm_ros.params import NodeParams
from drive_mllm_ros.paths import share_dir
from drive_mllm_ros.scene import SceneAnalyzer, StageQuestions

SCHEMA = json.loads((share_dir() / "config" / "scene.schema.json").read_text())


class ScriptedModel:
    """A stand-in model answering from a script, to test the analyzer's logic without weights."""

    model_id = "scripted"

    def __init__(self, script):
        self.script, self.calls = script, []

    def prepare(self, views):
        return len(views)

    def answer_scored(self, frame, questions, max_new_tokens=128):
        self.calls.append((questions, max_new_tokens))
        texts = [next((a for key, a in self.script.items() if key in q), "") for q in questions]
        return [ScoredAnswer(text, (0.5, 1.0) if text else ()) for text in texts]


def test_per_object_questions_follow_perception_and_everything_parses():
    options = format_options(["The ego vehicle is going straight. The ego vehicle is driving slowly.", "x", "y", "z"])
    questions = StageQuestions(
        {
            "perception": ["What are the important objects?"],
            "prediction": ["Is {object} moving?"],
            "behavior": [Q_BEHAVIOR.format(options=options)],
            "trajectory": [Q_TRAJECTORY],
        },
        {"perception": 50, "prediction": 5},
        max_objects=2,
    )
    model = ScriptedModel(
        {
            "important": "A car <c1,CAM_FRONT,800.0,450.0>, a bus <c2,CAM_BACK,10.5,20.0> and <c3,CAM_BACK,1.0,1.0>, bad <c4,CAM_X,1,2>.",
            "Is <c1": "Yes.",
            "Is <c2": "No.",
            "behavior": "A.",
            "trajectory": "[(2.0, 0.0), (4.1, 0.2), (oops)]",
        }
    )
    scene = SceneAnalyzer(model, questions, NodeParams().rig().names, "stitched").analyze(
        [np.zeros((4, 4, 3), np.uint8)] * 6, 1_500_000_000_123, "CAM_FRONT", missing=("CAM_BACK",)
    )
    assert len(model.calls) == 2 and model.calls[0][1] == [50, 96, 96] and model.calls[1][1] == [5, 5]
    assert model.calls[1][0] == ["Is <c1,CAM_FRONT,800.0,450.0> moving?", "Is <c2,CAM_BACK,10.5,20.0> moving?"]
    assert [o["id"] for o in scene.key_objects] == ["c1", "c2", "c3"] and scene.unparsed == 2
    assert scene.behavior == {
        "steering": "going straight",
        "speed": "driving slowly",
        "text": "The ego vehicle is going straight. The ego vehicle is driving slowly.",
    }
    assert scene.trajectory == [[2.0, 0.0], [4.1, 0.2]]
    assert scene.qa[0]["confidence"] == 0.75 and scene.qa[0]["min_prob"] == 0.5
    data = scene.to_dict()
    jsonschema.validate(data, SCHEMA)
    assert data["stamp"] == {"sec": 1500, "nanosec": 123} and data["partial"] and data["cameras"]["CAM_BACK"] == "blank"


def test_no_objects_means_no_per_object_questions():
    questions = StageQuestions({"perception": ["Objects?"], "prediction": ["Is {object} moving?"]})
    model = ScriptedModel({"Objects": "Nothing important."})
    scene = SceneAnalyzer(model, questions, ("CAM_FRONT",), "per_view").analyze([np.zeros((4, 4, 3), np.uint8)], 0, "f")
    assert len(model.calls) == 1 and scene.key_objects == [] and scene.behavior is None and scene.trajectory is None
    jsonschema.validate(scene.to_dict(), SCHEMA)


def test_key_frame_questions_are_found_by_nearest_stamp_and_asked_once():
    from drive_mllm_ros.scene import KeyFrameQuestions

    lookup = KeyFrameQuestions({1_000: [("planning", "Q1")], 2_000: [("behavior", "Q2")]}, tolerance_ns=100)
    assert lookup.lookup(1_050) == [("planning", "Q1")] and lookup.lookup(1_950) == [("behavior", "Q2")]
    assert lookup.lookup(1_500) == [] and lookup.lookup(0) == [] and len(lookup) == 2
    model = ScriptedModel({})
    questions = StageQuestions({"planning": ["Q1", "Q0"]})
    SceneAnalyzer(model, questions, ("CAM_FRONT",), "per_view").analyze(
        [np.zeros((4, 4, 3), np.uint8)], 1_000, "f", extra=[("planning", "Q1"), ("behavior", "Q2")]
    )
    assert model.calls[0][0] == ["Q1", "Q0", "Q2"]
