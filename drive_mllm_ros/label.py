"""`drive-mllm label --dataset DIR (--teacher CKPT | --ground-truth DRIVELM_JSON) [--out DIR]`: answers for kept frames.

The dataset is a hard-case folder (`DIR/drivelm/v1_1_train_nus.json`, written by the node with
`hard_cases.enabled`) or any DriveLM v1.1 JSON whose CAM_FRONT image names end in `__CAM_FRONT__<us>.jpg`.
`--teacher` answers each frame's questions with a checkpoint (pseudo-labels through `DrivingModel.answer`, the
node's prompt builder and layout); `--ground-truth` takes the QA and key objects of the ground-truth key frame
with the same CAM_FRONT timestamp (the synthetic world's DriveLM JSON), keeping the recorded images. The output,
`OUT/v1_1_train_nus.json` (default OUT: DIR/labeled), has image_paths relative to its own folder, so
`drive-mllm train` loads it as `data.drivelm_json` directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .evaluation.testset import cam_front_stamp, key_frames, load_json
from .hard_case_store import DRIVELM_JSON
from .scene import StampLookup
from .sync import NS

OUT_JSON = "v1_1_train_nus.json"
MAX_NEW_TOKENS = 256  # as `eval predict`: long enough for DriveLM's longest answers
Frame = tuple[str, str, dict]  # (scene token, frame token, DriveLM key frame)


@dataclass
class LabelReport:
    frames: int = 0
    labeled: int = 0
    qa: int = 0
    unmatched: list[str] = field(default_factory=list)  # no ground-truth key frame near the stamp
    skipped: list[str] = field(default_factory=list)  # unreadable images (teacher)
    empty_answers: int = 0

    def summary(self) -> str:
        return (
            f"labeled {self.labeled} of {self.frames} frames ({self.qa} QA); {len(self.unmatched)} without a "
            f"ground-truth key frame, {len(self.skipped)} skipped, {self.empty_answers} empty teacher answers dropped"
        )


def dataset_json(dataset: Path) -> Path:
    path = dataset / DRIVELM_JSON if dataset.is_dir() else dataset
    if not path.is_file():
        raise ValueError(
            f"--dataset {dataset}: expected a hard-case folder holding {DRIVELM_JSON} (the node writes it with "
            "hard_cases.enabled: true) or a DriveLM v1.1 JSON file"
        )
    return path


def relocated(image_paths: dict[str, str], source: Path, out: Path) -> dict[str, str]:
    """Image paths relative to the source JSON's folder -> relative to the output JSON's folder."""
    return {camera: os.path.relpath(source / path, out) for camera, path in image_paths.items()}


def add_frame(scenes: dict[str, Any], scene: str, description: str, frame: str, entry: dict) -> None:
    scenes.setdefault(scene, {"scene_description": description, "key_frames": {}})["key_frames"][frame] = entry


def label_with_ground_truth(
    frames: list[Frame], source: Path, gt_path: Path, tolerance_s: float, out: Path, report: LabelReport
) -> dict[str, Any]:
    """Each recorded frame takes the QA and key objects of the ground-truth key frame at its CAM_FRONT stamp."""
    gt = load_json(gt_path, "--ground-truth file")
    what = f"--ground-truth file '{gt_path}'"
    by_stamp = {
        cam_front_stamp(data, f"{what}, scene '{scene}' frame '{frame}'") * 1000: (scene, frame, data)
        for scene, frame, data in key_frames(gt, what)
    }
    lookup = StampLookup(by_stamp, int(tolerance_s * NS))
    scenes: dict[str, Any] = {}
    for _, frame, data in frames:
        match = lookup.nearest(cam_front_stamp(data, f"dataset frame '{frame}'") * 1000)
        if match is None:
            report.unmatched.append(frame)
            continue
        gt_scene, gt_frame, gt_data = match
        entry = {**gt_data, "image_paths": relocated(data.get("image_paths", {}), source, out)}
        add_frame(scenes, gt_scene, gt[gt_scene].get("scene_description", ""), gt_frame, entry)
        report.qa += sum(len(items) for items in gt_data.get("QA", {}).values())
    return scenes


def label_with_teacher(
    frames: list[Frame],
    descriptions: dict[str, str],
    source: Path,
    model: Any,
    max_new_tokens: int,
    out: Path,
    report: LabelReport,
) -> dict[str, Any]:
    """Each recorded frame's questions answered by the teacher about the recorded images."""
    from .evaluation.predict import frame_views  # torch: only for the teacher

    scenes: dict[str, Any] = {}
    for scene, frame, data in frames:
        try:
            views = frame_views(data, model.builder, source, blank=False)
        except ValueError as error:  # a camera the node saw blank, or an unreadable file
            report.skipped.append(f"{frame}: {error}")
            continue
        items = [
            (stage, item)
            for stage, stage_items in (data.get("QA") or {}).items()
            for item in stage_items
            if isinstance(item, dict) and isinstance(item.get("Q"), str)
        ]
        answers = model.answer(model.prepare(views), [item["Q"] for _, item in items], max_new_tokens)
        qa: dict[str, list[dict]] = {}
        for (stage, item), answer in zip(items, answers, strict=True):
            if answer:
                qa.setdefault(stage, []).append({**item, "A": answer})
            report.empty_answers += not answer
        report.qa += sum(len(stage_items) for stage_items in qa.values())
        entry = {**data, "QA": qa, "image_paths": relocated(data["image_paths"], source, out)}
        add_frame(scenes, scene, descriptions[scene], frame, entry)
    return scenes


