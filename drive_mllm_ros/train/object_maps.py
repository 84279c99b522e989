"""Vision pretraining on object maps (`method.name: objects`): the vision tower and projector learn to mark objects.

A random-init student has no pretrained InternViT. Trained end to end on DriveLM answers, its image tokens stay
uninformative and its language model answers from the question alone (docs/STUDENT.md, runs 2-4). This stage gives
every image token a target first: the description of the object whose centre falls in it (or none) and that centre,
read from the DriveLM file itself (the key objects' tags and descriptions, and per-camera answers such as "There is
a grey car at (115.5, 78.1)."). Tokens also learn what the accuracy questions ask: the moving status of the objects a
moving-status QA names (at their token), and the frame's ego steering and speed from its behaviour QA (per view,
from the mean of its tokens: the road markings' blur shows the speed). A linear head on the projector output, dropped on export, learns with the
vision tower and projector; the language model does not run. Train the language model next with
method.tune=frozen_vision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..answers import parse_behavior, resolve_choice
from ..cameras import MOSAIC_COORD_RANGE
from ..data.drivelm_qa import CAMERA_DIRECTIONS
from ..drivelm import (
    MOVING_STATUS_OPTIONS,
    MOVING_STATUS_QUESTION,
    Q_OBJECTS_IN_CAMERA,
    SPEED_CLASSES,
    STEERING_CLASSES,
    TAG_PATTERN,
)
from ..pointing import patch_size, token_of_patch
from ..preprocess import TilingSpec, layout_images, to_pixel_values
from ..prompt import PromptBuilder
from .arguments import DriveLMSource, drivelm_sources
from .data import DataError, DataReport, frame_image_paths, load_json, read_image
from .distill import unwrap

HEAD_ATTRIBUTE = "object_map_head"  # lives on the model so DDP syncs it; dropped on export
NO_OBJECT = "none"
NO_OBJECT_WEIGHT = 0.1  # most tokens show no object: without this the head learns to mark nothing
POSITION_WEIGHT = 10.0
CAMERA_QUESTIONS = {Q_OBJECTS_IN_CAMERA.format(direction=direction): camera
                    for camera, direction in CAMERA_DIRECTIONS.items()}
LISTED_OBJECT = re.compile(r"\ban? ([^,]+?) at \((\d+(?:\.\d+)?), (\d+(?:\.\d+)?)\)")
UNLABELLED = -100  # cross-entropy's ignore index: a token or frame without that label
# Head outputs after the description logits: centre (2), moving status, ego steering, ego speed.
HEAD_PARTS = (2, len(MOVING_STATUS_OPTIONS), len(STEERING_CLASSES), len(SPEED_CLASSES))


@dataclass(frozen=True)
class ObjectMark:
    camera: str
    description: str
    x: float  # camera pixels
    y: float
    status: str | None = None  # one of MOVING_STATUS_OPTIONS where a moving-status QA asks about it


@dataclass(frozen=True)
class FrameLabels:
    marks: list[ObjectMark]
    steering: int = UNLABELLED  # index into STEERING_CLASSES
    speed: int = UNLABELLED  # index into SPEED_CLASSES


def frame_qa(frame: dict) -> list[dict]:
    return [qa for items in (frame.get("QA") or {}).values() if isinstance(items, list)
            for qa in items if isinstance(qa, dict) and isinstance(qa.get("Q"), str) and isinstance(qa.get("A"), str)]


def moving_statuses(frame: dict) -> dict[tuple[str, float, float], str]:
    """(camera, x, y) -> moving status, from the frame's moving-status QA (letter answers resolved)."""
    statuses = {}
    for qa in frame_qa(frame):
        tag = TAG_PATTERN.search(qa["Q"])
        status = resolve_choice(qa["Q"], qa["A"].strip())
        if tag and MOVING_STATUS_QUESTION in qa["Q"].lower() and status in MOVING_STATUS_OPTIONS:
            statuses[(tag.group(2), float(tag.group(3)), float(tag.group(4)))] = status
    return statuses


def frame_objects(frame: dict) -> list[ObjectMark]:
    """The objects a DriveLM frame locates: key objects (tag + visual description) and per-camera listings."""
    marks = {}
    for tag, info in (frame.get("key_object_infos") or {}).items():
        match = TAG_PATTERN.fullmatch(tag)
        description = str((info or {}).get("Visual_description", "")).split(".")[0].strip().lower()
        if match and description:
            marks[(match.group(2), float(match.group(3)), float(match.group(4)))] = description
    for qa in frame_qa(frame):
        camera = CAMERA_QUESTIONS.get(qa["Q"].strip())
        if camera:
            for description, x, y in LISTED_OBJECT.findall(qa["A"]):
                marks[(camera, float(x), float(y))] = description.lower()
    statuses = moving_statuses(frame)
    return [ObjectMark(camera, description, x, y, statuses.get((camera, x, y)))
            for (camera, x, y), description in marks.items()]


