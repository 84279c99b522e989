"""Predictions from a bag run: the node's `~/scene` messages (std_msgs/String JSON, config/scene.schema.json).

A message belongs to the key frame whose CAM_FRONT timestamp (from the GT test file's image paths; bag stamps
equal nuScenes timestamps) is nearest to its `stamp`, within a tolerance. Each GT QA of that frame takes the
node's answer to the same question text (whitespace normalised); unanswered GT questions stay missing.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

from .predictions import InputIssues
from .testset import GtItem

DEFAULT_SCENE_TOPIC = "/drive_mllm/scene"
DEFAULT_TOLERANCE_MS = 25.0


def normalized(question: str) -> str:
    return " ".join(question.split())


def scene_messages(bag: str | Path, topic: str) -> list[str]:
    """The JSON strings published on the topic, in bag order."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    try:
        reader = AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_KILTED))
        reader.open()
    except Exception as error:  # rosbags raises several types for unreadable bags
        raise ValueError(f"bag '{bag}': expected a readable ROS 2 bag folder or file ({error})") from None
    try:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            topics = sorted({c.topic for c in reader.connections})
            raise ValueError(f"bag '{bag}': no topic '{topic}' (topics: {topics})")
        return [reader.deserialize(raw, c.msgtype).data for c, _, raw in reader.messages(connections=connections)]
    finally:
        reader.close()


def stamp_us(message: dict) -> int:
    stamp = message["stamp"]
    return int(stamp["sec"]) * 1_000_000 + round(int(stamp["nanosec"]) / 1000)


def nearest_frame(stamp: int, frame_stamps: list[tuple[int, tuple[str, str]]], tolerance_us: float
                  ) -> tuple[str, str] | None:
    """The (scene, frame) whose CAM_FRONT stamp is nearest, if within the tolerance; frame_stamps sorted."""
    position = bisect.bisect_left(frame_stamps, (stamp,))
    candidates = frame_stamps[max(position - 1, 0):position + 1]
    best = min(candidates, key=lambda entry: abs(entry[0] - stamp), default=None)
    return best[1] if best is not None and abs(best[0] - stamp) <= tolerance_us else None


def predictions_from_messages(messages: list[str], items: list[GtItem], stamps: dict[tuple[str, str], int],
                              issues: InputIssues, tolerance_ms: float = DEFAULT_TOLERANCE_MS) -> list[dict]:
    """Challenge-format predictions `{id, question, answer}`; a later message for the same frame wins."""
    frame_stamps = sorted((stamp, key) for key, stamp in stamps.items())
    questions: dict[tuple[str, str], dict[str, list[GtItem]]] = {}
    for item in items:
        questions.setdefault((item.scene, item.frame), {}).setdefault(normalized(item.question), []).append(item)
    predictions = []
    for number, text in enumerate(messages):
        try:
            message = json.loads(text)
            stamp, qa = stamp_us(message), message["qa"]
            asked = [(normalized(entry["question"]), entry["answer"]) for entry in qa]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            issues.add("bad_scene_message", f"#{number}")
            continue
        frame = nearest_frame(stamp, frame_stamps, tolerance_ms * 1000)
        if frame is None:
            issues.add("scene_message_without_key_frame", f"#{number} stamp {stamp} us")
            continue
        for question, answer in asked:
            for item in questions.get(frame, {}).get(question, []):
                predictions.append({"id": item.id, "question": item.question, "answer": answer})
    return predictions
