"""Model answers to structure: object tags, ego behaviour, trajectory waypoints.

Malformed text never raises: every parser returns what it could read and a count of the
fragments that looked structured but did not parse. Pure Python.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .drivelm import (
    NUMBER,
    OPTION_LETTERS,
    OPTIONS_PROMPT,
    SPEED_CLASSES,
    STEERING_CLASSES,
    TAG_ATTEMPT,
    TAG_PATTERN,
    ObjectTag,
)

PAIR_PATTERN = re.compile(rf"\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)")
PAIR_ATTEMPT = re.compile(r"\([^()]*\)")
OPTION_PATTERN = re.compile(r"([A-D])\.\s*(.+?)(?=\s+[A-D]\.\s|$)")
LETTER_ANSWER = re.compile(r"^\s*\(?([A-D])\)?(?:[.:)]|\s|$)")


@dataclass
class Parsed:
    """Structured values read from one or more answers, and how many fragments failed."""

    objects: list[ObjectTag] = field(default_factory=list)
    steering: str | None = None
    speed: str | None = None
    waypoints: list[tuple[float, float]] = field(default_factory=list)
    unparsed: int = 0


@dataclass(frozen=True)
class ScoredAnswer:
    """An answer and the probability the model gave each of its generated tokens (stop token included)."""

    text: str
    token_probs: tuple[float, ...] = ()

    @classmethod
    def from_logprobs(cls, text: str, logprobs: list[float]) -> ScoredAnswer:
        return cls(text, tuple(math.exp(value) for value in logprobs))

    @property
    def confidence(self) -> float:
        """Mean token probability (1.0 for an answer without tokens: nothing was doubted)."""
        return sum(self.token_probs) / len(self.token_probs) if self.token_probs else 1.0

    @property
    def min_prob(self) -> float:
        return min(self.token_probs, default=1.0)


def parse_tags(text: str, cameras: tuple[str, ...] | None = None) -> tuple[list[ObjectTag], int]:
    """Object tags `<c1,CAM_FRONT,812.4,466.0>` in order of appearance, unique per (id, camera)."""
    tags: dict[tuple[str, str], ObjectTag] = {}
    unparsed = 0
    for attempt in TAG_ATTEMPT.finditer(text):
        match = TAG_PATTERN.fullmatch(attempt.group(0))
        if match is None or (cameras is not None and match.group(2) not in cameras):
            unparsed += 1
            continue
        tag = ObjectTag(match.group(1), match.group(2), float(match.group(3)), float(match.group(4)))
        tags.setdefault((tag.object_id, tag.camera), tag)
    return list(tags.values()), unparsed


def resolve_choice(question: str, answer: str) -> str:
    """A multiple-choice letter answer ('B.') -> the option text it picks in the question; else the answer."""
    letter = LETTER_ANSWER.match(answer)
    if letter is None:
        return answer
    options = {m.group(1): m.group(2) for m in OPTION_PATTERN.finditer(question)}
    return options.get(letter.group(1), answer) if letter.group(1) in OPTION_LETTERS else answer


def split_choices(question: str) -> tuple[str, dict[str, str]] | None:
    """A DriveLM multiple-choice question -> (its stem, {letter: option text}); None for any other question."""
    stem, marker, listed = question.partition(OPTIONS_PROMPT.strip())
    options = {m.group(1): m.group(2) for m in OPTION_PATTERN.finditer(listed)} if marker else {}
    return (stem.strip(), options) if len(options) > 1 else None


def parse_behavior(text: str) -> tuple[str | None, str | None, int]:
    """Steering and speed classes from 'The ego vehicle is going straight. The ego vehicle is driving slowly.'"""
    lowered = text.lower()
    # Longest phrase first: "slightly steering to the left" contains "steering to the left".
    steering = next((s for s in sorted(STEERING_CLASSES, key=len, reverse=True) if s in lowered), None)
    speed = next((s for s in sorted(SPEED_CLASSES, key=len, reverse=True) if s in lowered), None)
    unparsed = int(bool(text.strip()) and (steering is None or speed is None))
    return steering, speed, unparsed


def parse_waypoints(text: str) -> tuple[list[tuple[float, float]], int]:
    """(x, y) pairs in metres, in order; parenthesised fragments that are not number pairs count as unparsed."""
    waypoints, unparsed = [], 0
    for attempt in PAIR_ATTEMPT.finditer(text):
        match = PAIR_PATTERN.fullmatch(attempt.group(0))
        if match is None:
            unparsed += 1
        else:
            waypoints.append((float(match.group(1)), float(match.group(2))))
    return waypoints, unparsed
