"""Hard cases: frames worth a second look, judged per scene and kept in a bounded DriveLM-format folder.

A frame is a hard case when an answer's mean token probability is below a threshold, an answer fragment did
not parse, prediction/planning answers name objects that perception placed elsewhere or did not list, or
someone flagged it (`~/flag_frame`). Kept frames go to disk on a writer thread (hard_case_store.py), under
a retention policy: at most the worst N frames per hour of stamps and a total size; worse frames push out
better ones, older ones go first when space runs out. Pure Python: the node only wires it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .answers import parse_tags
from .drivelm import ObjectTag
from .evaluation.match import MATCH_DISTANCE
from .hard_case_store import HardCaseStore
from .images import raw_to_rgb
from .sync import NS
from .visualize import encode_jpeg

LOW_CONFIDENCE, UNPARSED, DISAGREEMENT, FLAGGED = "low_confidence", "unparsed", "disagreement", "flagged"
LATER_STAGES = ("prediction", "planning")  # stages whose object tags must agree with perception's
HOUR_NS = 3600 * NS
MB = 1_000_000


@dataclass
class HardCaseSettings:
    """The node's `hard_cases.*` parameters."""

    enabled: bool = False
    dir: str = ""  # "" = $ROS_HOME/drive_mllm/hard_cases (ROS_HOME defaults to ~/.ros)
    min_confidence: float = 0.5  # an answer whose mean token probability is below this; 0 = off
    on_unparsed: bool = True
    on_disagreement: bool = True
    max_per_hour: int = 20
    max_mb: int = 500
    jpeg_quality: int = 90  # raw images only: compressed ones are kept as received

    def validate(self) -> None:
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(
                f"hard_cases.min_confidence: expected 0..1 (a token probability), got {self.min_confidence}"
            )
        for name in ("max_per_hour", "max_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"hard_cases.{name}: expected >= 1, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"hard_cases.jpeg_quality: expected 1..100, got {self.jpeg_quality}")

    def folder(self) -> Path:
        if self.dir:
            return Path(self.dir).expanduser()
        return Path(os.environ.get("ROS_HOME") or Path.home() / ".ros").expanduser() / "drive_mllm" / "hard_cases"


@dataclass
class Verdict:
    """Why a frame is a hard case (kinds and readable details) and its lowest answer confidence."""

    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    confidence: float = 1.0

    @property
    def badness(self) -> float:
        """Higher is worse: one point per kind of reason, plus how far the least confident answer is from 1."""
        return len(self.reasons) + 1.0 - self.confidence

    def to_dict(self) -> dict[str, Any]:
        return {
            "reasons": self.reasons,
            "details": self.details,
            "confidence": round(self.confidence, 4),
            "badness": round(self.badness, 4),
        }

    def add(self, reason: str, details: list[str]) -> None:
        if details:
            self.reasons.append(reason)
            self.details += details


def judge(
    qa: list[dict[str, Any]],
    unparsed: int,
    cameras: tuple[str, ...],
    settings: HardCaseSettings,
    flags: Sequence[str] = (),
) -> Verdict:
    """A scene's QA (stage, question, answer, confidence) -> the reasons it is a hard case, if any."""
    confidences = [(item["stage"], item.get("confidence", 1.0)) for item in qa]
    verdict = Verdict(confidence=min((c for _, c in confidences), default=1.0))
    threshold = settings.min_confidence
    verdict.add(
        LOW_CONFIDENCE,
        [f"{stage} answer confidence {c:.3f} < {threshold}" for stage, c in confidences if c < threshold],
    )
    if settings.on_unparsed and unparsed:
        verdict.add(UNPARSED, [f"{unparsed} answer fragment(s) did not parse"])
    if settings.on_disagreement:
        verdict.add(DISAGREEMENT, disagreements(qa, cameras))
    verdict.add(FLAGGED, [f"flagged: {reason}" for reason in flags])
    return verdict


def disagreements(qa: list[dict[str, Any]], cameras: tuple[str, ...]) -> list[str]:
    """Object tags in prediction/planning answers that perception did not list, or placed on another camera
    or farther than the challenge's match distance (L1) away. Questions are not read: per-object questions
    quote perception's tags verbatim."""
    perceived: dict[str, ObjectTag] = {}
    for item in qa:
        if item["stage"] == "perception":
            for tag in parse_tags(item["answer"], cameras)[0]:
                perceived.setdefault(tag.object_id, tag)
    if not any(item["stage"] == "perception" for item in qa):
        return []  # perception not asked: nothing to compare with
    found = []
    for item in qa:
        if item["stage"] not in LATER_STAGES:
            continue
        for tag in parse_tags(item["answer"], cameras)[0]:
            seen = perceived.get(tag.object_id)
            if seen is None:
                found.append(f"{tag} in {item['stage']} is not among perception's objects")
            elif seen.camera != tag.camera or abs(seen.x - tag.x) + abs(seen.y - tag.y) >= MATCH_DISTANCE:
                found.append(f"{tag} in {item['stage']} is {seen} in perception")
    return found


@dataclass(frozen=True)
class Kept:
    """What the retention policy knows of a kept frame."""

    key: str
    stamp_ns: int
    badness: float
    size: int  # bytes of its files

    @property
    def hour(self) -> int:
        return self.stamp_ns // HOUR_NS


