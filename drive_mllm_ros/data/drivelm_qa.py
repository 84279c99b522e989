"""DriveLM v1.1 key-frame entries (key objects and QA) from world states, worded with ``drivelm.py``.

One key frame gives::

    {"key_object_infos": {"<c1,CAM_FRONT,812.4,466.0>": {"Category", "Status", "Visual_description", "2d_bbox"}},
     "QA": {"perception": [...], "prediction": [...], "planning": [...], "behavior": [...], "trajectory": [...]},
     "image_paths": {"CAM_FRONT": "../nuscenes/samples/CAM_FRONT/<log>__CAM_FRONT__<us>.jpg", ...}}

QA items are ``{Q, A, C, con_up, con_down, cluster, layer}`` with all but Q and A null, as in
DriveLM-nuScenes. The trajectory question (``Q_TRAJECTORY``, ego waypoints in base_link) is our extra
stage and lives in its own ``QA["trajectory"]`` list so that the four official stages keep the
official scorer's numbering. Answers use only what the current six views show: tags are exact
projections, moving status follows the drawn cues (brake lights, turn signals, a pedestrian's
stride), and ambiguous objects (braking, changing lanes) are not asked about. Multiple-choice
letters, yes/no and moving-status classes are balanced by ``AnswerBalancer``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..drivelm import (
    BEHAVIOR_CLASSES,
    MOVING_STATUS_OPTIONS,
    OPTION_LETTERS,
    Q_ACTION_FOR_OBJECT,
    Q_BEHAVIOR,
    Q_FUTURE_CONFLICT,
    Q_IMPORTANT_OBJECTS,
    Q_LOCATE_OBJECT,
    Q_MOST_IMPORTANT_DIRECTION,
    Q_MOVING_STATUS,
    Q_OBJECTS_IN_CAMERA,
    Q_OBJECTS_IN_PATH,
    Q_SAFE_ACTIONS,
    Q_TRAJECTORY,
    SPEED_CLASSES,
    STEERING_CLASSES,
    TRAJECTORY_HORIZON_S,
    TRAJECTORY_STEP_S,
    behavior_sentence,
    format_options,
    format_tag,
    format_trajectory,
)
from .world import OBJECT_CLASSES, ObjectState, WorldState

IMPORTANT_RANGE = 50.0  # metres
MAX_IMPORTANT_OBJECTS = 4
MIN_VISIBILITY = 0.4  # fraction of an object's silhouette that must be unoccluded to count as seen
SPEED_LIMITS = (0.3, 4.0, 8.0, 12.0)  # m/s upper bounds of SPEED_CLASSES[:-1]
CAMERA_DIRECTIONS = {
    "CAM_FRONT": "to the front of", "CAM_FRONT_LEFT": "to the front left of",
    "CAM_FRONT_RIGHT": "to the front right of",
    "CAM_BACK": "to the back of", "CAM_BACK_LEFT": "to the back left of", "CAM_BACK_RIGHT": "to the back right of",
}
ORDINALS = ("Firstly", "Secondly", "Thirdly", "Fourthly")


@dataclass(frozen=True)
class SeenObject:
    """An object as the current views show it: its tag camera is the one where it looks largest."""

    state: ObjectState
    camera: str
    centre: tuple[float, float]
    bbox: tuple[float, float, float, float]
    visibility: float
    distance: float
    in_path: bool


@dataclass
class AnswerBalancer:
    """Keeps answer classes even across a dataset by always preferring the least used class."""

    counts: Counter = field(default_factory=Counter)

    def least_used(self, group: str, options: Sequence[str]) -> str:
        return min(options, key=lambda option: (self.counts[(group, option)], options.index(option)))

    def use(self, group: str, option: str) -> None:
        self.counts[(group, option)] += 1


def qa_item(question: str, answer: str) -> dict:
    return {"Q": question, "A": answer, "C": None, "con_up": None, "con_down": None, "cluster": None, "layer": None}


def visual_description(obj: ObjectState) -> str:
    noun = OBJECT_CLASSES[obj.kind].noun
    if obj.kind in ("pedestrian", "cyclist"):
        return f"{noun.capitalize()} in a {obj.colour} shirt."
    if obj.kind == "cone":
        return "Orange traffic cone."
    if obj.kind == "barrier":
        return "Red traffic barrier."
    return f"{obj.colour.capitalize()} {noun}."


def object_status(obj: ObjectState) -> str | None:
    if obj.kind in ("cone", "barrier"):
        return None
    if obj.parked:
        return "Parked"
    return "Moving" if obj.speed >= 0.2 or obj.walking else "Stopped"


def ego_frame(state: WorldState, x: float, y: float) -> tuple[float, float]:
    """Map point -> ego base_link (x forward, y left)."""
    dx, dy = x - state.ego_x, y - state.ego_y
    cos_yaw, sin_yaw = math.cos(state.ego_yaw), math.sin(state.ego_yaw)
    return dx * cos_yaw + dy * sin_yaw, -dx * sin_yaw + dy * cos_yaw


def ego_corridor(state: WorldState, future: Sequence[WorldState], min_length: float = 20.0) -> np.ndarray:
    """The ego's future path in base_link (2xN), extended straight ahead to at least ``min_length`` metres."""
    points = [(0.0, 0.0)] + [ego_frame(state, f.ego_x, f.ego_y) for f in future]
    x_end, y_end = points[-1]
    if x_end < min_length:
        heading = future[-1].ego_yaw - state.ego_yaw if future else 0.0
        extra = min_length - x_end
        points.append((x_end + extra * math.cos(heading), y_end + extra * math.sin(heading)))
    dense = []
    for (x1, y1), (x2, y2) in zip(points, points[1:], strict=False):
        steps = max(1, math.ceil(math.hypot(x2 - x1, y2 - y1) / 0.5))
        dense += [(x1 + (x2 - x1) * k / steps, y1 + (y2 - y1) * k / steps) for k in range(steps)]
    dense.append(points[-1])
    return np.array(dense).T