def frame_labels(frame: dict) -> FrameLabels:
    """A frame's object marks and, from its first behaviour QA that parses, the ego's steering and speed."""
    for qa in (frame.get("QA") or {}).get("behavior") or []:
        if isinstance(qa, dict) and isinstance(qa.get("Q"), str) and isinstance(qa.get("A"), str):
            steering, speed, _ = parse_behavior(resolve_choice(qa["Q"], qa["A"].strip()))
            if steering and speed:
                return FrameLabels(frame_objects(frame), STEERING_CLASSES.index(steering), SPEED_CLASSES.index(speed))
    return FrameLabels(frame_objects(frame))


class ObjectMapDataset(Dataset):
    """One item per frame: its tiles and, per image token, the object class id (0: none), normalised centre and
    moving status (UNLABELLED where not asked); per image, the frame's ego steering and speed."""

    def __init__(self, frames: list[tuple[list[Path], FrameLabels]], classes: list[str], spec: TilingSpec,
                 builder: PromptBuilder, patch_size: int, token_lookup: torch.Tensor):
        self.frames, self.spec, self.builder = frames, spec, builder
        self.class_ids = {name: index for index, name in enumerate(classes)}
        self.grid = spec.tile_size // patch_size
        self.token_lookup = token_lookup
        self.tokens = int(token_lookup.max()) + 1

    def __len__(self) -> int:
        return len(self.frames)

    def place(self, mark: ObjectMark) -> tuple[int, float, float]:
        """(image index, x, y in 0..1 of that image) of a mark in the layout the model sees."""
        if self.builder.layout == "stitched":
            x, y = self.builder.rig.to_mosaic(mark.camera, mark.x, mark.y)
            return 0, x / MOSAIC_COORD_RANGE, y / MOSAIC_COORD_RANGE
        width, height = self.builder.rig.image_size
        return self.builder.rig.index(mark.camera), mark.x / width, mark.y / height

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        paths, labels = self.frames[index]
        images = layout_images([read_image(str(path)) for path in paths], self.builder)
        pixel_values, _ = to_pixel_values(images, self.spec)
        classes = torch.zeros(len(images), self.tokens, dtype=torch.long)
        positions = torch.zeros(len(images), self.tokens, 2)
        statuses = torch.full((len(images), self.tokens), UNLABELLED)
        for mark in labels.marks:
            image, x, y = self.place(mark)
            if not (0 <= x < 1 and 0 <= y < 1):
                continue
            token = self.token_lookup[int(y * self.grid) * self.grid + int(x * self.grid)]
            classes[image, token] = self.class_ids.get(mark.description, 0)
            positions[image, token] = torch.tensor([x, y])
            if mark.status:
                statuses[image, token] = MOVING_STATUS_OPTIONS.index(mark.status)
        ego = torch.tensor([[labels.steering, labels.speed]]).expand(len(images), 2)
        return {"pixel_values": pixel_values, "object_classes": classes, "object_positions": positions,
                "object_status": statuses, "ego_behavior": ego, "frame_views": torch.tensor([len(images)])}


def held_out_scores(model: nn.Module, dataset: ObjectMapDataset, batch_size: int) -> dict[str, float]:
    """Mean loss parts over the held-out frames (eval_ prefixed, as the Trainer names held-out metrics)."""
    totals: dict[str, float] = {}
    batches = [list(range(start, min(start + batch_size, len(dataset)))) for start in range(0, len(dataset), batch_size)]
    with torch.no_grad():
        for indices in batches:
            _, parts = object_map_loss(model, collate_object_maps([dataset[i] for i in indices]))
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + value / len(batches)
    return {f"eval_{name}": value for name, value in totals.items()}


def collate_object_maps(features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([f[name] for f in features]) for name in features[0]}


def read_frames(path: Path, image_root: Path | None, builder: PromptBuilder, report: DataReport
                ) -> list[tuple[list[Path], FrameLabels]]:
    frames = []
    root = image_root or path.parent
    for scene in load_json(path).values():
        for frame in (scene.get("key_frames") or {}).values():
            report.frames += 1
            paths, missing = frame_image_paths(frame, builder, root)
            if missing:
                report.missing_image_frames += 1
                continue
            frames.append((paths, frame_labels(frame)))
    return frames


def read_source(source: DriveLMSource, builder: PromptBuilder, report: DataReport
                ) -> list[tuple[list[Path], FrameLabels]]:
    """A training file's frames, repeated round(weight) times (at least once); labels come from all its QA, so a
    question_filter does not apply here."""
    root = Path(source.image_root) if source.image_root else None
    return read_frames(Path(source.json), root, builder, report) * max(1, round(source.weight))


