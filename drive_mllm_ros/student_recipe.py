"""`make student`: the pocket student of issue 6, from scratch, with the project's own commands.

1. `drive-mllm world` twice: training scenes (seed 1) and held-out scenes (seed 9001, used by no training run).
2. One byte-level BPE domain tokenizer trained on the training QA, shared by teacher and student (logit KD).
3. Random-init teacher and student checkpoints (224-px per_view tiles) with that tokenizer.
4. `drive-mllm train` per model: config/train/student_objects.yaml (the vision tower learns to mark objects, their
   moving status and the ego's speed and steering), then with that vision frozen student_teacher.yaml (SFT) on the
   questions those tokens answer alone ("Where is the most important object relative to the ego car?", moving
   status, ego behaviour: the first answers read from the images), then on all QA with those questions repeated:
   SFT for the teacher, student_distill.yaml (distillation from the teacher) for the student, then more distillation
   with the yes/no conflict question repeated too. Both answer multiple choice by ranking the options.
5. `drive-mllm eval prepare/predict/score` on the held-out scenes: teacher, student, student with blank images.
6. The student goes to --install (e.g. models/student, its teacher beside it in models/teacher) only when it reads
   the cameras: its accuracy is at least --min-camera-gain above the same student fed blank images. Issue 6's goal
   (0.25) is checked by test/test_student.py; the yes/no and moving-status items can be answered from the tag in the
   question, the behaviour items only from the views (their options differ in speed alone; docs/STUDENT.md, run 8).

    python -m drive_mllm_ros.student_recipe --out runs/student [--install models/student]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .drivelm import (
    Q_BEHAVIOR_OPEN,
    Q_FUTURE_CONFLICT,
    Q_IMPORTANT_OBJECTS,
    Q_MOST_IMPORTANT_DIRECTION,
    Q_MOVING_STATUS,
    Q_OBJECTS_IN_PATH,
)
from .evaluation.grounding import question_kind
from .model import parameter_count
from .paths import EMBEDDED_WORLD_SIZE
from .presets import ArchitectureSizes
from .prompt import write_checkpoint_multiple_choice
from .tiny_model import build_domain_tokenizer, write_tiny_model
from .train.data import load_json

TRAIN_SEED, HELD_OUT_SEED = 1, 9001
# One OpenMP thread: on a shared 2-core machine torch's spin-waiting threads made tiny training steps 10x slower.
COMMAND_THREADS = "1"
TILE_SIZE = 224
LISTING_WEIGHT = 12.0  # repeats of the listing questions in the listing stage's mix (the polish questions 8x)
WARMUP_LEARNING_RATE = 2.0e-3  # the mix stage after it runs at the configs' 5e-4, which keeps what it learned
TRAINING_INIT_RANGE = 0.02
TEACHER_SIZES = ArchitectureSizes(
    vision_hidden_size=96, vision_layers=2, vision_heads=4, vision_intermediate_size=288,
    text_hidden_size=192, text_layers=3, text_heads=4, text_kv_heads=2, text_intermediate_size=512,
    tie_word_embeddings=False, max_position_embeddings=2048,
)
STUDENT_SIZES = ArchitectureSizes(
    vision_hidden_size=64, vision_layers=2, vision_heads=2, vision_intermediate_size=192,
    text_hidden_size=80, text_layers=2, text_heads=4, text_kv_heads=2, text_intermediate_size=224,
    tie_word_embeddings=False, max_position_embeddings=2048,
)
EVALUATED = ("teacher", "student", "student_blank")
SCORE_KEYS = ("accuracy", "match_f1", "language_score", "judge_free_final")


def run_command(args: list[str], log: Path) -> None:
    """A project command, its output appended to `log`; a failure stops the recipe."""
    print(f"$ {' '.join(args)}", flush=True)
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(args)}\n")
        handle.flush()
        subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": COMMAND_THREADS})


def drive_mllm(*args: str) -> list[str]:
    return [sys.executable, "-m", "drive_mllm_ros.cli", *args]


def make_world(out: Path, seed: int, scenes: int, val_fraction: float, log: Path) -> Path:
    run_command(drive_mllm("world", "--out", str(out), "--scenes", str(scenes), "--seed", str(seed), "--duration",
                           "4", "--width", str(EMBEDDED_WORLD_SIZE[0]), "--height", str(EMBEDDED_WORLD_SIZE[1]), "--val-fraction", str(val_fraction)), log)
    return out / "drivelm"


def qa_texts(drivelm_json: Path) -> list[str]:
    data = load_json(drivelm_json)
    return [qa[key] for scene in data.values() for frame in scene["key_frames"].values()
            for stage in frame["QA"].values() for qa in stage for key in ("Q", "A")]


def write_initial_checkpoints(drivelm_json: Path, out: Path, vocab_size: int) -> tuple[Path, Path]:
    tokenizer = build_domain_tokenizer(qa_texts(drivelm_json), vocab_size)
    common = {"layout": "per_view", "tile_size": TILE_SIZE, "tokenizer": tokenizer, "text_init_range": TRAINING_INIT_RANGE}
    teacher = write_tiny_model(out / "teacher", seed=0, sizes=TEACHER_SIZES, **common)
    student = write_tiny_model(out / "student", seed=1, sizes=STUDENT_SIZES, **common)
    return teacher, student


def train(config: str, overrides: list[str], log: Path) -> None:
    run_command(drive_mllm("train", "--config", config, *overrides), log)


def first_questions_filter() -> str:
    """The questions whose answers the object maps teach the image tokens: where the most important object is, an
    object's moving status and the ego's behaviour (both multiple choice, the scorer's accuracy items)."""
    # Behaviour in both forms: the open answer is learned from the images first, the letter after it (run 6).
    prefixes = (Q_MOST_IMPORTANT_DIRECTION, Q_MOVING_STATUS.split("{")[0], Q_BEHAVIOR_OPEN)
    return "^(" + "|".join(re.escape(prefix).replace("\\ ", " ") for prefix in prefixes) + ")"


def keep_answers(train_json: Path, *repeats: tuple[float, str]) -> str:
    """Chosen questions repeated in the mix, (weight, question filter) each: ~3 of ~20 QA per frame, they are
    unlearned otherwise (docs/STUDENT.md, run 5)."""
    entries = ", ".join(f"{{json: '{train_json}', weight: {weight}, question_filter: '{question_filter}'}}"
                        for weight, question_filter in repeats)
    return f"data.extra_drivelm_json=[{entries}]"


def listing_filter() -> str:
    """The questions whose answers list objects by tag: the important objects and the "notice first" listing."""
    prefixes = (Q_IMPORTANT_OBJECTS.split("?")[0], Q_OBJECTS_IN_PATH.split("?")[0])
    return "^(" + "|".join(re.escape(prefix).replace("\\ ", " ") for prefix in prefixes) + ")"


def polish_filter() -> str:
    """The first questions and the yes/no conflict question: after 3,000 distillation packs the student still
    answered "No." to every conflict question, which the teacher gets right (docs/STUDENT.md, run 6)."""
    return first_questions_filter()[:-1] + "|" + Q_FUTURE_CONFLICT.split("{")[0] + ")"


def first_stages(checkpoint: Path, out: Path, data: list[str], args: argparse.Namespace, log: Path) -> Path:
    """Object maps, then the first questions alone with the vision frozen: trained end to end from random init on all
    QA, the models never read the cameras (docs/STUDENT.md, runs 2-4). Returns the checkpoint to train on from."""
    vision, warmup = out.with_name(f"{out.name}_vision"), out.with_name(f"{out.name}_warmup")
    train("config/train/student_objects.yaml", [f"model.path={checkpoint}", *data, f"training.output_dir={vision}",
                                                f"training.max_steps={args.vision_steps}"], log)
    train("config/train/student_teacher.yaml", [
        f"model.path={vision / 'model'}", *data, f"training.output_dir={warmup}", f"training.max_steps={args.warmup_steps}",
        f"data.question_filter={first_questions_filter()}", "data.pack_frame_qa=false", "data.open_choices=true",
        "training.per_device_train_batch_size=4", f"training.learning_rate={WARMUP_LEARNING_RATE}"], log)
    return warmup / "model"


def evaluate(checkpoint: Path, test: Path, out: Path, blank: bool, log: Path) -> dict[str, float]:
    prediction = out / "pred.json"
    run_command(drive_mllm("eval", "predict", "--model", str(checkpoint), "--gt", str(test), "--out", str(prediction),
                           *(["--blank-images"] if blank else [])), log)
    run_command(drive_mllm("eval", "score", "--gt", str(test), "--pred", str(prediction), "--out", str(out)), log)
    return json.loads((out / "scores.json").read_text())


def grounding(checkpoint: Path, drivelm: Path, out: Path, log: Path) -> dict[str, dict[str, float]]:
    """`drive-mllm eval grounding`: what the images are worth to the answers (other-scene views vs own)."""
    run_command(drive_mllm("eval", "grounding", "--model", str(checkpoint), "--drivelm", str(drivelm), "--out",
                           str(out), "--frames", "16"), log)
    return json.loads(out.read_text())


def grounding_table(gaps: dict[str, dict[str, dict[str, float]]]) -> str:
    """Per model: the loss gap over all QA and over the object listing (~0: answers from the question alone)."""
    rows = [f"| {name} | {rows['all']['gap_other']:+.4f} | {rows.get(question_kind(Q_IMPORTANT_OBJECTS), {}).get('gap_other', 0):+.4f} | "
            f"{rows['all']['gap_blank']:+.4f} |" for name, rows in gaps.items()]
    return ("| model | gap, other scene's views (all QA) | same, object listing | gap, black views |\n|---|---|---|---|\n"
            + "\n".join(rows))


def ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.1%}" if numerator is not None and denominator else "n/a"