def load_teacher(checkpoint: Path, device: str) -> Any:
    from .evaluation.predict import load_for_prediction
    from .model import ModelLoadError

    try:
        return load_for_prediction(checkpoint, device)
    except ModelLoadError as error:
        raise ValueError(f"--teacher: {error}") from None


def label(args: argparse.Namespace) -> tuple[Path, LabelReport]:
    if args.tolerance <= 0 or args.max_new_tokens < 1:
        raise ValueError(
            f"--tolerance must be > 0 s and --max-new-tokens >= 1, got {args.tolerance}, {args.max_new_tokens}"
        )
    source_json = dataset_json(args.dataset)
    out_dir = args.out or (args.dataset if args.dataset.is_dir() else args.dataset.parent) / "labeled"
    dataset = load_json(source_json, "--dataset JSON")
    frames = key_frames(dataset, f"--dataset JSON '{source_json}'")
    report = LabelReport(frames=len(frames))
    source = source_json.parent
    if args.ground_truth:
        scenes = label_with_ground_truth(frames, source, args.ground_truth, args.tolerance, out_dir, report)
    else:
        model = load_teacher(args.teacher, args.device)
        descriptions = {scene: data.get("scene_description", "") for scene, data in dataset.items()}
        scenes = label_with_teacher(frames, descriptions, source, model, args.max_new_tokens, out_dir, report)
    report.labeled = sum(len(scene["key_frames"]) for scene in scenes.values())
    if not report.labeled:
        raise ValueError(f"--dataset {args.dataset}: no frame could be labeled ({report.summary()})")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / OUT_JSON
    out.write_text(json.dumps(scenes, indent=1, ensure_ascii=False), encoding="utf-8")
    return out, report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drive-mllm label", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, required=True, help="hard-case folder (or a DriveLM JSON)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--teacher", type=Path, help="checkpoint whose answers become the labels")
    source.add_argument("--ground-truth", type=Path, help="DriveLM JSON with the true QA (synthetic world)")
    p.add_argument("--out", type=Path, help="output folder (default: DATASET/labeled)")
    p.add_argument("--tolerance", type=float, default=0.025, help="s between CAM_FRONT stamps that match")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="teacher answer budget")
    p.add_argument("--device", default="auto", help="teacher device: auto, cpu, cuda, cuda:N")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        out, report = label(args)
    except ValueError as error:
        print(f"drive-mllm label: {error}", file=sys.stderr)
        return 2
    print(f"label: {report.summary()} -> {out}")
    for line in report.unmatched[:5] + report.skipped[:5]:
        print(f"  not labeled: {line}")
    return 0
