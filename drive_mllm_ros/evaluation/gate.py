"""`drive-mllm gate`: accept a candidate checkpoint only if it gains on a target condition and regresses no other.

  drive-mllm gate --current A --candidate B --suite DIR --target night --out DIR
                  [--metric accuracy] [--min-gain 0.15] [--max-regression 0.02]
                  [--image-root DIR] [--max-new-tokens N] [--device auto]

The suite is a fixed folder holding `test.json` in the challenge test format (`drive-mllm eval prepare` of a world
made with several `--condition`s) whose image paths are relative to the folder (or to `--image-root`). Both
checkpoints answer it with `eval predict`'s code and are scored with `eval score`'s, per condition. The candidate
is accepted when the target condition's metric rises by at least `--min-gain` and no other condition's falls by
more than `--max-regression` (metrics on 0..1; match F1 is divided by 100). `--out` gets gate.md (the signed-off
report), gate.json (the decision record), gate.png (the metric per condition) and each model's own eval folder
(predictions.json, scores.json, report.md). Exit status: 0 accepted, 1 rejected, 2 bad input.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import math
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from .predictions import InputIssues
from .report import CONDITION_COLUMNS, cell, condition_rows, table, write_report
from .score import condition_counts, score_predictions
from .testset import ANSWER_BUDGET, GtItem, load_test

SUITE_TEST_FILE = "test.json"
# Judge-free metrics, so that a gate never depends on a hosted judge.
GATE_METRICS = ("accuracy", "language_score", "match_f1", "judge_free_final")
PER_100 = frozenset({"match_f1"})  # reported on 0..100; the gate compares everything on 0..1
TOLERANCE = 1e-9  # a gain of exactly --min-gain passes despite float rounding
ROLES = ("current", "candidate")


@dataclass(frozen=True)
class GateRule:
    target: str
    metric: str = "accuracy"
    min_gain: float = 0.15
    max_regression: float = 0.02


@dataclass(frozen=True)
class Check:
    """One condition's comparison: the target must gain, the others must not regress."""

    condition: str
    target: bool
    current: float | None
    candidate: float | None
    passed: bool
    reason: str

    @property
    def delta(self) -> float | None:
        return None if self.current is None or self.candidate is None else self.candidate - self.current


@dataclass(frozen=True)
class Decision:
    accepted: bool
    checks: tuple[Check, ...]

    @property
    def reasons(self) -> list[str]:
        return [check.reason for check in self.checks]


def metric_value(scores: dict, metric: str) -> float | None:
    """A metric of one score dict on 0..1 (None when nothing was scored for it)."""
    value = scores.get(metric)
    return None if value is None else value / 100 if metric in PER_100 else float(value)


def target_check(rule: GateRule, current: float | None, candidate: float | None) -> Check:
    name = f"{rule.target} (target)"
    if current is None or candidate is None:
        raise ValueError(f"--metric {rule.metric}: nothing of that kind is scored in the target condition "
                         f"'{rule.target}'; expected a metric with items there, e.g. accuracy")
    gain = candidate - current
    passed = gain >= rule.min_gain - TOLERANCE
    verdict = ">=" if passed else "<"
    return Check(rule.target, True, current, candidate, passed, f"{name}: {rule.metric} {current:.4f} -> "
                 f"{candidate:.4f}, gain {gain:+.4f} {verdict} required {rule.min_gain:+.4f}")


def regression_check(rule: GateRule, condition: str, current: float | None, candidate: float | None) -> Check:
    if current is None or candidate is None:
        return Check(condition, False, current, candidate, True, f"{condition}: {rule.metric} not scored, no check")
    change = candidate - current
    passed = -change <= rule.max_regression + TOLERANCE
    verdict = "within" if passed else "over"
    return Check(condition, False, current, candidate, passed, f"{condition}: {rule.metric} {current:.4f} -> "
                 f"{candidate:.4f}, change {change:+.4f}, {verdict} the allowed regression {rule.max_regression:.4f}")


def check_target(target: str, conditions: dict) -> None:
    if target not in conditions:
        raise ValueError(f"--target {target}: the suite has no frames of that condition; it has {sorted(conditions)}")


def decide(current: dict[str, dict], candidate: dict[str, dict], rule: GateRule) -> Decision:
    """The gate, pure: per-condition scores of both models (`by_condition` of `evaluate`) -> decision and reasons."""
    if rule.metric not in GATE_METRICS:
        raise ValueError(f"--metric: expected one of {list(GATE_METRICS)}, got '{rule.metric}'")
    if set(current) != set(candidate):
        raise ValueError(f"scores: both models must be scored on the same conditions, got {sorted(current)} and "
                         f"{sorted(candidate)}")
    check_target(rule.target, current)

    def values(condition: str) -> tuple[float | None, float | None]:
        return metric_value(current[condition], rule.metric), metric_value(candidate[condition], rule.metric)

    checks = [target_check(rule, *values(rule.target))]
    checks += [regression_check(rule, c, *values(c)) for c in sorted(current) if c != rule.target]
    return Decision(all(check.passed for check in checks), tuple(checks))