def goals_line(scores: dict[str, dict[str, float]]) -> str:
    """The issue-6 comparisons: student against teacher, and against itself fed blank images."""
    student, teacher, blank = scores["student"], scores["teacher"], scores["student_blank"]
    gain = (student["accuracy"] or 0) - (blank["accuracy"] or 0)
    return (f"Student/teacher: accuracy {ratio(student['accuracy'], teacher['accuracy'])}, judge-free final "
            f"{ratio(student['judge_free_final'], teacher['judge_free_final'])}; student accuracy gain over blank "
            f"images {gain:+.4f}. match_f1 is on 0..100.")


def evaluation_table(scores: dict[str, dict[str, float]]) -> str:
    rows = [f"| {name} | " + " | ".join(f"{scores[name].get(key) or 0:.4f}" for key in SCORE_KEYS) + " |"
            for name in scores]
    return "| model | " + " | ".join(SCORE_KEYS) + " |\n|---|" + "---|" * len(SCORE_KEYS) + "\n" + "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m drive_mllm_ros.student_recipe", description=__doc__.splitlines()[0])
    root.add_argument("--out", default="runs/student")
    root.add_argument("--train-scenes", type=int, default=80)
    root.add_argument("--held-out-scenes", type=int, default=8, help="8: every scenario once (4 had no turn)")
    root.add_argument("--vocab-size", type=int, default=1024)
    root.add_argument("--vision-steps", type=int, default=6000,
                      help="object-map steps per model (4 frames each); 6,000 read the speed per frame (run 12)")
    root.add_argument("--warmup-steps", type=int, default=800, help="first-stage SFT steps per model (4 QA each)")
    root.add_argument("--first-weight", type=float, default=8.0,
                      help="repeats of the first stage's questions in the mix stage (they are unlearned otherwise)")
    root.add_argument("--teacher-steps", type=int, default=3000, help="SFT steps (one frame's QA pack each)")
    root.add_argument("--student-steps", type=int, default=3000, help="distillation steps (one frame's QA pack each)")
    root.add_argument("--polish-steps", type=int, default=1500,
                      help="distillation steps after them with the yes/no conflict question repeated too")
    root.add_argument("--listing-steps", type=int, default=4000,
                      help="last SFT steps with location tokens and the pointer loss (0: none; docs/STUDENT.md runs 10-11)")
    root.add_argument("--install", help="copy the student here when it reads the cameras (e.g. models/student)")
    root.add_argument("--min-camera-gain", type=float, default=0.1,
                      help="accuracy the student must gain over blank images to be installed")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log, started = out / "recipe.log", time.monotonic()
    train_json = make_world(out / "world/train", TRAIN_SEED, args.train_scenes, 0.125, log) / "v1_1_train_nus.json"
    held_out = make_world(out / "world/held_out", HELD_OUT_SEED, args.held_out_scenes, 0.0, log)
    teacher_init, student_init = write_initial_checkpoints(train_json, out / "init", args.vocab_size)
    data = [f"data.drivelm_json={train_json}", f"data.eval_json={train_json.with_name('v1_1_val_nus.json')}"]
    mix = [*data, keep_answers(train_json, (args.first_weight, first_questions_filter()))]
    # The student's first stages need no teacher: they run beside the teacher's (one thread each, 2 cores here).
    with ThreadPoolExecutor(max_workers=1) as beside:
        student_first = beside.submit(first_stages, student_init, out / "student", data, args, out / "student.log")
        teacher_start = first_stages(teacher_init, out / "teacher", data, args, log)
        train("config/train/student_teacher.yaml", [f"model.path={teacher_start}", *mix,
              f"training.output_dir={out}/teacher", f"training.max_steps={args.teacher_steps}"], log)
        student_start = student_first.result()
    teacher = out / "teacher/model"
    train("config/train/student_distill.yaml", [f"model.path={student_start}", *mix, f"method.teacher_path={teacher}",
          f"training.output_dir={out}/student_mix", f"training.max_steps={args.student_steps}"], log)
    polish = [*data, keep_answers(train_json, (args.first_weight, polish_filter()))]
    train("config/train/student_distill.yaml", [f"model.path={out}/student_mix/model", *polish,
          f"method.teacher_path={teacher}", f"training.output_dir={out}/student",
          f"training.max_steps={args.polish_steps}"], log)
    for checkpoint in (teacher, out / "student/model"):
        write_checkpoint_multiple_choice(checkpoint, "rank")  # the letter is not learned at this size (run 6)
    student = out / "student/model"
    if args.listing_steps:
        listing = [*data, keep_answers(train_json, (LISTING_WEIGHT, listing_filter()), (args.first_weight, polish_filter()))]
        train("config/train/student_listing.yaml", [f"model.path={student}", *listing,
              f"training.output_dir={out}/student_listing", f"training.max_steps={args.listing_steps}"], log)
        student = out / "student_listing/model"
    test = held_out / "test.json"
    run_command(drive_mllm("eval", "prepare", "--drivelm", str(held_out / "v1_1_train_nus.json"), "--out", str(test)),
                log)
    scores = {name: evaluate(checkpoint, test, out / "eval" / name, name.endswith("blank"), log)
              for name, checkpoint in zip(EVALUATED, (teacher, student, student), strict=True)}
    gaps = {name: grounding(checkpoint, held_out / "v1_1_train_nus.json", out / "eval" / f"{name}_grounding.json", log)
            for name, checkpoint in (("teacher", teacher), ("student", student))}
    summary = recipe_summary(args, out, scores, gaps, teacher, student, time.monotonic() - started)
    (out / "summary.md").write_text(summary)
    print(summary)
    gain = (scores["student"]["accuracy"] or 0) - (scores["student_blank"]["accuracy"] or 0)
    if args.install and gain >= args.min_camera_gain:
        install(student, teacher, Path(args.install), summary)
    elif args.install:
        print(f"not installed: accuracy gain over blank images {gain:.3f} < {args.min_camera_gain}")
    return 0


