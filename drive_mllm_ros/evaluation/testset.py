"""The challenge's test format: `{scene: {key_frames: {frame: {QA: {stage: [{Q, A, tag}]}, image_paths}}}}`.

Ids are `{scene}_{frame}_{i}` with `i` counting the frame's QA in the order perception, prediction,
planning, behavior, whatever the key order in the file (as the official evaluation.py does).
A frame may say what it was recorded in (`FRAME_METADATA`: `"condition": "night"`, `"rig": "alt"`, written by
`drive-mllm world`); scores are also reported per condition, and a frame without one counts as clear.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..drivelm import QA_STAGES, STAGES

# Tags of the official scorer: which metric an item feeds.
TAG_ACCURACY, TAG_JUDGE, TAG_LANGUAGE, TAG_MATCH = 0, 1, 2, 3
# Tokens per answer when a model answers a test set: the longest DriveLM answers (object listings, four tagged
# objects with reasons) take up to ~170 tokens of the embedded student's tokenizer (one token per digit).
ANSWER_BUDGET = 256
FRAME_METADATA = ("condition", "rig")  # optional per-frame strings, kept by 'eval prepare'
DEFAULT_CONDITION = "clear"
# nuScenes sample file names end in `__CAM_FRONT__{timestamp_us}.jpg`.
CAM_FRONT_STAMP = re.compile(r"__CAM_FRONT__(\d+)\.\w+$")


@dataclass(frozen=True)
class GtItem:
    id: str
    scene: str
    frame: str
    index: int  # position in the frame: 0 is the frame's first QA, which sets the graph
    question: str
    answer: str
    tags: tuple[int, ...]
    condition: str = DEFAULT_CONDITION  # the frame's recording condition


def load_json(path: str | Path, what: str) -> object:
    """JSON from a file, with an error that names the input and what was expected."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8", errors="surrogateescape"))
    except OSError as error:
        raise ValueError(f"{what} '{path}': cannot read ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} '{path}': expected JSON, {error}") from None


def frame_qa(frame: dict, where: str) -> list[dict]:
    """The frame's QA in scoring order."""
    qa = frame.get("QA") if isinstance(frame, dict) else None
    if not isinstance(qa, dict):
        raise ValueError(f"{where}: expected an object with 'QA' holding the lists {list(QA_STAGES)}")
    items = []
    for stage in QA_STAGES:
        stage_items = qa.get(stage, [])
        if not isinstance(stage_items, list):
            raise ValueError(f"{where}: QA.{stage} must be a list, got {type(stage_items).__name__}")
        items += stage_items
    return items


def frame_metadata(frame: dict, where: str) -> dict[str, str]:
    """The frame's `FRAME_METADATA` entries that are present."""
    metadata = {key: frame[key] for key in FRAME_METADATA if key in frame}
    if bad := [key for key, value in metadata.items() if not isinstance(value, str) or not value]:
        raise ValueError(f"{where}: expected {bad} to be a non-empty string such as 'night'")
    return metadata


def key_frames(data: object, what: str) -> list[tuple[str, str, dict]]:
    """(scene, frame, frame data) for every key frame of a DriveLM-shaped file."""
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected an object scene_token -> {{key_frames: ...}}, got {type(data).__name__}")
    frames = []
    for scene, scene_data in data.items():
        frames_data = scene_data.get("key_frames") if isinstance(scene_data, dict) else None
        if not isinstance(frames_data, dict):
            raise ValueError(f"{what}: scene '{scene}' has no 'key_frames' object")
        frames += [(scene, frame, frame_data) for frame, frame_data in frames_data.items()]
    return frames


def load_test(path: str | Path) -> list[GtItem]:
    """Every tagged GT item of a test file, in scoring order."""
    what = f"GT test file '{path}'"
    items = []
    for scene, frame, frame_data in key_frames(load_json(path, "GT test file"), what):
        where = f"{what}, scene '{scene}' frame '{frame}'"
        condition = frame_metadata(frame_data, where).get("condition", DEFAULT_CONDITION)
        for index, qa in enumerate(frame_qa(frame_data, where)):
            if not (
                isinstance(qa, dict)
                and isinstance(qa.get("Q"), str)
                and isinstance(qa.get("A"), str)
                and isinstance(qa.get("tag"), list)
            ):
                raise ValueError(f"{where}, QA {index}: expected {{Q: str, A: str, tag: [int]}} (run 'eval prepare')")
            items.append(GtItem(f"{scene}_{frame}_{index}", scene, frame, index, qa["Q"], qa["A"], tuple(qa["tag"]),
                                condition))
    return items


def cam_front_stamp(frame_data: dict, where: str) -> int:
    """A key frame's CAM_FRONT timestamp in microseconds, read from its image path."""
    image = (frame_data.get("image_paths") or {}).get("CAM_FRONT", "")
    found = CAM_FRONT_STAMP.search(image)
    if found is None:
        raise ValueError(
            f"{where}: expected image_paths.CAM_FRONT like '..._CAM_FRONT__<timestamp_us>.jpg', got '{image}'"
        )
    return int(found.group(1))


def cam_front_stamps(path: str | Path) -> dict[tuple[str, str], int]:
    """(scene, frame) -> CAM_FRONT timestamp in microseconds, read from the frames' image paths."""
    what = f"GT test file '{path}'"
    return {
        (scene, frame): cam_front_stamp(frame_data, f"{what}, scene '{scene}' frame '{frame}'")
        for scene, frame, frame_data in key_frames(load_json(path, "GT test file"), what)
    }


def questions_by_stamp(path: str | Path) -> dict[int, list[tuple[str, str]]]:
    """CAM_FRONT timestamp (ns) -> the key frame's (stage, question) pairs, from a DriveLM or test file.

    Lets the node answer exactly the questions of a test set (the extra trajectory stage included) when
    it sees that frame in a replayed bag, so that `eval score --from-bag` scores every question.
    """
    what = f"question file '{path}'"
    questions = {}
    for scene, frame, frame_data in key_frames(load_json(path, "question file"), what):
        where = f"{what}, scene '{scene}' frame '{frame}'"
        qa = frame_data.get("QA") or {}
        pairs = [
            (stage, item["Q"])
            for stage in STAGES
            for item in qa.get(stage, [])
            if isinstance(item, dict) and isinstance(item.get("Q"), str)
        ]
        questions[cam_front_stamp(frame_data, where) * 1000] = pairs
    return questions