def in_ego_path(state: WorldState, future: Sequence[WorldState], instance: int, corridor: np.ndarray) -> bool:
    """Whether the object is, now or within the horizon, ahead of the ego and inside its swept corridor."""
    for snapshot in (state, *future):
        obj = snapshot.objects[instance]  # instances are numbered in object order
        x, y = ego_frame(state, obj.x, obj.y)
        if x <= 0:
            continue
        if np.hypot(corridor[0] - x, corridor[1] - y).min() < 1.0 + obj.size[1] / 2:
            return True
    return False


def speed_class(speed: float) -> str:
    for name, limit in zip(SPEED_CLASSES, SPEED_LIMITS, strict=False):
        if speed < limit:
            return name
    return SPEED_CLASSES[-1]


def steering_class(state: WorldState, end: WorldState) -> str:
    """From where the ego is at the end of the horizon, in today's base_link."""
    _, lateral = ego_frame(state, end.ego_x, end.ego_y)
    turned = math.degrees(math.atan2(math.sin(end.ego_yaw - state.ego_yaw), math.cos(end.ego_yaw - state.ego_yaw)))
    if abs(turned) > 30:
        return STEERING_CLASSES[3] if turned > 0 else STEERING_CLASSES[4]
    if abs(lateral) > 1.0 or abs(turned) > 8:
        return STEERING_CLASSES[1] if (lateral if abs(lateral) > 1.0 else turned) > 0 else STEERING_CLASSES[2]
    return STEERING_CLASSES[0]


def trajectory(state: WorldState, future: Sequence[WorldState], sweep_period: float) -> list[tuple[float, float]]:
    steps = round(TRAJECTORY_HORIZON_S / TRAJECTORY_STEP_S)
    per_step = round(TRAJECTORY_STEP_S / sweep_period)
    return [ego_frame(state, future[k * per_step - 1].ego_x, future[k * per_step - 1].ego_y) for k in
            range(1, steps + 1)]


def speed_action(state: WorldState, end: WorldState) -> str:
    if state.ego_speed < 0.3 and end.ego_speed < 0.3:
        return "remain stopped"
    if end.ego_speed < 0.3:
        return "brake gently to a stop"
    if end.ego_speed < state.ego_speed - 1.5:
        return "decelerate gradually without braking"
    if end.ego_speed > state.ego_speed + 1.5:
        return "accelerate and go ahead"
    return "keep going at the same speed"


STEERING_ACTIONS = dict(zip(STEERING_CLASSES, ("keep the current lane", "slightly offset to the left",
                                               "slightly offset to the right", "turn left", "turn right"), strict=True))
STATUS_PHRASES = {"Going ahead.": "going ahead", "Turn left.": "turning left", "Turn right.": "turning right",
                  "Stopped.": "stopped"}


def status_phrase(obj: ObjectState) -> str:
    if obj.kind in ("cone", "barrier"):
        return "a traffic element"
    if obj.changing_lane:
        return "changing lanes"
    if obj.brake_lights and obj.speed >= 0.2:
        return "slowing down"
    return STATUS_PHRASES[obj.moving_status or "Going ahead."]


