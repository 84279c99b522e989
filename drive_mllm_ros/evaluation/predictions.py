"""Predictions in the challenge's format, `[{id, question, answer}, ...]`, checked item by item.

One bad entry never stops a run: each problem is counted (with a few example ids) and the entry is
ignored or scored as wrong, as the counts' names say.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .testset import load_json

EXAMPLES_KEPT = 5


@dataclass
class InputIssues:
    """Counts of bad input; `examples` keeps the first few ids of each kind."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(example)

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)


def read_prediction_file(path: str) -> list:
    entries = load_json(path, "prediction file")
    if not isinstance(entries, list):
        raise ValueError(f"prediction file '{path}': expected a JSON list of {{id, question, answer}}, "
                         f"got {type(entries).__name__}")
    return entries


def is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


def clean_answer(entry_id: str, answer: str, issues: InputIssues) -> str:
    """Invalid UTF-8 (undecodable bytes or lone surrogate escapes) becomes U+FFFD so the rest still scores."""
    if any(is_surrogate(char) for char in answer):
        issues.add("non_utf8_answer", entry_id)
        answer = "".join("\ufffd" if is_surrogate(char) else char for char in answer)
    if not answer.strip():
        issues.add("empty_answer", entry_id)
    return answer


def collect_answers(entries: Iterable, gt_ids: set[str], issues: InputIssues) -> dict[str, str]:
    """id -> answer for the GT ids; unknown ids are ignored, a duplicated id keeps its last answer."""
    answers: dict[str, str] = {}
    for position, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("answer"), str)):
            issues.add("malformed_entry", f"#{position}")
            continue
        entry_id = entry["id"]
        if entry_id not in gt_ids:
            issues.add("unknown_id", entry_id)
            continue
        if entry_id in answers:
            issues.add("duplicate_id", entry_id)
        answers[entry_id] = clean_answer(entry_id, entry["answer"], issues)
    for missing in sorted(gt_ids - answers.keys()):
        issues.add("missing_prediction", missing)
    return answers