class RetentionPolicy:
    """At most `max_per_hour` frames per hour of stamps (the worst ones) and `max_bytes` in all.

    A candidate competes with the kept frames: in its hour the least bad frame goes (the older one among
    equals); for space, frames go oldest hour first, least bad first within an hour. When the candidate
    itself would go, nothing is evicted.
    """

    def __init__(self, max_per_hour: int, max_bytes: int, kept: list[Kept] = ()) -> None:
        self.max_per_hour, self.max_bytes = max_per_hour, max_bytes
        self.kept: dict[str, Kept] = {k.key: k for k in kept}

    @property
    def total_bytes(self) -> int:
        return sum(k.size for k in self.kept.values())

    def plan(self, candidate: Kept) -> list[str] | None:
        """Keys to evict so that the candidate fits, or None when the candidate is not worth keeping."""
        previous = self.kept.get(candidate.key)
        if previous is not None and previous.badness > candidate.badness:
            return None  # the same frame again (a looping bag), judged less bad this time
        others = [k for k in self.kept.values() if k.key != candidate.key]
        evict = [candidate.key] if previous is not None else []
        same_hour = [k for k in others if k.hour == candidate.hour] + [candidate]
        if len(same_hour) > self.max_per_hour:
            least_bad = min(same_hour, key=lambda k: (k.badness, k.stamp_ns))
            if least_bad is candidate:
                return None
            evict.append(least_bad.key)
            others.remove(least_bad)
        by_age = sorted([*others, candidate], key=lambda k: (k.hour, k.badness, k.stamp_ns))
        total = sum(k.size for k in by_age)
        while total > self.max_bytes:
            first = by_age.pop(0)
            if first is candidate:
                return None
            evict.append(first.key)
            total -= first.size
        return evict

    def apply(self, candidate: Kept, evicted: list[str]) -> None:
        for key in evicted:
            self.kept.pop(key, None)
        self.kept[candidate.key] = candidate


def header_stamp_ns(msg: Any) -> int:
    """A message's header stamp in nanoseconds (duck-typed)."""
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec


def image_file(msg: Any, camera: str, jpeg_quality: int) -> tuple[bytes, str]:
    """(file bytes, extension): compressed images as received, raw ones JPEG-encoded."""
    if hasattr(msg, "format"):
        return bytes(msg.data), ".png" if "png" in msg.format.lower() else ".jpg"
    return encode_jpeg(raw_to_rgb(msg, camera), jpeg_quality), ".jpg"


@dataclass
class HardCase:
    """One frame to keep: the scene as published (scene.to_dict()), why, and its camera messages."""

    scene: dict[str, Any]
    stamp_ns: int
    verdict: Verdict
    messages: dict[str, Any]  # camera -> Image or CompressedImage, cameras the model really saw


Report = Callable[[str, str], None]  # (condition, message): logged once per condition, counted


class HardCaseRecorder:
    """Writes hard cases on its own thread; `offer` never blocks the caller and nothing raises out of it."""

    def __init__(self, settings: HardCaseSettings, report: Report, queue_size: int = 4) -> None:
        self.settings, self.report = settings, report
        self.store = HardCaseStore(settings.folder(), report)
        kept = [Kept(r["frame"], r["stamp_ns"], r["badness"], r["size_bytes"]) for r in self.store.kept()]
        self.policy = RetentionPolicy(settings.max_per_hour, settings.max_mb * MB, kept)
        self.counts = {
            "hard cases kept": 0,
            "hard cases not kept (policy)": 0,
            "hard cases dropped (busy)": 0,
            "hard case write errors": 0,
        }
        self._queue: queue.Queue[HardCase | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="drive_mllm_hard_cases", daemon=True)
        self._thread.start()

    def offer(self, case: HardCase) -> bool:
        try:
            self._queue.put_nowait(case)
            return True
        except queue.Full:
            self.counts["hard cases dropped (busy)"] += 1
            self.report("hard cases busy", "hard cases: the writer is behind, dropping new frames")
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return  # the writer is stuck (a hung disk): the daemon thread ends with the process
        self._thread.join(timeout)

    def _run(self) -> None:
        while (case := self._queue.get()) is not None:
            try:
                self.keep(case)
            except Exception as error:  # a full disk or a bad image must not stop the writer
                self.counts["hard case write errors"] += 1
                self.report(f"hard case {type(error).__name__}", f"hard cases: writing a frame failed: {error!r}")

    def keep(self, case: HardCase) -> bool:
        """Write the case if the policy keeps it, then evict what it pushes out; True when written."""
        files = {camera: image_file(msg, camera, self.settings.jpeg_quality) for camera, msg in case.messages.items()}
        stamps = {camera: header_stamp_ns(msg) for camera, msg in case.messages.items()}
        record = self.store.record(case.scene, case.stamp_ns, case.verdict.to_dict(), stamps, files)
        candidate = Kept(record["frame"], case.stamp_ns, case.verdict.badness, record["size_bytes"])
        evict = self.policy.plan(candidate)
        if evict is None:
            self.counts["hard cases not kept (policy)"] += 1
            return False
        self.store.write(record, files)  # the new frame is complete on disk before anything is removed
        self.store.remove([key for key in evict if key != candidate.key])
        self.policy.apply(candidate, evict)
        self.store.write_indexes()
        self.counts["hard cases kept"] += 1
        return True
