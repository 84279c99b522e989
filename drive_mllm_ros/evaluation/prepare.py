"""DriveLM v1.1 JSON -> the challenge test format, selecting and tagging QA as the official scripts do.

Per frame (DriveLM challenge/extract_data.py, then convert_data.py):
- perception: the first QA whose answer names every key object's class (language), then the first
  moving-status QA (accuracy, made a four-option multiple choice);
- prediction: the first QA whose answer holds every key object's tag (match), then the first QA whose
  answer contains "yes" or "no" as a substring (accuracy);
- planning: the first "What actions could the ego vehicle take", "lead to a collision" and "safe actions"
  QA (judge);
- behavior: every QA (accuracy, made a four-option multiple choice).
The official scripts draw distractors unseeded; here a seeded generator makes the file reproducible.
Selected QA are copied, so one QA picked twice keeps both tags (the official script mutates it in place).
A frame's recording condition and rig (`testset.FRAME_METADATA`) are kept, for per-condition scores.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from ..drivelm import (
    BEHAVIOR_CLASSES,
    MOVING_STATUS_QUESTION,
    OPTION_LETTERS,
    OPTIONS_PROMPT,
    QA_STAGES,
    behavior_sentence,
    format_options,
)
from .testset import TAG_ACCURACY, TAG_JUDGE, TAG_LANGUAGE, TAG_MATCH, frame_metadata, key_frames, load_json

# Choices of the official convert_data.py (a superset of drivelm.MOVING_STATUS_OPTIONS).
MOVING_STATUS_CHOICES = ("Going ahead.", "Turn right.", "Turn left.", "Stopped.", "Back up.", "Reverse parking.")
BEHAVIOR_CHOICES = tuple(behavior_sentence(steering, speed) for steering, speed in BEHAVIOR_CLASSES)
JUDGED_PLANNING_QUESTIONS = ("what actions could the ego vehicle take", "lead to a collision", "safe actions")
LISTED_OPTION = re.compile(r"([A-D])\.\s(.+?)(?=\s[A-D]\.\s|$)")


def first(items: list[dict], predicate: Callable[[dict], bool]) -> dict | None:
    return next((qa for qa in items if predicate(qa)), None)


def present(*items: dict | None) -> list[dict]:
    return [item for item in items if item]


def tagged(qa: dict, tag: int) -> dict:
    return {**qa, "tag": [tag]}


def multiple_choice(qa: dict, choices: tuple[str, ...], rng: random.Random, where: str) -> dict:
    """A free-text answer -> four options (three random distractors) and the answer's letter."""
    answer = qa["A"].strip()
    if OPTIONS_PROMPT.strip() in qa["Q"]:  # already a choice question (synthetic data)
        options = {text: letter for letter, text in LISTED_OPTION.findall(qa["Q"])}
        letter = options.get(answer, answer.rstrip("."))
        if letter not in OPTION_LETTERS:
            raise ValueError(f"{where}: expected the answer to be a letter or option of '{qa['Q']}', got '{answer}'")
        # A letter answer stays as the data writes it ("A."), so what a model is trained on is what is scored.
        return {**qa, "A": answer if answer.rstrip(".") == letter else letter}
    if answer not in choices:
        raise ValueError(f"{where}: expected an answer among the official choices {list(choices)}, got '{answer}'")
    options = rng.sample([choice for choice in choices if choice != answer], 3) + [answer]
    rng.shuffle(options)
    return {**qa, "Q": qa["Q"] + OPTIONS_PROMPT + format_options(options), "A": OPTION_LETTERS[options.index(answer)]}


def judged_planning(planning: list[dict]) -> list[dict]:
    """The first QA of each judged planning question kind, in file order (a QA may match several kinds)."""
    selected, seen = [], set()
    for qa in planning:
        for phrase in JUDGED_PLANNING_QUESTIONS:
            if phrase not in seen and phrase in qa["Q"].lower():
                selected.append(tagged(qa, TAG_JUDGE))
                seen.add(phrase)
    return selected


def object_classes_and_tags(frame: dict, where: str) -> tuple[list[str], list[str]]:
    infos = frame.get("key_object_infos") or {}
    try:
        classes = [info["Visual_description"].split(".")[0].lower() for info in infos.values()]
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{where}: expected key_object_infos entries with a 'Visual_description' string") from None
    return classes, [tag.lower() for tag in infos]


def frame_test_qa(frame: dict, rng: random.Random, where: str) -> dict[str, list[dict]]:
    """The tagged QA of one frame, per stage."""
    qa = frame.get("QA")
    if not isinstance(qa, dict) or not all(isinstance(qa.get(stage, []), list) for stage in QA_STAGES):
        raise ValueError(f"{where}: expected 'QA' with the lists {list(QA_STAGES)}")
    perception, prediction, planning, behavior = (qa.get(stage, []) for stage in QA_STAGES)
    for item in perception + prediction + planning + behavior:
        if not (isinstance(item, dict) and isinstance(item.get("Q"), str) and isinstance(item.get("A"), str)):
            raise ValueError(f"{where}: expected every QA item to be {{Q: str, A: str, ...}}, got {item!r:.80}")
    classes, tags = object_classes_and_tags(frame, where)
    language = first(perception, lambda q: all(name in q["A"].lower() for name in classes))
    # DriveLM asks moving status in perception; the synthetic world asks it in prediction.
    moving = first(perception + prediction, lambda q: MOVING_STATUS_QUESTION in q["Q"].lower())
    match = first(prediction, lambda q: all(tag in q["A"].lower() for tag in tags))
    yes_no = first(prediction, lambda q: "yes" in q["A"].lower() or "no" in q["A"].lower())
    return {
        "perception": present(language and tagged(language, TAG_LANGUAGE),
                              moving and multiple_choice(tagged(moving, TAG_ACCURACY), MOVING_STATUS_CHOICES, rng, where)),
        "prediction": present(match and tagged(match, TAG_MATCH), yes_no and tagged(yes_no, TAG_ACCURACY)),
        "planning": judged_planning(planning),
        "behavior": [multiple_choice(tagged(q, TAG_ACCURACY), BEHAVIOR_CHOICES, rng, where) for q in behavior],
    }


def prepare(drivelm: dict, seed: int = 0, what: str = "DriveLM JSON") -> dict:
    """DriveLM v1.1 data -> test data with the same scenes and frames, QA tagged, image paths kept."""
    rng = random.Random(seed)
    test: dict = {}
    for scene, frame, frame_data in key_frames(drivelm, what):
        where = f"{what}, scene '{scene}' frame '{frame}'"
        if not isinstance(frame_data, dict):
            raise ValueError(f"{where}: expected an object with 'QA', 'key_object_infos' and 'image_paths'")
        frames = test.setdefault(scene, {"key_frames": {}})["key_frames"]
        frames[frame] = {"QA": frame_test_qa(frame_data, rng, where), "image_paths": frame_data.get("image_paths", {}),
                         **frame_metadata(frame_data, where)}
    return test


def prepare_file(drivelm_path: str | Path, out_path: str | Path, seed: int = 0) -> dict:
    test = prepare(load_json(drivelm_path, "DriveLM JSON"), seed, f"DriveLM JSON '{drivelm_path}'")
    Path(out_path).write_text(json.dumps(test, indent=2, ensure_ascii=False), encoding="utf-8")
    return test
