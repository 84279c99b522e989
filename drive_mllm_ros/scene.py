"""One camera set -> one scene: ask the configured questions per stage, parse the answers.

Questions containing ``{object}`` are asked once per key object found by the earlier answers
(up to ``max_objects``), which is how DriveLM's object-level questions become a fixed
configuration. The result serialises to the ``~/scene`` JSON (config/scene.schema.json). Pure
Python: the node only converts messages in and out.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from .answers import ScoredAnswer, parse_behavior, parse_tags, parse_waypoints, resolve_choice
from .drivelm import STAGES, ObjectTag

OBJECT_SLOT = "{object}"
T = TypeVar("T")


class FrameModel(Protocol):
    """What the analyzer needs from a model backend (drive_mllm_ros.model.DrivingModel)."""

    model_id: str

    def prepare(self, views: list[np.ndarray]) -> Any: ...

    def answer_scored(
        self, frame: Any, questions: list[str], max_new_tokens: int | list[int] = 128
    ) -> list[ScoredAnswer]: ...


@dataclass
class StageQuestions:
    """The questions asked per stage, in stage order, with a token budget per stage."""

    questions: dict[str, list[str]]
    max_new_tokens: dict[str, int] = field(default_factory=dict)
    max_objects: int = 3
    default_max_new_tokens: int = 96

    def __post_init__(self) -> None:
        unknown = set(self.questions) - set(STAGES)
        if unknown:
            raise ValueError(f"questions: unknown stage(s) {sorted(unknown)}, expected some of {STAGES}")
        if not any(self.questions.values()):
            raise ValueError("questions: at least one question must be configured")
        for stage, budget in self.max_new_tokens.items():
            if budget < 1:
                raise ValueError(f"max_new_tokens.{stage}: expected >= 1, got {budget}")

    def budget(self, stage: str) -> int:
        return self.max_new_tokens.get(stage, self.default_max_new_tokens)

    def largest_budget(self) -> int:
        return max(self.budget(stage) for stage in STAGES)

    def fixed(self) -> list[tuple[str, str]]:
        return [(s, q) for s in STAGES for q in self.questions.get(s, []) if OBJECT_SLOT not in q]

    def per_object(self, objects: list[ObjectTag]) -> list[tuple[str, str]]:
        chosen = objects[: self.max_objects]
        return [
            (s, q.replace(OBJECT_SLOT, str(obj)))
            for s in STAGES
            for q in self.questions.get(s, [])
            if OBJECT_SLOT in q
            for obj in chosen
        ]


@dataclass
class Scene:
    stamp_ns: int
    frame_id: str
    model: str
    layout: str
    cameras: dict[str, str]
    qa: list[dict[str, str]] = field(default_factory=list)
    key_objects: list[dict[str, Any]] = field(default_factory=list)
    behavior: dict[str, Any] | None = None
    trajectory: list[list[float]] | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    unparsed: int = 0

    @property
    def partial(self) -> bool:
        return any(state != "ok" for state in self.cameras.values())

    def answers(self, stage: str) -> list[str]:
        return [item["answer"] for item in self.qa if item["stage"] == stage]

    def to_dict(self) -> dict[str, Any]:
        sec, nanosec = divmod(self.stamp_ns, 1_000_000_000)
        return {
            "stamp": {"sec": sec, "nanosec": nanosec},
            "frame_id": self.frame_id,
            "model": self.model,
            "layout": self.layout,
            "cameras": self.cameras,
            "partial": self.partial,
            "qa": self.qa,
            "key_objects": self.key_objects,
            "behavior": self.behavior,
            "trajectory": self.trajectory,
            "latency_ms": {k: round(v, 2) for k, v in self.latency_ms.items()},
            "unparsed": self.unparsed,
        }


class SceneAnalyzer:
    def __init__(self, model: FrameModel, questions: StageQuestions, cameras: tuple[str, ...], layout: str) -> None:
        self.model, self.questions, self.cameras, self.layout = model, questions, cameras, layout
        self.last_frame: Any = None  # the newest prepared images, for follow-up questions

    def analyze(
        self,
        views: list[np.ndarray],
        stamp_ns: int,
        frame_id: str,
        missing: tuple[str, ...] = (),
        extra: list[tuple[str, str]] = (),
    ) -> Scene:
        """Views in rig order (blank views stand in for ``missing`` cameras); ``extra`` (stage, question)
        pairs are asked besides the configured ones (a test set's questions for this frame)."""
        scene = Scene(
            stamp_ns,
            frame_id,
            self.model.model_id,
            self.layout,
            {c: "blank" if c in missing else "ok" for c in self.cameras},
        )
        started = time.perf_counter()
        frame = self.last_frame = self.model.prepare(views)
        prepared = time.perf_counter()
        fixed = self.questions.fixed()
        self._ask(scene, frame, fixed + [item for item in extra if item not in fixed])
        objects = self._collect_objects(scene)
        self._ask(scene, frame, self.questions.per_object(objects))
        answered = time.perf_counter()
        self._collect_objects(scene)
        self._parse_behavior_and_trajectory(scene)
        scene.latency_ms.update(preprocess=(prepared - started) * 1e3, model=(answered - prepared) * 1e3)
        return scene

    def batch_sizes(self) -> list[int]:
        """How many questions one answer call can carry: the fixed ones, then those of 1..max_objects objects."""
        per_object = sum(
            OBJECT_SLOT in q for stage_questions in self.questions.questions.values() for q in stage_questions
        )
        fixed = len(self.questions.fixed())
        return sorted({fixed, *(per_object * n for n in range(1, self.questions.max_objects + 1))} - {0})

    def _ask(self, scene: Scene, frame: Any, items: list[tuple[str, str]]) -> None:
        if not items:
            return
        budgets = [self.questions.budget(stage) for stage, _ in items]
        answers = self.model.answer_scored(frame, [q for _, q in items], budgets)
        for stage, milliseconds in getattr(self.model, "last_timings", {}).items():  # vision, prefill, decode
            scene.latency_ms[stage] = scene.latency_ms.get(stage, 0.0) + milliseconds
        scene.qa += [
            {
                "stage": s,
                "question": q,
                "answer": a.text,
                "confidence": round(a.confidence, 4),
                "min_prob": round(a.min_prob, 4),
            }
            for (s, q), a in zip(items, answers, strict=True)
        ]

    def _collect_objects(self, scene: Scene) -> list[ObjectTag]:
        """Key objects from every answer so far, first mention wins; recounts unparsed fragments."""
        seen: dict[tuple[str, str], ObjectTag] = {}
        stage_of: dict[tuple[str, str], str] = {}
        unparsed = 0
        for item in scene.qa:
            tags, bad = parse_tags(item["answer"], self.cameras)
            unparsed += bad
            for tag in tags:
                key = (tag.object_id, tag.camera)
                if key not in seen:
                    seen[key], stage_of[key] = tag, item["stage"]
        scene.unparsed = unparsed
        scene.key_objects = [
            {"id": t.object_id, "camera": t.camera, "x": t.x, "y": t.y, "stage": stage_of[k]} for k, t in seen.items()
        ]
        return list(seen.values())

    def _parse_behavior_and_trajectory(self, scene: Scene) -> None:
        behavior_items = [item for item in scene.qa if item["stage"] == "behavior"]
        if behavior_items:
            text = resolve_choice(behavior_items[0]["question"], behavior_items[0]["answer"])
            steering, speed, bad = parse_behavior(text)
            scene.behavior = {"steering": steering, "speed": speed, "text": text}
            scene.unparsed += bad
        trajectory_answers = scene.answers("trajectory")
        if trajectory_answers:
            waypoints, bad = parse_waypoints(trajectory_answers[0])
            scene.trajectory = [[x, y] for x, y in waypoints]
            scene.unparsed += bad


class StampLookup(Generic[T]):
    """Values keyed by a CAM_FRONT timestamp (ns), found by the nearest stamp within a tolerance."""

    def __init__(self, by_stamp: dict[int, T], tolerance_ns: int) -> None:
        self._stamps = sorted(by_stamp)
        self._by_stamp, self._tolerance_ns = by_stamp, tolerance_ns

    def __len__(self) -> int:
        return len(self._stamps)

    def nearest(self, stamp_ns: int) -> T | None:
        index = bisect.bisect_left(self._stamps, stamp_ns)
        near = [s for s in self._stamps[max(index - 1, 0) : index + 1] if abs(s - stamp_ns) <= self._tolerance_ns]
        return self._by_stamp[min(near, key=lambda s: abs(s - stamp_ns))] if near else None


class KeyFrameQuestions(StampLookup[list[tuple[str, str]]]):
    """Per-key-frame (stage, question) pairs looked up by stamp; none when no key frame is near."""

    def lookup(self, stamp_ns: int) -> list[tuple[str, str]]:
        return self.nearest(stamp_ns) or []
