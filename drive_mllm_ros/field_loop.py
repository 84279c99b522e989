"""`drive-mllm field-loop --student CKPT --out DIR`: the field loop of issue 9 as one command, on synthetic data.

1. Gate suite: a held-out world of clear and night scenes, every scenario in each (`world --condition clear night`),
   `eval prepare`.
2. Field data: night scenes of another seed as bags (`convert-nuscenes`), replayed through the node with hard-case
   recording on; the node keeps the frames it struggles with.
3. `drive-mllm label --ground-truth`: the kept frames take the night world's true QA.
4. Two candidates, trained side by side, each with `drive-mllm train` from the student: its vision on object maps of
   the labelled night frames (config/train/field_vision.yaml), checked on labelled scenes held out of it (the share
   of frames whose speed class it reads; retrained with the next seed below --min-speed-reading), then its answers
   with that vision frozen (config/train/field_adapt.yaml), the accuracy questions repeated (--first-weight). One
   mixes replay of the student's clear-day training data (--replay-json, else the recipe's training world
   regenerated); the other trains on the night frames only, to show that the gate catches forgetting.
5. `drive-mllm gate --target night`: each candidate against the student.
6. DIR/field_loop.md (and field_loop.json): the steps with counts and wall times, both gate decisions, the student
   before and after per condition.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .demo import check_environment, embedded_world, embedded_world_size, run_command, serve_bag, world_bags
from .evaluation import gate
from .evaluation.testset import ANSWER_BUDGET, key_frames, load_json
from .hard_case_store import MANIFEST
from .label import OUT_JSON
from .paths import embedded_model_dir, share_dir
from .ros_env import isolate_ros
from .student_recipe import COMMAND_THREADS, TRAIN_SEED, drive_mllm, polish_filter
from .student_recipe import run_command as recipe_command
from .train.trainer import EXPORT_FOLDER

WHO = "field-loop"
SUITE_SEED, FIELD_SEED = 9301, 9401  # held out: the recipe trains on seed 1 and evaluates on 9001
TARGET, DAYTIME = "night", "clear"
VISION_CONFIG = Path("config") / "train" / "field_vision.yaml"
ADAPT_CONFIG = Path("config") / "train" / "field_adapt.yaml"
CANDIDATES = {"replay": "adapted with replay", "night_only": "night frames only"}
STEPS = 6
VISION_TRAIN_FILE, VISION_CHECK_FILE = "vision_train.json", "vision_check.json"  # beside the labelled file
SPEED_READING = "eval_speed_frame_right"  # train/object_maps.py: held-out frames whose views name the speed class


@dataclass
class StepRecord:
    title: str
    made: str = ""
    seconds: float = 0.0


@dataclass
class Candidate:
    model: Path  # the servable checkpoint
    speed_readings: list[float | None]  # per vision run, on the check frames (None: not checked)


@contextmanager
def step(steps: list[StepRecord], title: str) -> Iterator[StepRecord]:
    """Announce a step, time it and keep what it made (`record.made`) for the report."""
    print(f"{WHO}: step {len(steps) + 1}/{STEPS}: {title}", flush=True)
    record, started = StepRecord(title), time.monotonic()
    yield record
    record.seconds = time.monotonic() - started
    steps.append(record)
    print(f"{WHO}: step {len(steps)}/{STEPS} done in {record.seconds:.0f} s: {record.made}", flush=True)


# ---------------------------------------------------------------- counts


def frames_of(drivelm: Path) -> list[dict]:
    return [frame for _, _, frame in key_frames(load_json(drivelm, "DriveLM JSON"), f"DriveLM JSON '{drivelm}'")]


def qa_count(frames: list[dict]) -> int:
    return sum(len(items) for frame in frames for items in (frame.get("QA") or {}).values())


def per_condition(frames: list[dict]) -> str:
    counts = Counter(frame.get("condition", DAYTIME) for frame in frames)
    return ", ".join(f"{count} {condition}" for condition, count in sorted(counts.items()))


def kept_frames(hard_cases: Path) -> list[dict]:
    manifest = hard_cases / MANIFEST
    return [json.loads(line) for line in manifest.read_text().splitlines() if line] if manifest.is_file() else []


def training_data_line(checkpoint: Path) -> str:
    """The data summary `drive-mllm train` writes into the exported model's card."""
    card = (checkpoint / "README.md").read_text().split("## Data\n", 1)
    return card[1].split("\n", 1)[0] if len(card) == 2 else "see the model card"