def object_action(seen: SeenObject, state: WorldState, end: WorldState) -> tuple[str, str]:
    """(action, reason) for one object, from whether it is in the ego path and what the ego does."""
    noun = OBJECT_CLASSES[seen.state.kind].noun
    if not seen.in_path:
        return "keep going at the same speed", "there is no safety issue"
    action = speed_action(state, end)
    if action in ("keep going at the same speed", "accelerate and go ahead"):
        action = "keep a safe distance and follow it" if seen.state.kind != "pedestrian" else "watch it and pass"
    return action, f"the {noun} is {status_phrase(seen.state)} in the moving direction of the ego vehicle"


class FrameQA:
    """Builds one key frame's DriveLM entry; keep one instance per dataset so that balancing spans it."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.balancer = AnswerBalancer()

    @staticmethod
    def notable(seen: Sequence[SeenObject]) -> list[SeenObject]:
        """Objects near and visible enough to talk about."""
        return [s for s in seen if s.distance < IMPORTANT_RANGE and s.visibility >= MIN_VISIBILITY]

    def important_objects(self, seen: Sequence[SeenObject]) -> list[SeenObject]:
        ranked = sorted(self.notable(seen), key=lambda s: (not s.in_path, s.distance))
        return ranked[:MAX_IMPORTANT_OBJECTS]

    def entry(self, state: WorldState, future: Sequence[WorldState], seen: Sequence[SeenObject],
              image_paths: dict[str, str], sweep_period: float) -> dict | None:
        """The key frame's DriveLM entry, or None when no object is worth asking about."""
        objects, notable = self.important_objects(seen), self.notable(seen)
        if not objects:
            return None
        tags = {s.state.instance: format_tag(f"c{i + 1}", s.camera, *s.centre) for i, s in enumerate(objects)}
        end = future[-1]
        infos = {tags[s.state.instance]: {
            "Category": OBJECT_CLASSES[s.state.kind].drivelm_category, "Status": object_status(s.state),
            "Visual_description": visual_description(s.state), "2d_bbox": [round(v, 1) for v in s.bbox]}
            for s in objects}
        qa = {
            "perception": [qa_item(Q_IMPORTANT_OBJECTS, self.important_objects_answer(objects, tags)),
                           qa_item(Q_MOST_IMPORTANT_DIRECTION, f"The most important object is "
                                   f"{CAMERA_DIRECTIONS[objects[0].camera]} the ego car."),
                           *self.camera_object_items(notable), *self.locate_items(notable)],
            "prediction": self.moving_status_items(objects, tags) + self.conflict_items(objects, tags)
            + [qa_item(Q_OBJECTS_IN_PATH, self.objects_in_path_answer(objects, tags, state, end))],
            "planning": self.planning_items(objects, tags, state, end),
            "behavior": [self.behavior_item(state, end)],
            "trajectory": [qa_item(Q_TRAJECTORY, format_trajectory(
                [(round(x, 1), round(y, 1)) for x, y in trajectory(state, future, sweep_period)]))],
        }
        return {"key_object_infos": infos, "QA": qa, "image_paths": image_paths}

    @staticmethod
    def important_objects_answer(objects: Sequence[SeenObject], tags: dict[int, str]) -> str:
        phrases = [f"a {visual_description(s.state)[:-1].lower()} {CAMERA_DIRECTIONS[s.camera]} the ego vehicle"
                   for s in objects]
        ids = [tags[s.state.instance] for s in objects]
        return f"There is {_join(phrases)}. The IDs of these objects are {_join(ids)}."

    @staticmethod
    def camera_object_items(objects: Sequence[SeenObject]) -> list[dict]:
        """One question per camera listing its notable objects left to right with their pixel centres: each answer
        depends on one view only. No object ids: which id a non-key object would get cannot be seen in the image."""
        items = []
        for camera, direction in CAMERA_DIRECTIONS.items():
            in_view = sorted((s for s in objects if s.camera == camera), key=lambda s: s.centre[0])
            phrases = [f"a {visual_description(s.state)[:-1].lower()} at ({s.centre[0]:.1f}, {s.centre[1]:.1f})"
                       for s in in_view]
            answer = (f"There is {_join(phrases)}." if phrases else f"There is no object {direction} the ego car.")
            items.append(qa_item(Q_OBJECTS_IN_CAMERA.format(direction=direction), answer))
        return items

    @staticmethod
    def locate_items(objects: Sequence[SeenObject], count: int = MAX_IMPORTANT_OBJECTS) -> list[dict]:
        """"Where is the silver car?" for the nearest objects whose description no other object shares: a lookup
        by appearance answered by naming where, the kind of question small models learn first (docs/STUDENT.md, run 3)."""
        described = Counter(visual_description(s.state) for s in objects)
        unique = sorted((s for s in objects if described[visual_description(s.state)] == 1), key=lambda s: s.distance)
        items = []
        for seen in unique[:count]:
            description = visual_description(seen.state)[:-1].lower()
            items.append(qa_item(Q_LOCATE_OBJECT.format(description=description),
                                 f"The {description} is {CAMERA_DIRECTIONS[seen.camera]} the ego car at "
                                 f"({seen.centre[0]:.1f}, {seen.centre[1]:.1f})."))
        return items

    def _multiple_choice(self, group: str, correct: str, distractors: Sequence[str]) -> tuple[str, str]:
        """(options text, answer letter) with the correct option at the least used letter."""
        letter = self.balancer.least_used(group, OPTION_LETTERS)
        self.balancer.use(group, letter)
        others = list(distractors)
        self.rng.shuffle(others)
        options = others[:3]
        options.insert(OPTION_LETTERS.index(letter), correct)
        return format_options(options), f"{letter}."

    def moving_status_items(self, objects: Sequence[SeenObject], tags: dict[int, str]) -> list[dict]:
        askable = [s for s in objects if s.state.moving_status is not None]
        items = []
        for _ in range(min(2, len(askable))):
            status = self.balancer.least_used("status", [s.state.moving_status for s in askable])
            chosen = next(s for s in askable if s.state.moving_status == status)
            askable.remove(chosen)
            self.balancer.use("status", status)
            options, letter = self._multiple_choice(
                "status_letter", status, [o for o in MOVING_STATUS_OPTIONS if o != status])
            items.append(qa_item(Q_MOVING_STATUS.format(object=tags[chosen.state.instance], options=options), letter))
        return items

    def conflict_items(self, objects: Sequence[SeenObject], tags: dict[int, str]) -> list[dict]:
        """Up to two yes/no questions, each of the less used answer the frame still offers.

        Every frame asks at least one: the scorer's yes/no accuracy item is the first prediction answer with
        "yes" or "no" in it, and without a conflict question that would be the object listing ("notice").
        """
        remaining = list(objects)
        items = []
        for _ in range(2):
            available = [answer for answer in ("Yes.", "No.") if any(s.in_path == (answer == "Yes.") for s in remaining)]
            if not available:
                break
            wanted = self.balancer.least_used("conflict", available)
            chosen = next(s for s in remaining if s.in_path == (wanted == "Yes."))
            remaining.remove(chosen)
            self.balancer.use("conflict", wanted)
            items.append(qa_item(Q_FUTURE_CONFLICT.format(object=tags[chosen.state.instance]), wanted))
        return items

    @staticmethod
    def objects_in_path_answer(objects: Sequence[SeenObject], tags: dict[int, str], state: WorldState,
                               end: WorldState) -> str:
        sentences = []
        for ordinal, seen in zip(ORDINALS, objects, strict=False):
            action, _ = object_action(seen, state, end)
            sentences.append(f"{ordinal} notice that {tags[seen.state.instance]}. The object is "
                             f"{status_phrase(seen.state)}, so the ego vehicle should {action}.")
        return " ".join(sentences)

    def planning_items(self, objects: Sequence[SeenObject], tags: dict[int, str], state: WorldState,
                       end: WorldState) -> list[dict]:
        steering = steering_class(state, end)
        safe = f"{speed_action(state, end).capitalize()}, {STEERING_ACTIONS[steering]}."
        items = [qa_item(Q_SAFE_ACTIONS, safe)]
        for seen in objects[:2]:
            action, reason = object_action(seen, state, end)
            items.append(qa_item(Q_ACTION_FOR_OBJECT.format(object=tags[seen.state.instance]),
                                 f"The action is to {action}. The reason is that {reason}, "
                                 "the probability of this action is high."))
        return items

    def behavior_item(self, state: WorldState, end: WorldState) -> dict:
        """Distractors keep the ego's steering and change its speed: random ones mostly steer while most frames go
        straight, so the question alone gave the answer (docs/STUDENT.md, run 6); the speed shows only in the views."""
        steering, speed = steering_class(state, end), speed_class(state.ego_speed)
        distractors = [behavior_sentence(*pair) for pair in BEHAVIOR_CLASSES if pair[0] == steering and pair[1] != speed]
        options, letter = self._multiple_choice("behavior_letter", behavior_sentence(steering, speed), distractors)
        return qa_item(Q_BEHAVIOR.format(options=options), letter)


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f", and {items[-1]}"