# ---------------------------------------------------------------- inputs


def weights_sha256(checkpoint: Path, flag: str) -> dict[str, str]:
    """File name -> sha256 of each safetensors weight file of a checkpoint folder."""
    files = sorted(checkpoint.glob("*.safetensors")) if checkpoint.is_dir() else []
    if not files:
        raise ValueError(f"{flag} {checkpoint}: expected a checkpoint folder with *.safetensors weights "
                         "(native InternVL layout, e.g. from 'drive-mllm train' or 'drive-mllm tiny-model')")
    return {path.name: file_sha256(path) for path in files}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def suite_items(suite: Path) -> list[GtItem]:
    test = suite / SUITE_TEST_FILE
    if not test.is_file():
        raise ValueError(f"--suite {suite}: expected a folder with {SUITE_TEST_FILE} (written by 'drive-mllm eval "
                         "prepare' from a world with several --condition values) and its images")
    return load_test(test)


def check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--min-gain", args.min_gain), ("--max-regression", args.max_regression)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{flag}: expected a metric difference in 0..1, got {value}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens: expected at least 1, got {args.max_new_tokens}")


# ---------------------------------------------------------------- evaluation


def evaluate_checkpoint(role: str, checkpoint: Path, suite: Path, items: list[GtItem], args: argparse.Namespace,
                        out: Path) -> dict:
    """One checkpoint's answers to the suite, scored overall and per condition; its eval folder under `out`."""
    from ..model import ModelLoadError
    from .predict import load_for_prediction, predict, write_predictions

    try:
        model = load_for_prediction(checkpoint, args.device)
    except ModelLoadError as error:
        raise ValueError(f"--{role} {checkpoint}: {error}") from None
    predictions = predict(model, suite / SUITE_TEST_FILE, args.image_root, max_new_tokens=args.max_new_tokens)
    del model  # free it before the other checkpoint loads
    folder = out / role
    write_predictions(predictions, folder / "predictions.json")
    issues = InputIssues()
    scores = score_predictions(items, predictions, issues)
    write_report(scores, issues, folder, role)
    return scores


# ---------------------------------------------------------------- report


def decision_word(decision: Decision) -> str:
    return "ACCEPTED" if decision.accepted else "REJECTED"


def gate_record(args: argparse.Namespace, rule: GateRule, decision: Decision, scores: dict[str, dict],
                weights: dict[str, dict[str, str]], signed: str) -> dict:
    """What gate.json holds: inputs with digests, the rule, the decision with its checks, when and by whom."""
    test = args.suite / SUITE_TEST_FILE
    return {
        "decision": decision_word(decision).lower(), "accepted": decision.accepted, "reasons": decision.reasons,
        "rule": asdict(rule), "checks": [asdict(check) for check in decision.checks],
        "checkpoints": {role: {"path": str(getattr(args, role)), "weights_sha256": weights[role]} for role in ROLES},
        "suite": {"path": str(args.suite), "test_sha256": file_sha256(test)},
        "by_condition": {role: scores[role]["by_condition"] for role in ROLES},
        "signed_off": signed,
    }


def markdown(record: dict, decision: Decision, scores: dict[str, dict], record_sha256: str) -> str:
    rule = record["rule"]
    lines = [f"# Checkpoint gate: {decision_word(decision)}", "",
             f"Candidate `{record['checkpoints']['candidate']['path']}` against current "
             f"`{record['checkpoints']['current']['path']}` on the suite `{record['suite']['path']}`.", "",
             "## Rule", "",
             f"- metric: {rule['metric']} (0..1); target condition: **{rule['target']}**",
             f"- the target must gain at least {rule['min_gain']:.4f}",
             f"- no other condition may fall by more than {rule['max_regression']:.4f}", "",
             f"## Decision: {decision_word(decision)}", ""]
    lines += [f"- {'pass' if check.passed else 'FAIL'}: {check.reason}" for check in decision.checks]
    lines += ["", f"## {rule['metric']} per condition", ""]
    lines += table(("Condition", "Current", "Candidate", "Change", "Check"),
                   [[check.condition + (" (target)" if check.target else ""), cell(check.current),
                     cell(check.candidate), cell(check.delta), "pass" if check.passed else "FAIL"]
                    for check in decision.checks])
    lines += ["", "## All metrics per condition", ""]
    lines += table(("Model", *CONDITION_COLUMNS), [[role, *row] for role in ROLES for row in condition_rows(scores[role])])
    lines += ["", "![metric per condition](gate.png)", "", "## Inputs", ""]
    lines += table(("", "path", "sha256"), [
        *[[role, f"`{info['path']}`", "<br>".join(f"{name}: `{digest}`" for name, digest in info["weights_sha256"]
                                                  .items())] for role, info in record["checkpoints"].items()],
        ["suite", f"`{record['suite']['path']}/{SUITE_TEST_FILE}`", f"`{record['suite']['test_sha256']}`"]])
    lines += ["", "Each model's full evaluation: `current/report.md`, `candidate/report.md`.", "", "---", "",
              f"Signed off: {record['signed_off']}; decision record `gate.json` sha256 `{record_sha256}`."]
    return "\n".join(lines) + "\n"


