"""`drive-mllm eval`: DriveLM challenge evaluation.

  drive-mllm eval prepare --drivelm DRIVELM.json --out TEST.json [--seed 0]
  drive-mllm eval predict --model CKPT --gt TEST.json --out PRED.json [--image-root DIR] [--blank-images]
  drive-mllm eval grounding --model CKPT --drivelm DRIVELM.json --out GROUNDING.json [--frames 16]
  drive-mllm eval score --gt TEST.json (--pred PRED.json | --from-bag BAG [--scene-topic T]) --out DIR
                        [--judge-url URL --judge-model NAME]

`score` writes DIR/scores.json, DIR/report.md (both overall and per recording condition) and DIR/subscores.png.
The judge key, if the endpoint needs one, is read from OPENAI_API_KEY. Exit status: 0 scored, 1 scored but the judge failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

from .from_bag import DEFAULT_SCENE_TOPIC, DEFAULT_TOLERANCE_MS, predictions_from_messages, scene_messages
from .judge import Judge
from .predictions import InputIssues, read_prediction_file
from .prepare import prepare_file
from .report import write_report
from .score import score_predictions
from .testset import ANSWER_BUDGET, cam_front_stamps, load_test


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="drive-mllm eval", description="DriveLM challenge evaluation")
    commands = root.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="DriveLM v1.1 JSON -> challenge test format (tagged QA)")
    prepare.add_argument("--drivelm", required=True, help="DriveLM v1.1 JSON (real or synthetic)")
    prepare.add_argument("--out", required=True, help="test file to write")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the multiple-choice distractors")
    predict = commands.add_parser("predict", help="a checkpoint's answers to a test file's questions (no ROS)")
    predict.add_argument("--model", required=True, help="checkpoint folder (native InternVL layout)")
    predict.add_argument("--gt", required=True, help="test file written by 'prepare' (questions and image paths)")
    predict.add_argument("--out", required=True, help="predictions JSON to write")
    predict.add_argument("--image-root", help="folder the image paths are relative to (default: the test file's)")
    predict.add_argument("--blank-images", action="store_true", help="black views: the does-it-read-the-cameras baseline")
    predict.add_argument("--max-new-tokens", type=int, default=ANSWER_BUDGET)
    predict.add_argument("--device", default="auto")
    grounding = commands.add_parser(
        "grounding", help="how much answers depend on the images: answer loss with own, other-scene and black views")
    grounding.add_argument("--model", required=True, help="checkpoint folder (native InternVL layout)")
    grounding.add_argument("--drivelm", required=True, help="DriveLM v1.1 JSON with answers (e.g. held-out scenes)")
    grounding.add_argument("--out", required=True, help="JSON to write (per question kind)")
    grounding.add_argument("--image-root", help="folder the image paths are relative to (default: the JSON's)")
    grounding.add_argument("--frames", type=int, default=16, help="key frames to use, spread over the file (0: all)")
    grounding.add_argument("--device", default="auto")
    score = commands.add_parser("score", help="score predictions against a test file")
    score.add_argument("--gt", required=True, help="test file written by 'prepare'")
    source = score.add_mutually_exclusive_group(required=True)
    source.add_argument("--pred", help="predictions: JSON list of {id, question, answer}")
    source.add_argument("--from-bag", help="bag with the node's scene messages")
    score.add_argument("--scene-topic", default=DEFAULT_SCENE_TOPIC)
    score.add_argument("--stamp-tolerance-ms", type=float, default=DEFAULT_TOLERANCE_MS,
                       help="largest gap between a scene stamp and its key frame's CAM_FRONT timestamp")
    score.add_argument("--out", required=True, help="folder for scores.json, report.md, subscores.png")
    score.add_argument("--label", default="ours", help="name of our row in the report")
    score.add_argument("--params", default="", help="our row's Params cell (e.g. 1B, 429K)")
    score.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    score.add_argument("--judge-model", help="judge model name (required with --judge-url)")
    score.add_argument("--judge-workers", type=int, default=8)
    score.add_argument("--judge-timeout-s", type=float, default=60.0)
    return root


def run_score(args: argparse.Namespace) -> int:
    items = load_test(args.gt)
    issues = InputIssues()
    if args.pred:
        entries = read_prediction_file(args.pred)
    else:
        messages = scene_messages(args.from_bag, args.scene_topic)
        entries = predictions_from_messages(messages, items, cam_front_stamps(args.gt), issues,
                                            args.stamp_tolerance_ms)
    judge = None
    if args.judge_url:
        judge = Judge(args.judge_url, args.judge_model, os.environ.get("OPENAI_API_KEY"), args.judge_timeout_s,
                      args.judge_workers)
    scores = score_predictions(items, entries, issues, judge)
    paths = write_report(scores, issues, args.out, args.label, args.params)
    print(f"final {scores['final']}, judge-free final {scores['judge_free_final']}; wrote {', '.join(map(str, paths))}")
    for kind, count in issues.counts.items():
        print(f"input issue: {kind}: {count} (e.g. {', '.join(issues.examples[kind])})", file=sys.stderr)
    if scores["judge_error"]:
        print(f"error: {scores['judge_error']}; other metrics reported", file=sys.stderr)
        return 1
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from .predict import load_for_prediction, predict, write_predictions

    model = load_for_prediction(args.model, args.device)
    predictions = predict(model, args.gt, args.image_root, args.blank_images, args.max_new_tokens)
    out = write_predictions(predictions, args.out)
    print(f"wrote {len(predictions)} predictions to {out}")
    return 0


def run_grounding(args: argparse.Namespace) -> int:
    from .grounding import grounding, grounding_table, write_grounding
    from .predict import load_for_prediction

    rows = grounding(load_for_prediction(args.model, args.device), args.drivelm, args.image_root, args.frames)
    print(grounding_table(rows))
    print(f"wrote {write_grounding(rows, args.out)}; gap = loss with other views - loss with own views (nats/token)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "score" and args.judge_url and not args.judge_model:
        print("drive-mllm eval score: --judge-url needs --judge-model", file=sys.stderr)
        return 2
    try:
        if args.command == "prepare":
            prepare_file(args.drivelm, args.out, args.seed)
            print(f"wrote {args.out}")
            return 0
        if args.command == "predict":
            return run_predict(args)
        if args.command == "grounding":
            return run_grounding(args)
        return run_score(args)
    except ValueError as error:
        print(f"drive-mllm eval: {error}", file=sys.stderr)
        return 2