def candidate_made(args: argparse.Namespace, name: str, candidate: Candidate, sources: dict[str, Path]) -> str:
    readings = ", ".join(share(reading) for reading in candidate.speed_readings)
    return (f"{CANDIDATES[name]}: {args.vision_steps} object-map steps x {len(candidate.speed_readings)} (speed read on "
            f"the check frames: {readings}), then {training_made(candidate.model, args.steps, sources)} -> "
            f"`adapt/{name}/model`")


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def training_made(checkpoint: Path, steps: int, sources: dict[str, Path]) -> str:
    """'S steps on N samples (A labelled night, B replay)', read from the data summary (per file when several)."""
    line = training_data_line(checkpoint)
    parts = [f"{found[1]} {name}" for name, path in sources.items()
             if (found := re.search(re.escape(str(path)) + r" (\d+)", line))]
    return f"{steps} steps on {line.split(' (', 1)[0]}" + (f" ({', '.join(parts)})" if parts else "")


# ---------------------------------------------------------------- steps


def build_suite(args: argparse.Namespace, out: Path) -> Path:
    """Clear and night scenes of a held-out seed, prepared as the gate's suite folder."""
    drivelm = embedded_world(out, args.suite_seed, args.duration, args.suite_scenes, (DAYTIME, TARGET), WHO)
    run_command(["eval", "prepare", "--drivelm", str(drivelm), "--out", str(drivelm.parent / gate.SUITE_TEST_FILE)],
                WHO)
    return drivelm.parent


def record_hard_cases(args: argparse.Namespace, out: Path) -> tuple[Path, Path]:
    """Night bags through the node with hard-case recording on; (hard-case folder, the night world's DriveLM JSON)."""
    drivelm = embedded_world(out / "world", args.field_seed, args.duration, args.field_scenes, (TARGET,), WHO)
    bags = world_bags(out / "world", out / "bags", WHO)
    hard_cases = out / "hard_cases"
    parameters = {**embedded_world_size(), "hard_cases.enabled": True, "hard_cases.dir": str(hard_cases),
                  "hard_cases.min_confidence": float(args.min_confidence),
                  "hard_cases.max_per_hour": args.max_per_hour}
    serve_bag(bags, str(args.student), drivelm, out, args.answer_timeout, parameters)
    if not kept_frames(hard_cases):
        raise RuntimeError(f"the node kept no frame in {hard_cases} (see {out / 'node.log'}); raise --min-confidence "
                           "or add --field-scenes")
    return hard_cases, drivelm


def label_frames(hard_cases: Path, truth: Path, out: Path) -> Path:
    run_command(["label", "--dataset", str(hard_cases), "--ground-truth", str(truth), "--out", str(out)], WHO)
    return out / OUT_JSON


def replay_data(args: argparse.Namespace, out: Path) -> Path:
    """The student's clear-day training data: --replay-json, else the recipe's training seed rendered again."""
    if args.replay_json:
        return args.replay_json
    return embedded_world(out, TRAIN_SEED, args.duration, args.replay_scenes, (DAYTIME,), WHO)


def replay_weight(ratio: float, labelled: int, replay: int) -> float:
    """Repeats per replay sample so that replay gives `ratio` samples per labelled sample (frames carry alike QA)."""
    if replay < 1:
        raise ValueError("replay data: expected a DriveLM JSON with key frames, got none")
    return ratio * labelled / replay