def build_object_maps(data: Any, spec: TilingSpec, builder: PromptBuilder, model: nn.Module
                      ) -> tuple[ObjectMapDataset, ObjectMapDataset | None, str]:
    """Training and held-out object-map datasets from data.drivelm_json (and data.extra_drivelm_json) /
    data.eval_json, and a summary line."""
    report = DataReport()
    train = [frame for source in drivelm_sources(data) for frame in read_source(source, builder, report)]
    classes = [NO_OBJECT, *sorted({mark.description for _, labels in train for mark in labels.marks})]
    marks = sum(len(labels.marks) for _, labels in train)
    statuses = sum(mark.status is not None for _, labels in train for mark in labels.marks)
    behaviors = sum(labels.speed != UNLABELLED for _, labels in train)
    if not marks:
        raise DataError(f"{data.drivelm_json}: no object with a camera position (key object tags or per-camera "
                        "listings with pixel centres) to pretrain the vision tower on")
    patch = patch_size(unwrap(model))
    lookup = token_of_patch(unwrap(model), spec.tile_size // patch)
    make = lambda frames: ObjectMapDataset(frames, classes, spec, builder, patch, lookup)  # noqa: E731
    held_out = None
    if data.eval_json:
        held_out = make(read_frames(Path(data.eval_json), None, builder, DataReport())[: data.eval_max_samples or None])
    summary = (f"{len(train)} frames ({report.missing_image_frames} skipped, images missing), {marks} object marks, "
               f"{len(classes) - 1} descriptions, {statuses} moving statuses, {behaviors} ego behaviours")
    return make(train), held_out, summary


def attach_head(model: nn.Module, classes: int) -> nn.Linear:
    base = unwrap(model)
    head = nn.Linear(base.config.text_config.hidden_size, classes + sum(HEAD_PARTS)).to(base.device)
    base.add_module(HEAD_ATTRIBUTE, head)
    return head


def object_map_loss(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Class cross-entropy (none down-weighted) + squared centre error on marked tokens + cross-entropy of the
    labelled moving statuses and ego steering and speed; and the shares detected / right (ego steering and speed also
    per frame, its views' votes summed)."""
    base = unwrap(model)
    pixels = inputs["pixel_values"].to(next(base.parameters()).dtype)
    features = base.model.get_image_features(
        pixel_values=pixels, vision_feature_layer=base.config.vision_feature_layer,
        vision_feature_select_strategy=base.config.vision_feature_select_strategy).pooler_output
    output = getattr(base, HEAD_ATTRIBUTE)(features).float()
    logits, centres, status, steering, speed = output.split([output.shape[-1] - sum(HEAD_PARTS), *HEAD_PARTS], -1)
    classes, positions = inputs["object_classes"], inputs["object_positions"]
    # Ego steering and speed per image, from its tokens' mean: only some tokens (the road's markings) show them.
    steering, speed, ego = steering.mean(1), speed.mean(1), inputs["ego_behavior"]
    weight = torch.ones(logits.shape[-1], device=logits.device)
    weight[0] = NO_OBJECT_WEIGHT
    class_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), classes.reshape(-1), weight=weight)
    marked = classes > 0
    position_loss = ((centres - positions) ** 2).sum(-1)[marked].mean() if marked.any() else centres.sum() * 0
    detected = (logits.argmax(-1)[marked] > 0).float().mean().item() if marked.any() else 0.0
    labelled = {"status": (status, inputs["object_status"]), "steering": (steering, ego[..., 0]),
                "speed": (speed, ego[..., 1])}
    parts = {"class": class_loss.item(), "position": position_loss.item(), "detected": detected}
    loss = class_loss + POSITION_WEIGHT * position_loss
    for name, (part_logits, targets) in labelled.items():
        known = targets != UNLABELLED
        if known.any():
            loss = loss + F.cross_entropy(part_logits[known], targets[known])
            parts[f"{name}_right"] = (part_logits[known].argmax(-1) == targets[known]).float().mean().item()
    views = int(inputs["frame_views"][0])
    for name in ("steering", "speed"):
        right = frame_right(*labelled[name], views)
        if right is not None:
            parts[f"{name}_frame_right"] = right
    return loss, parts


def frame_right(logits: torch.Tensor, targets: torch.Tensor, views: int) -> float | None:
    """Share of frames whose views' summed log-probabilities name the label. At night only the views the headlights
    light show the speed, so the per-view share hides a frame that its front view reads right."""
    frame_logits = logits.detach().log_softmax(-1).reshape(-1, views, logits.shape[-1]).sum(1)
    frame_targets = targets.reshape(-1, views)[:, 0]
    known = frame_targets != UNLABELLED
    if not known.any():
        return None
    return (frame_logits[known].argmax(-1) == frame_targets[known]).float().mean().item()


def check_single_tile(spec: TilingSpec) -> None:
    if spec.crop_to_patches and spec.max_tiles != 1:
        raise DataError("method objects: expected one tile per image (data.max_tiles: 1), so that every image "
                        f"token has one place in its image; got max_tiles {spec.max_tiles}")
