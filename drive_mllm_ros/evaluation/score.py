"""Scoring as the official challenge/evaluation.py: graph gating, the four metrics, the final score.

Final = 0.4 * Judge/100 + 0.2 * Lang + 0.2 * Match/100 + 0.2 * Acc, with
Lang = (BLEU-1 + BLEU-2 + BLEU-3 + BLEU-4)/12 + ROUGE_L/3 + CIDEr/30 and
Match = (mean match F1 x 100 + judge score of the same items) / 2.
Without a judge the official final cannot be formed; `judge_free_final` is the same formula with
every judge rating counted as 0 (a lower bound), reported beside the terms that are known.
Every metric is also computed per recording condition (`by_condition`): gating is per frame and a
condition is per frame, so a condition's scores are the same computation over its frames' items.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .judge import Judge, JudgeError
from .language import LANGUAGE_KEYS, language_scores
from .match import has_malformed_coordinates, in_graph, match_result
from .predictions import InputIssues, collect_answers
from .testset import TAG_ACCURACY, TAG_JUDGE, TAG_LANGUAGE, TAG_MATCH, GtItem

WEIGHTS = {"judge": 0.4, "language": 0.2, "match": 0.2, "accuracy": 0.2}


@dataclass(frozen=True)
class PaperRow:
    """One row of Table 4 of the Mini-InternVL paper (arXiv 2410.16261), DriveLM-nuScenes v1.1 val."""

    model: str
    params: str
    final: float
    accuracy: float | None = None
    judge: float | None = None
    bleu: tuple[float, float, float, float] | None = None
    rouge_l: float | None = None
    cider: float | None = None
    match: float | None = None


# METHOD.md's rows; BLEU-1..3 come from the paper's full Table 4 (METHOD.md lists BLEU-4 only).
PAPER_TABLE: tuple[PaperRow, ...] = (
    PaperRow("InternVL4Drive-v2 (challenge winner)", "26B", 0.6002, 0.7339, 65.25,
             (0.7787, 0.7176, 0.6608, 0.6059), 0.7449, 0.2061, 47.65),
    PaperRow("Mini-InternVL-DA-1B", "1B", 0.5686, 0.7007, 63.84, (0.7362, 0.6767, 0.6214, 0.5678), 0.7365, 0.1669, 39.76),
    PaperRow("Mini-InternVL-DA-2B", "2B", 0.5958, 0.7628, 65.23, (0.7616, 0.7012, 0.6452, 0.5908), 0.7447, 0.1914, 43.24),
    PaperRow("Mini-InternVL-DA-4B", "4B", 0.5821, 0.7296, 63.97, (0.7642, 0.7032, 0.6463, 0.5914), 0.7427, 0.1976, 42.16),
    PaperRow("Mini-InternVL-4B, no adaptation", "4B", 0.3051, 0.0, 54.45, (0.2405, 0.0801, 0.0252, 0.0084), 0.1927,
             0.0018, 34.30),
    PaperRow("InternVL2-Llama3-76B, no adaptation", "76B", 0.2963, 0.0, 52.50, (0.2100, 0.0884, 0.0249, 0.0078),
             0.1848, 0.0001, 34.22),
    PaperRow("LLaMA-Adapter-v2 baseline", "7B", 0.3284),
)


def language_score(bleu: tuple[float, ...] | list[float], rouge_l: float, cider: float) -> float:
    return sum(bleu) / 12 + rouge_l / 3 + cider / 30


def final_score(accuracy: float, judge: float, language: float, match: float) -> float:
    """The official weights; judge and match on 0..100, accuracy and language on 0..1."""
    return (WEIGHTS["judge"] * judge / 100 + WEIGHTS["language"] * language + WEIGHTS["match"] * match / 100
            + WEIGHTS["accuracy"] * accuracy)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class Scored:
    """GT items that passed the graph gating, with their answers, per metric."""

    accuracy: list[tuple[GtItem, str]] = field(default_factory=list)
    judge: list[tuple[GtItem, str]] = field(default_factory=list)
    language: list[tuple[GtItem, str]] = field(default_factory=list)
    match: list[tuple[GtItem, str]] = field(default_factory=list)
    gated: list[GtItem] = field(default_factory=list)

    @property
    def gated_out(self) -> int:
        return len(self.gated)

    def subset(self, keep: Callable[[GtItem], bool]) -> Scored:
        """The items of some frames only (gating is per frame, so this is exactly those frames' scoring)."""
        buckets = ([(item, answer) for item, answer in bucket if keep(item)]
                   for bucket in (self.accuracy, self.judge, self.language, self.match))
        return Scored(*buckets, [item for item in self.gated if keep(item)])


@dataclass(frozen=True)
class Ratings:
    """Judge ratings (0..100) by item id, for the judged open questions and the match items."""

    judge: dict[str, float] = field(default_factory=dict)
    match: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def gate(items: list[GtItem], answers: dict[str, str], issues: InputIssues) -> Scored:
    """A frame's first QA is always scored and its matched GT points form the frame's graph; a later QA is
    scored only if every point of its question is in the graph. Missing answers are empty (wrong)."""
    scored, graph = Scored(), []
    for item in items:
        answer = answers.get(item.id, "")
        if item.index == 0:
            graph, _ = match_result(answer, item.answer)
        elif not in_graph(item.question, graph):
            scored.gated.append(item)
            continue
        if (item.index == 0 or TAG_MATCH in item.tags) and has_malformed_coordinates(answer):
            issues.add("malformed_coordinates", item.id)
        for tag, bucket in ((TAG_ACCURACY, scored.accuracy), (TAG_JUDGE, scored.judge),
                            (TAG_LANGUAGE, scored.language), (TAG_MATCH, scored.match)):
            if tag in item.tags:
                bucket.append((item, answer))
    return scored


def judge_ratings(judge: Judge, pairs: list[tuple[GtItem, str]], answers: dict[str, str],
                  issues: InputIssues) -> list[float]:
    """Ratings 0..100; a missing prediction scores 0 without a call, a reply without a number scores 0."""
    asked = [(answer, item.answer) for item, answer in pairs if item.id in answers]
    replies = iter(judge.rate_all(asked))
    ratings = []
    for item, _ in pairs:
        rating = next(replies) if item.id in answers else 0.0
        if rating is None:
            issues.add("judge_reply_without_rating", item.id)
        ratings.append(rating or 0.0)
    return ratings


def rate(judge: Judge, scored: Scored, answers: dict[str, str], issues: InputIssues) -> Ratings:
    """Every judged item rated once; a judge failure leaves no ratings and its error."""
    try:
        by_id = [{item.id: rating for (item, _), rating in zip(pairs, judge_ratings(judge, pairs, answers, issues),
                                                                strict=True)}
                 for pairs in (scored.judge, scored.match)]
    except JudgeError as error:
        return Ratings(error=str(error))
    return Ratings(*by_id)


def metrics(scored: Scored, ratings: Ratings | None, total: int) -> dict:
    """All scores of a set of gated items; the judge parts are None without usable ratings."""
    accuracy = mean([float(answer == item.answer) for item, answer in scored.accuracy])
    language = (language_scores([a for _, a in scored.language], [item.answer for item, _ in scored.language])
                if scored.language else None)
    match_f1 = mean([match_result(answer, item.answer)[1] * 100 for item, answer in scored.match])
    judge_open, judge_match = None, None
    if ratings is not None and ratings.error is None:
        judge_open = mean([ratings.judge[item.id] for item, _ in scored.judge])
        judge_match = mean([ratings.match[item.id] for item, _ in scored.match])
    judge_error = None if ratings is None else ratings.error
    return summarize(accuracy, language, match_f1, judge_open, judge_match, judge_error, scored, total)


def condition_counts(items: Iterable[GtItem]) -> dict[str, int]:
    """Items per recording condition, conditions in name order."""
    return dict(sorted(Counter(item.condition for item in items).items()))


def evaluate(items: list[GtItem], answers: dict[str, str], issues: InputIssues, judge: Judge | None = None) -> dict:
    """All scores of one prediction set, overall and per condition (`by_condition`); the judge parts are None
    without a usable judge."""
    scored = gate(items, answers, issues)
    ratings = None if judge is None else rate(judge, scored, answers, issues)
    scores = metrics(scored, ratings, len(items))
    scores["by_condition"] = {
        condition: metrics(scored.subset(lambda item, condition=condition: item.condition == condition), ratings, count)
        for condition, count in condition_counts(items).items()}
    return scores


def score_predictions(items: list[GtItem], entries: Iterable, issues: InputIssues, judge: Judge | None = None) -> dict:
    """Prediction entries ({id, question, answer}) checked against the GT ids, then scored."""
    return evaluate(items, collect_answers(entries, {item.id for item in items}, issues), issues, judge)


def summarize(accuracy: float | None, language: dict | None, match_f1: float | None, judge_open: float | None,
              judge_match: float | None, judge_error: str | None, scored: Scored, total: int) -> dict:
    lang = None if language is None else language_score([language[k] for k in LANGUAGE_KEYS[:4]],
                                                        language["ROUGE_L"], language["CIDEr"])
    match = None if match_f1 is None or judge_match is None else (match_f1 + judge_match) / 2
    parts = (accuracy, judge_open, lang, match)
    final = None if None in parts else final_score(accuracy, judge_open, lang, match)
    judge_free = None if None in (accuracy, lang, match_f1) else final_score(accuracy, 0.0, lang, match_f1 / 2)
    return {
        "accuracy": accuracy,
        "judge": judge_open,
        "language": language,
        "language_score": lang,
        "match_f1": match_f1,
        "match_judge": judge_match,
        "match": match,
        "final": final,
        "judge_free_final": judge_free,
        "terms": {
            "judge": None if judge_open is None else WEIGHTS["judge"] * judge_open / 100,
            "language": None if lang is None else WEIGHTS["language"] * lang,
            "match": None if match is None else WEIGHTS["match"] * match / 100,
            "match_f1_half": None if match_f1 is None else WEIGHTS["match"] * match_f1 / 2 / 100,
            "accuracy": None if accuracy is None else WEIGHTS["accuracy"] * accuracy,
        },
        "judge_error": judge_error,
        "items": {"total": total, "accuracy": len(scored.accuracy), "judge": len(scored.judge),
                  "language": len(scored.language), "match": len(scored.match), "gated_out": scored.gated_out},
    }
