"""Write a score: scores.json, report.md (the paper's rows beside ours, then one row per condition) and
subscores.png."""

from __future__ import annotations

import json
from pathlib import Path

from .predictions import InputIssues
from .score import PAPER_TABLE, PaperRow

METRIC_COLUMNS = ("Acc", "Judge", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE_L", "CIDEr", "Match", "Final")
COLUMNS = ("Model", "Params", *METRIC_COLUMNS)
# Per condition, the judge-free figures too: without a judge they are the only complete ones.
CONDITION_COLUMNS = ("Condition", "Items", *METRIC_COLUMNS, "Match F1", "Judge-free final")
OVERALL = "all"
MISSING = "—"


def cell(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def paper_cells(row: PaperRow) -> list[str]:
    bleu = row.bleu or (None,) * 4
    return [row.model, row.params, cell(row.accuracy), cell(row.judge, 2), *map(cell, bleu), cell(row.rouge_l),
            cell(row.cider), cell(row.match, 2), cell(row.final)]


def metric_cells(scores: dict) -> list[str]:
    """The METRIC_COLUMNS cells of one score dict (overall or one condition's)."""
    language = scores["language"] or {}
    bleu = [language.get(f"Bleu_{n}") for n in range(1, 5)]
    return [cell(scores["accuracy"]), cell(scores["judge"], 2), *map(cell, bleu), cell(language.get("ROUGE_L")),
            cell(language.get("CIDEr")), cell(scores["match"], 2), cell(scores["final"])]


def our_cells(scores: dict, label: str, params: str) -> list[str]:
    return [f"**{label}**", params, *metric_cells(scores)]


def condition_cells(name: str, scores: dict) -> list[str]:
    return [name, str(scores["items"]["total"]), *metric_cells(scores), cell(scores["match_f1"], 2),
            cell(scores["judge_free_final"])]


def condition_rows(scores: dict) -> list[list[str]]:
    """The overall row, then one row per condition (CONDITION_COLUMNS)."""
    by_condition = scores.get("by_condition") or {}
    return [condition_cells(OVERALL, scores), *(condition_cells(name, s) for name, s in by_condition.items())]


def table(header: tuple[str, ...] | list[str], rows: list) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(row) + " |" for row in (header, ("---",) * len(header), *rows)]


def markdown(scores: dict, issues: InputIssues, label: str, params: str) -> str:
    lines = ["# DriveLM evaluation", "", "Paper rows: Mini-InternVL (arXiv 2410.16261) Table 4, "
             "DriveLM-nuScenes v1.1 val. Ours: this run.", ""]
    lines += table(COLUMNS, [*map(paper_cells, PAPER_TABLE), our_cells(scores, label, params)])
    lines += ["", "## Per condition", "", "Frames without a recorded condition count as clear.", ""]
    lines += table(CONDITION_COLUMNS, condition_rows(scores))
    terms = scores["terms"]
    lines += ["", "## Final score terms (official weights)", "",
              f"- judge 0.4 x Judge/100: {cell(terms['judge'])}",
              f"- language 0.2 x Lang: {cell(terms['language'])} (Lang = {cell(scores['language_score'])})",
              f"- match 0.2 x Match/100: {cell(terms['match'])} (match F1 {cell(scores['match_f1'], 2)}, "
              f"judge on match items {cell(scores['match_judge'], 2)})",
              f"- accuracy 0.2 x Acc: {cell(terms['accuracy'])}",
              f"- **final**: {cell(scores['final'])}; judge-free final (judge ratings counted as 0, a lower bound): "
              f"{cell(scores['judge_free_final'])}"]
    if scores["judge_error"]:
        lines += ["", f"**Judge error**: {scores['judge_error']}; judge parts are missing."]
    lines += ["", "## Items and input issues", "", f"- scored items: {scores['items']}"]
    lines += [f"- {kind}: {count} (e.g. {', '.join(issues.examples[kind])})" for kind, count in issues.counts.items()]
    return "\n".join(lines) + "\n"


def bar_chart(scores: dict, path: Path) -> None:
    """Sub-scores on 0..1 (judge and match divided by 100); missing ones are labelled n/a."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    language = scores["language"] or {}
    per_100 = {"Match F1": scores["match_f1"], "Judge": scores["judge"], "Match": scores["match"]}
    values = {"Accuracy": scores["accuracy"], **{f"BLEU-{n}": language.get(f"Bleu_{n}") for n in range(1, 5)},
              "ROUGE_L": language.get("ROUGE_L"), "CIDEr": language.get("CIDEr"), "Lang": scores["language_score"],
              **{name: None if v is None else v / 100 for name, v in per_100.items()},
              "Final": scores["final"], "Judge-free final": scores["judge_free_final"]}
    figure, axes = plt.subplots(figsize=(10, 4))
    bars = axes.bar(list(values), [v or 0.0 for v in values.values()], color="tab:blue")
    axes.bar_label(bars, labels=[cell(v, 3) if v is not None else "n/a" for v in values.values()], fontsize=8)
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("score (0..1)")
    axes.set_title("DriveLM sub-scores (Judge and Match / 100)")
    axes.tick_params(axis="x", labelrotation=45)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(scores: dict, issues: InputIssues, out_dir: str | Path, label: str = "ours", params: str = ""
                 ) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "scores.json", out / "report.md", out / "subscores.png"]
    document = {**scores, "input_issues": {"counts": issues.counts, "examples": issues.examples}}
    paths[0].write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(scores, issues, label, params), encoding="utf-8")
    bar_chart(scores, paths[2])
    return paths