def split_check_scenes(labelled: Path, scenes: int) -> tuple[Path, Path | None]:
    """(training file, check file): `scenes` whole scenes spread over the labelled file held out beside it, on which
    each candidate's vision is checked before its answers are trained; (labelled, None) when too few scenes."""
    data = load_json(labelled, "labelled DriveLM JSON")
    names = list(data)
    if scenes < 1 or len(names) <= scenes:
        return labelled, None
    held = set(names[:: len(names) // scenes][:scenes])
    train_file, check_file = labelled.with_name(VISION_TRAIN_FILE), labelled.with_name(VISION_CHECK_FILE)
    train_file.write_text(json.dumps({name: scene for name, scene in data.items() if name not in held}))
    check_file.write_text(json.dumps({name: scene for name, scene in data.items() if name in held}))
    return train_file, check_file


def speed_reading(vision: Path) -> float | None:
    """The share of check frames whose ego speed class the vision's views name together (train's all_results.json;
    None when the run had no check frames)."""
    return json.loads((vision / "all_results.json").read_text()).get(SPEED_READING)


def train_vision(args: argparse.Namespace, labelled: Path, replayed: list[dict], check: Path | None, out: Path,
                 log: Path) -> tuple[Path, list[float | None]]:
    """The candidate's vision on object maps (field_vision.yaml), retried with the next seed while it reads the check
    frames' speed below --min-speed-reading: whether a run of this size learns the night cue varies from seed to
    seed (docs/FIELD_LOOP.md, section 8). The best run's checkpoint and every run's reading."""
    runs: dict[Path, float | None] = {}
    for attempt in range(args.vision_tries):
        folder = out.with_name(f"{out.name}_vision" + (f"_{attempt + 1}" if attempt else ""))
        train(VISION_CONFIG, [f"model.path={args.student}", f"data.drivelm_json={labelled}",
                              f"training.output_dir={folder}", f"training.max_steps={args.vision_steps}",
                              f"training.seed={attempt}", *([f"data.eval_json={check}"] if check else []),
                              "data.extra_drivelm_json=" + json.dumps(replayed)], log)
        runs[folder] = speed_reading(folder)
        print(f"{WHO}: {folder.name} reads the speed class of {share(runs[folder])} of the check frames", flush=True)
        if runs[folder] is None or runs[folder] >= args.min_speed_reading:  # unchecked, or reads it
            break
    best = max(runs, key=lambda folder: runs[folder] or 0.0)
    return best / EXPORT_FOLDER, list(runs.values())


def adapt(args: argparse.Namespace, labelled: Path, vision_data: tuple[Path, Path | None],
          replay: tuple[Path, float] | None, out: Path) -> Candidate:
    """Two `drive-mllm train` stages from the student (log: OUT.log); the servable checkpoint and the vision's check
    readings. First the vision on object maps of the labelled frames: what the night hides is the ego's speed, which
    the answers cannot learn through a vision that does not see it (docs/FIELD_LOOP.md, sections 5-8). Then the
    answers, the vision frozen (field_adapt.yaml), the accuracy questions repeated as in the student's own recipe:
    ~4 of ~20 QA a frame, they are barely learned otherwise."""
    log = out.with_name(f"{out.name}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    sources = [(labelled, 1.0), *([replay] if replay else [])]
    replayed = [{"json": str(path), "weight": weight} for path, weight in sources[1:]]
    vision_train, check = vision_data
    vision, readings = train_vision(args, vision_train, replayed, check, out, log)
    repeated = [{"json": str(path), "weight": args.first_weight * weight, "question_filter": polish_filter()}
                for path, weight in sources]
    train(ADAPT_CONFIG, [f"model.path={vision}", f"data.drivelm_json={labelled}",
                         f"training.output_dir={out}", f"training.max_steps={args.steps}",
                         "data.extra_drivelm_json=" + json.dumps(repeated + replayed), *args.set], log)
    return Candidate(out / EXPORT_FOLDER, readings)


def train(config: Path, overrides: list[str], log: Path) -> None:
    """A `drive-mllm train` subprocess (one thread), its output in `log`: the two candidates train side by side."""
    try:
        recipe_command(drive_mllm("train", "--config", str(share_dir() / config), *overrides), log)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"drive-mllm train failed (exit status {error.returncode}); its output: {log}") from error


def run_gate(args: argparse.Namespace, candidate: Path, suite: Path, out: Path) -> gate.Decision:
    """`drive-mllm gate` in process, for its decision (its exit status says rejected as 1)."""
    argv = ["--current", str(args.student), "--candidate", str(candidate), "--suite", str(suite), "--target", TARGET,
            "--out", str(out), "--max-new-tokens", str(args.max_new_tokens)]
    print(f"{WHO}: drive-mllm gate {' '.join(argv)}", flush=True)
    return gate.run(gate.parser().parse_args(argv))


# ---------------------------------------------------------------- report


def change(record: dict, condition: str) -> float | None:
    check = next((c for c in record["checks"] if c["condition"] == condition), None)
    if check is None or check["current"] is None or check["candidate"] is None:
        return None
    return check["candidate"] - check["current"]


def goals(records: dict[str, dict]) -> list[str]:
    """The issue's goals for the demonstration, as measured."""
    replay, night_only = records["replay"], records["night_only"]
    forgot = [c["condition"] for c in night_only["checks"] if not c["target"] and not c["passed"]]
    rule = replay["rule"]
    return [
        f"- replay-adapted accepted ({TARGET} {rule['metric']} +{rule['min_gain']:.2f} or more, no condition down by "
        f"more than {rule['max_regression']:.2f}): **{'yes' if replay['accepted'] else 'no'}** ({TARGET} "
        f"{signed(change(replay, TARGET))}, {DAYTIME} {signed(change(replay, DAYTIME))})",
        f"- night-only rejected for forgetting daytime: **{'yes' if forgot else 'no'}** ({DAYTIME} "
        f"{signed(change(night_only, DAYTIME))}; decision {night_only['decision']})",
    ]


def signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def value_cell(scores: dict, metric: str) -> str:
    value = gate.metric_value(scores, metric)
    return "n/a" if value is None else f"{value:.4f}"


def before_after(records: dict[str, dict]) -> list[str]:
    """Every gate metric per condition: the student, then each candidate (all on 0..1)."""
    student = records["replay"]["by_condition"]["current"]
    rows = ["| condition | metric | student | " + " | ".join(CANDIDATES.values()) + " |", "|---|---|---|---|---|"]
    for condition in sorted(student):
        for metric in gate.GATE_METRICS:
            cells = [value_cell(records[name]["by_condition"]["candidate"][condition], metric) for name in CANDIDATES]
            rows.append(f"| {condition} | {metric} | {value_cell(student[condition], metric)} | {' | '.join(cells)} |")
    return rows


def gate_section(name: str, record: dict) -> list[str]:
    folder = f"gate/{name}"
    lines = [f"### {CANDIDATES[name]}: {record['decision'].upper()}", ""]
    lines += [f"- {reason}" for reason in record["reasons"]]
    return lines + ["", f"Report: [{folder}/gate.md]({folder}/gate.md), record `{folder}/gate.json`", "",
                    f"![{name}]({folder}/gate.png)", ""]


def report(args: argparse.Namespace, steps: list[StepRecord], records: dict[str, dict], seconds: float) -> str:
    lines = [f"# Field loop: `{args.student}` adapted to {TARGET}", "",
             f"`drive-mllm field-loop --student {args.student} --out {args.out}`: {seconds / 60:.1f} min on this "
             "machine.", "", "## Steps", "", "| # | step | what it made | wall time |", "|---|---|---|---|"]
    lines += [f"| {i} | {s.title} | {s.made} | {s.seconds:.0f} s |" for i, s in enumerate(steps, 1)]
    lines += ["", "Training data (`drive-mllm train`'s summary in each candidate's model card):", ""]
    lines += [f"- {CANDIDATES[name]}: {training_data_line(args.out / 'adapt' / name / EXPORT_FOLDER)}"
              for name in CANDIDATES]
    lines += ["", "## Gate decisions", ""]
    for name, record in records.items():
        lines += gate_section(name, record)
    lines += ["## The student before and after, per condition (suite, 0..1)", "", *before_after(records), "",
              "## Issue goals (measured)", "", *goals(records), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drive-mllm field-loop", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--student", type=Path, help="checkpoint in service (default: the embedded models/student)")
    p.add_argument("--out", type=Path, default=Path("out/field_loop"), help="a new or empty folder for everything")
    p.add_argument("--suite-scenes", type=int, default=16,
                   help="gate suite scenes, clear and night in turn (16: ~80 accuracy items per condition)")
    p.add_argument("--field-scenes", type=int, default=80,
                   help="night scenes replayed through the node (80: ~640 key frames; 8 taught the vision nothing)")
    p.add_argument("--replay-scenes", type=int, default=80, help="clear scenes regenerated without --replay-json")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per generated scene (the recipe's: 4)")
    p.add_argument("--suite-seed", type=int, default=SUITE_SEED)
    p.add_argument("--field-seed", type=int, default=FIELD_SEED)
    p.add_argument("--replay-json", type=Path, help="the student's DriveLM training JSON (default: regenerated)")
    p.add_argument("--replay-ratio", type=float, default=1.0, help="replay samples per labelled night sample")
    p.add_argument("--vision-steps", type=int, default=6000, help="object-map steps of each candidate's vision")
    p.add_argument("--check-scenes", type=int, default=8,
                   help="labelled scenes held out of the vision stage to check its night speed reading (0: none)")
    p.add_argument("--min-speed-reading", type=float, default=0.45,
                   help="share of check frames whose speed class the vision must read, else it is retrained")
    p.add_argument("--vision-tries", type=int, default=3, help="vision runs (seeds 0, 1, ...) until one reads it")
    p.add_argument("--steps", type=int, default=1000, help="answer training steps of each candidate")
    p.add_argument("--first-weight", type=float, default=4.0,
                   help="repeats of the labelled frames' accuracy questions (behaviour, moving status, yes/no)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more drive-mllm train overrides of the answer stage (field_adapt.yaml)")
    p.add_argument("--min-confidence", type=float, default=0.9, help="node keeps answers less sure than this (0..1)")
    p.add_argument("--max-per-hour", type=int, default=1000, help="node keeps at most this many frames per hour")
    p.add_argument("--answer-timeout", type=float, default=180.0, help="s to wait for the node's answers per bag")
    p.add_argument("--max-new-tokens", type=int, default=ANSWER_BUDGET, help="answer budget in the gates")
    return p


def check_args(args: argparse.Namespace) -> None:
    """One-line errors naming the input and what was expected, before anything runs."""
    if args.student is None and not (embedded_model_dir() / "config.json").is_file():
        raise ValueError(f"--student: no embedded student in {embedded_model_dir()} yet; expected --student CKPT (a "
                         "checkpoint folder, e.g. a `drive-mllm train` export)")
    args.student = args.student or embedded_model_dir()
    gate.weights_sha256(args.student, "--student")  # a checkpoint folder with weights
    counts = {"--suite-scenes": (args.suite_scenes, 2), "--field-scenes": (args.field_scenes, 1),
              "--replay-scenes": (args.replay_scenes, 1), "--steps": (args.steps, 1),
              "--vision-steps": (args.vision_steps, 1), "--check-scenes": (args.check_scenes, 0),
              "--vision-tries": (args.vision_tries, 1),
              "--max-per-hour": (args.max_per_hour, 1), "--max-new-tokens": (args.max_new_tokens, 1)}
    for flag, (value, least) in counts.items():
        if value < least:
            raise ValueError(f"{flag}: expected at least {least}, got {value}")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise ValueError(f"--min-confidence: expected a token probability in 0..1, got {args.min_confidence}")
    if not 0.0 <= args.min_speed_reading <= 1.0:
        raise ValueError(f"--min-speed-reading: expected a share of frames in 0..1, got {args.min_speed_reading}")
    for flag, value in (("--replay-ratio", args.replay_ratio), ("--answer-timeout", args.answer_timeout),
                        ("--duration", args.duration), ("--first-weight", args.first_weight)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag}: expected a number > 0, got {value}")
    if args.replay_json and not args.replay_json.is_file():
        raise ValueError(f"--replay-json {args.replay_json}: expected the student's DriveLM v1.1 training JSON file")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ValueError(f"--out {args.out}: expected a new or empty folder (the loop writes worlds and runs there)")
    args.student, args.out = args.student.resolve(), args.out.resolve()
    args.replay_json = args.replay_json.resolve() if args.replay_json else None


def run_loop(args: argparse.Namespace) -> tuple[list[StepRecord], dict[str, dict], dict[str, list[float | None]]]:
    """The loop's steps; per candidate its gate record and its vision runs' speed readings."""
    out, steps = args.out, []
    with step(steps, f"gate suite: {DAYTIME} and {TARGET} scenes of seed {args.suite_seed}, eval prepare") as record:
        suite = build_suite(args, out / "suite")
        record.made = f"{per_condition(frames_of(suite / 'v1_1_train_nus.json'))} key frames -> `suite/drivelm`"
    with step(steps, f"field data: {TARGET} scenes of seed {args.field_seed} through the node, hard cases kept") as record:
        hard_cases, truth = record_hard_cases(args, out / "field")
        kept = kept_frames(hard_cases)
        reasons = Counter(reason for frame in kept for reason in frame["reasons"])
        record.made = (f"{len(frames_of(truth))} key frames replayed; {len(kept)} frames kept "
                       f"({', '.join(f'{n} {r}' for r, n in reasons.most_common())}) -> `field/hard_cases`")
    with step(steps, "label the kept frames with the night world's ground truth") as record:
        labelled = label_frames(hard_cases, truth, out / "field" / "labeled")
        frames = frames_of(labelled)
        record.made = (f"{len(frames)} of {len(kept)} kept frames labelled, {qa_count(frames)} QA (kept sweeps between "
                       "key frames have no ground truth) -> `field/labeled`")
    with step(steps, "adapt two candidates side by side (vision, then answers): night frames mixed with replay of "
              "the clear-day training data, and night frames only") as record:
        replay = replay_data(args, out / "replay")
        weight = replay_weight(args.replay_ratio, len(frames), len(frames_of(replay)))
        vision_data = split_check_scenes(labelled, args.check_scenes)
        with ThreadPoolExecutor(max_workers=1) as beside:  # one thread each: 2 cores here
            night_only = beside.submit(adapt, args, labelled, vision_data, None, out / "adapt" / "night_only")
            candidates = {"replay": adapt(args, labelled, vision_data, (replay, weight), out / "adapt" / "replay"),
                          "night_only": night_only.result()}
        record.made = "; ".join(candidate_made(args, name, candidate, {"labelled night": labelled, "replay": replay})
                                + (f", replay weight {weight:.3f}" if name == "replay" else "")
                                for name, candidate in candidates.items())
    records = {}
    with step(steps, f"gate each candidate against the student (target {TARGET})") as record:
        for name, candidate in candidates.items():
            run_gate(args, candidate.model, suite, out / "gate" / name)
            records[name] = json.loads((out / "gate" / name / "gate.json").read_text())
        record.made = ", ".join(f"{CANDIDATES[name]}: {r['decision'].upper()}" for name, r in records.items())
    return steps, records, {name: candidate.speed_readings for name, candidate in candidates.items()}


def write_outputs(args: argparse.Namespace, steps: list[StepRecord], records: dict[str, dict],
                  readings: dict[str, list[float | None]], seconds: float) -> Path:
    with step(steps, "write field_loop.md") as record:
        path = args.out / "field_loop.md"
        record.made = "`field_loop.md`, `field_loop.json`"
        summary = {"student": str(args.student), "decisions": {n: r["decision"] for n, r in records.items()},
                   "speed_readings": readings,
                   "seconds": seconds, "steps": [asdict(s) for s in steps + [record]]}
        (args.out / "field_loop.json").write_text(json.dumps(summary, indent=2) + "\n")
        path.write_text(report(args, steps + [record], records, seconds))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as error:
        print(f"drive-mllm field-loop: {error}", file=sys.stderr)
        return 2
    if problem := check_environment():
        print(f"drive-mllm field-loop: {problem}", file=sys.stderr)
        return 2
    import torch

    # One thread for the node, training and gates alike: the recipe's setting for a shared 2-core machine.
    os.environ["OMP_NUM_THREADS"] = COMMAND_THREADS
    torch.set_num_threads(int(COMMAND_THREADS))  # torch is loaded already (training data code comes with it)
    isolate_ros()
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        steps, records, readings = run_loop(args)
    except (RuntimeError, ValueError) as error:
        print(f"drive-mllm field-loop: {error}", file=sys.stderr)
        return 1
    path = write_outputs(args, steps, records, readings, time.monotonic() - started)
    print(f"{WHO}: done in {(time.monotonic() - started) / 60:.1f} min; report: {path}")
    return 0