def chart(decision: Decision, rule: GateRule, path: Path) -> None:
    """Bars per condition, current beside candidate, with the level the target had to reach."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [check.condition for check in decision.checks]
    figure, axes = plt.subplots(figsize=(max(5, 1.6 * len(names) + 2), 4))
    for offset, role, colour in ((-0.2, "current", "tab:gray"), (0.2, "candidate", "tab:blue")):
        values = [getattr(check, role) for check in decision.checks]
        bars = axes.bar([i + offset for i in range(len(names))], [v or 0.0 for v in values], 0.4, label=role,
                        color=colour)
        axes.bar_label(bars, labels=[cell(v, 3) if v is not None else "n/a" for v in values], fontsize=8)
    target = decision.checks[0]
    axes.hlines(target.current + rule.min_gain, -0.45, 0.45, colors="tab:red", linestyles="dashed",
                label=f"required on {rule.target}")
    axes.set_xticks(range(len(names)), [f"{n}\n(target)" if n == rule.target else n for n in names])
    axes.set_ylim(0, 1.15)
    axes.set_ylabel(f"{rule.metric} (0..1)")
    axes.set_title(f"Gate {decision_word(decision)}: {rule.metric} per condition")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def operator() -> str:
    """Who ran the gate, for the sign-off (containers may have no user name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def write_gate(args: argparse.Namespace, rule: GateRule, decision: Decision, scores: dict[str, dict],
               weights: dict[str, dict[str, str]]) -> list[Path]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    signed = f"drive-mllm gate, {now}, {operator()}@{socket.gethostname()}"
    record = gate_record(args, rule, decision, scores, weights, signed)
    paths = [out / "gate.json", out / "gate.md", out / "gate.png"]
    paths[0].write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(record, decision, scores, file_sha256(paths[0])), encoding="utf-8")
    chart(decision, rule, paths[2])
    return paths


# ---------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drive-mllm gate", description=__doc__.splitlines()[0].strip("`: "))
    p.add_argument("--current", type=Path, required=True, help="checkpoint in service (native InternVL layout)")
    p.add_argument("--candidate", type=Path, required=True, help="checkpoint that wants to replace it")
    p.add_argument("--suite", type=Path, required=True, help=f"folder with {SUITE_TEST_FILE} and its images")
    p.add_argument("--target", required=True, help="condition the candidate must improve, e.g. night")
    p.add_argument("--out", type=Path, required=True, help="folder for gate.md, gate.json, gate.png, model evals")
    p.add_argument("--metric", choices=GATE_METRICS, default="accuracy", help="compared metric (0..1)")
    p.add_argument("--min-gain", type=float, default=0.15, help="least gain on the target condition")
    p.add_argument("--max-regression", type=float, default=0.02, help="largest loss allowed on any other condition")
    p.add_argument("--image-root", type=Path, help="folder the image paths are relative to (default: --suite)")
    p.add_argument("--max-new-tokens", type=int, default=ANSWER_BUDGET)
    p.add_argument("--device", default="auto")
    return p


def run(args: argparse.Namespace) -> Decision:
    check_numbers(args)
    items = suite_items(args.suite)
    rule = GateRule(args.target, args.metric, args.min_gain, args.max_regression)
    check_target(rule.target, condition_counts(items))  # before the models run
    weights = {role: weights_sha256(getattr(args, role), f"--{role}") for role in ROLES}
    scores = {role: evaluate_checkpoint(role, getattr(args, role), args.suite, items, args, args.out) for role in ROLES}
    decision = decide(scores["current"]["by_condition"], scores["candidate"]["by_condition"], rule)
    paths = write_gate(args, rule, decision, scores, weights)
    print(f"gate {decision_word(decision)}: " + "; ".join(decision.reasons))
    print(f"wrote {', '.join(map(str, paths))}")
    return decision


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return 0 if run(args).accepted else 1
    except ValueError as error:
        print(f"drive-mllm gate: {error}", file=sys.stderr)
        return 2
