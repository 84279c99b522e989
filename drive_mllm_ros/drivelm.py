"""DriveLM-nuScenes vocabulary: stages, object tags, the standard questions and answer phrasings.

One home for the wording that the data generator writes, the node asks, training learns and
evaluation scores, so that all of them agree. Pure Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# QA stages in the order the official scorer numbers them; "trajectory" is our extra stage.
QA_STAGES: tuple[str, ...] = ("perception", "prediction", "planning", "behavior")
STAGES: tuple[str, ...] = (*QA_STAGES, "trajectory")

# `<c1,CAM_FRONT,812.4,466.0>`: object id, camera, pixel centre (or 0..1000 mosaic coordinates).
NUMBER = r"-?\d+(?:\.\d+)?"
TAG_PATTERN = re.compile(rf"<\s*(c\d+)\s*,\s*([A-Za-z_]+)\s*,\s*({NUMBER})\s*,\s*({NUMBER})\s*>")
# Anything that looks like a tag attempt, to count malformed ones.
TAG_ATTEMPT = re.compile(r"<\s*c\d+\s*,[^<>]*>")


@dataclass(frozen=True)
class ObjectTag:
    object_id: str  # "c1"
    camera: str
    x: float
    y: float

    def __str__(self) -> str:
        return format_tag(self.object_id, self.camera, self.x, self.y)


def format_tag(object_id: str, camera: str, x: float, y: float) -> str:
    return f"<{object_id},{camera},{x:.1f},{y:.1f}>"


# The standard DriveLM questions (phrasing of DriveLM-nuScenes v1.1).
Q_IMPORTANT_OBJECTS = (
    "What are the important objects in the current scene? Those objects will be considered for the future "
    "reasoning and driving decision."
)
# DriveLM-nuScenes asks this per camera direction ("to the front left of"); answers here list the view's objects.
Q_OBJECTS_IN_CAMERA = "What are objects {direction} the ego car?"
# Asked about objects whose description is unique in the frame: looked up by what they look like, answered by where.
Q_LOCATE_OBJECT = "Where is the {description} in the current scene?"
# Answered by where only: what a random-init model first learns to read from the images (docs/STUDENT.md, run 4).
Q_MOST_IMPORTANT_DIRECTION = "Where is the most important object relative to the ego car?"
OPTIONS_PROMPT = " Please select the correct answer from the following options: "  # DriveLM's multiple choice
Q_MOVING_STATUS = "What is the moving status of object {object}? Please select the correct answer from the following options: {options}"
Q_FUTURE_CONFLICT = "Would {object} be in the moving direction of the ego vehicle?"
Q_OBJECTS_IN_PATH = "What object should the ego vehicle notice first when the ego vehicle is getting to the next possible location? Please list the objects by their IDs."
Q_SAFE_ACTIONS = "What are the safe actions of the ego car considering those objects?"
Q_ACTION_FOR_OBJECT = "What actions could the ego vehicle take based on {object}? Why take this action and what's the probability?"
Q_BEHAVIOR = "Predict the behavior of the ego vehicle. Please select the correct answer from the following options: {options}"
Q_BEHAVIOR_OPEN = "Predict the behavior of the ego vehicle."
Q_TRAJECTORY = (
    "Predict the future trajectory of the ego vehicle for the next 3 seconds as (x, y) waypoints in metres "
    "in base_link (x forward, y left), one every 0.5 s."
)

MOVING_STATUS_QUESTION = "what is the moving status of object"  # lower-case part of Q_MOVING_STATUS to look for
MOVING_STATUS_OPTIONS: tuple[str, ...] = ("Going ahead.", "Turn left.", "Turn right.", "Stopped.")
OPTION_LETTERS = "ABCD"

# Ego behaviour classes, DriveLM phrasing: "The ego vehicle is going straight. The ego vehicle is driving slowly."
STEERING_CLASSES: tuple[str, ...] = (
    "going straight",
    "slightly steering to the left",
    "slightly steering to the right",
    "steering to the left",
    "steering to the right",
)
SPEED_CLASSES: tuple[str, ...] = (
    "not moving",
    "driving slowly",
    "driving with normal speed",
    "driving fast",
    "driving very fast",
)
# The official 21 behaviour classes (DriveLM convert_data.py): every steering/speed pair except steering while not moving.
BEHAVIOR_CLASSES: tuple[tuple[str, str], ...] = tuple(
    (steering, speed) for steering in STEERING_CLASSES for speed in SPEED_CLASSES
    if speed != SPEED_CLASSES[0] or steering == STEERING_CLASSES[0]
)

TRAJECTORY_HORIZON_S = 3.0
TRAJECTORY_STEP_S = 0.5


def behavior_sentence(steering: str, speed: str) -> str:
    if steering not in STEERING_CLASSES:
        raise ValueError(f"steering: expected one of {STEERING_CLASSES}, got '{steering}'")
    if speed not in SPEED_CLASSES:
        raise ValueError(f"speed: expected one of {SPEED_CLASSES}, got '{speed}'")
    return f"The ego vehicle is {steering}. The ego vehicle is {speed}."


def format_options(options: list[str] | tuple[str, ...]) -> str:
    """Multiple-choice options as DriveLM writes them: 'A. Going ahead. B. Turn left. ...'."""
    return " ".join(f"{letter}. {text}" for letter, text in zip(OPTION_LETTERS, options, strict=False))


def format_trajectory(waypoints: list[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"({x:.1f}, {y:.1f})" for x, y in waypoints) + "]"