def architecture(sizes: ArchitectureSizes) -> str:
    return (f"ViT {sizes.vision_hidden_size} x {sizes.vision_layers} layers, Qwen2 {sizes.text_hidden_size} x "
            f"{sizes.text_layers} layers ({sizes.text_heads} heads, MLP {sizes.text_intermediate_size})")


def data_counts(drivelm_json: Path) -> str:
    data = load_json(drivelm_json)
    frames = [frame for scene in data.values() for frame in scene["key_frames"].values()]
    qa = sum(len(stage) for frame in frames for stage in frame["QA"].values())
    return f"{len(data)} scenes, {len(frames)} key frames, {qa} QA"


def recipe_summary(args: argparse.Namespace, out: Path, scores: dict, gaps: dict, teacher: Path, student: Path,
                   seconds: float) -> str:
    teacher_params, student_params = parameter_count(teacher), parameter_count(student)
    listing = (f" + {args.listing_steps} listing SFT steps (location tokens, pointer loss; tags placed by the attention)"
               if args.listing_steps else "")
    world = out / "world"
    return (f"## Recipe\n`python -m drive_mllm_ros.student_recipe --out {out}` (`make student`), "
            f"{seconds / 60:.1f} min on this machine (CPU).\n\n"
            f"| | teacher | student |\n|---|---|---|\n"
            f"| architecture ({EMBEDDED_WORLD_SIZE[0]}x{EMBEDDED_WORLD_SIZE[1]} views, per_view {TILE_SIZE}-px tiles) | "
            f"{architecture(TEACHER_SIZES)} | {architecture(STUDENT_SIZES)} |\n"
            f"| parameters | {teacher_params:,} | {student_params:,} ({student_params / teacher_params:.1%}) |\n"
            f"| training | {args.vision_steps} object-map steps, {args.warmup_steps} + {args.teacher_steps} SFT steps (vision "
            f"frozen) | {args.vision_steps} object-map steps, {args.warmup_steps} SFT + {args.student_steps} + {args.polish_steps} distillation "
            f"steps (vision frozen){listing} |\n\n"
            f"Multiple-choice questions are answered by ranking their options (`multiple_choice: rank` in "
            f"drive_mllm.json); the mix repeats the first stage's questions {args.first_weight:g}x.\n\n"
            f"Data: world seed {TRAIN_SEED}, training {data_counts(world / 'train/drivelm/v1_1_train_nus.json')}; "
            f"val {data_counts(world / 'train/drivelm/v1_1_val_nus.json')}; held out: seed {HELD_OUT_SEED}, "
            f"{data_counts(world / 'held_out/drivelm/v1_1_train_nus.json')}.\n\n## Held-out evaluation\n"
            f"{evaluation_table(scores)}\n\n{goals_line(scores)}\n\n## Grounding (held-out, nats per answer token)\n"
            f"{grounding_table(gaps)}\n")


def install(student: Path, teacher: Path, target: Path, summary: str) -> None:
    """The student in `target` with the recipe's summary on its card; its teacher beside it (`target`'s sibling
    "teacher"), for the student-versus-teacher goals and as a labeller."""
    for model, folder in ((student, target), (teacher, target.with_name("teacher"))):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(model, folder)
        card = folder / "README.md"
        card.write_text(card.read_text() + "\n" + summary)
    print(f"installed the student in {target} and its teacher in {target.with_name('teacher')}")


if __name__ == "__main__":
    sys.exit(main())
