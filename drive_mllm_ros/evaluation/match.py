"""Match F1 and graph gating, as the official evaluation.py computes them.

Only decimals `\\d+\\.\\d+` are read, paired in order as (x, y): integers, camera names and c-ids are
invisible. Each predicted point, in order, takes the nearest unused GT point by L1 distance; a true
positive when that distance is below 16.
"""

from __future__ import annotations

import re

from ..drivelm import TAG_ATTEMPT, TAG_PATTERN

DECIMAL = re.compile(r"\d+\.\d+")
MATCH_DISTANCE = 16.0  # L1, strict
EPSILON = 1e-8  # the official +1e-8 terms

Point = tuple[float, float]


def decimal_points(text: str) -> list[Point]:
    """(x, y) pairs of the decimals in a text; an odd last number is dropped."""
    numbers = [float(number) for number in DECIMAL.findall(text)]
    return list(zip(numbers[0::2], numbers[1::2], strict=False))  # odd count: last dropped


def has_malformed_coordinates(text: str) -> bool:
    """A tag attempt that does not parse, or an odd count of decimals (the last one is then ignored)."""
    malformed_tag = any(TAG_PATTERN.fullmatch(attempt) is None for attempt in TAG_ATTEMPT.findall(text))
    return malformed_tag or len(DECIMAL.findall(text)) % 2 == 1


def match_points(predicted: list[Point], ground_truth: list[Point]) -> tuple[list[Point], float]:
    """Greedy nearest matching in prediction order -> (matched GT points, F1 in 0..1)."""
    unused = list(ground_truth)
    matched = []
    for x, y in predicted:
        if not unused:
            break
        nearest = min(unused, key=lambda gt: abs(x - gt[0]) + abs(y - gt[1]))  # first of equals, as np argmin
        if abs(x - nearest[0]) + abs(y - nearest[1]) < MATCH_DISTANCE:
            matched.append(nearest)
            unused.remove(nearest)
    true_positives = len(matched)
    precision = true_positives / (len(predicted) + EPSILON)
    recall = true_positives / (len(ground_truth) + EPSILON)
    return matched, 2 * precision * recall / (precision + recall + EPSILON)


def match_result(answer: str, gt_answer: str) -> tuple[list[Point], float]:
    return match_points(decimal_points(answer), decimal_points(gt_answer))


def in_graph(question: str, graph: list[Point]) -> bool:
    """A later QA is scored only if every point of its question was matched in the frame's first QA."""
    return all(point in graph for point in decimal_points(question))
