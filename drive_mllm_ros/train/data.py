"""Training samples: DriveLM v1.1 QA through the node's prompt builder and camera layout, plus general data.

DriveLM: ``scene -> key_frames -> frame -> {QA: {stage: [{Q, A, ...}]}, image_paths: {camera: path}}``, image
paths relative to ``image_root`` (default: the JSON's folder); more DriveLM files (`extra_drivelm_json`, e.g. replay
of earlier training data) come with their own image root and repeat weight. Each QA becomes one single-turn conversation
(`PromptBuilder.messages`), repeated by its stage's sampling weight (fractions drawn with a seeded RNG). Each
multiple-choice behaviour QA also gives the open "Predict the behavior of the ego vehicle." form the node asks,
answered with the chosen option's text. General data is LLaVA-style JSON
(``[{"image": path, "conversations": [{"from": "human"|"gpt", "value": ...}]}]``) mixed in at a ratio.
Everything dropped is counted in a `DataReport`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..answers import resolve_choice, split_choices
from ..preprocess import TilingSpec, layout_images, to_pixel_values
from ..prompt import IMAGE_PLACEHOLDER, PromptBuilder
from .arguments import DataArguments, drivelm_sources
from .collate import IGNORE_INDEX, encode_conversation, pack_encoded, packed_starts, shared_prefix_length
from .pointers import Pointer, PointerTargets, shift_pointers

FRAME, IMAGE = "frame", "image"  # sample images: the rig's camera views, or plain images (general data)
GENERAL_STAGE = "general"
LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class DataError(ValueError):
    """Training data that cannot be used: missing files (with missing_images=fail), nothing left, bad JSON."""


@dataclass(frozen=True)
class Sample:
    sample_id: str  # stable across repeats and runs: the teacher-logit cache key
    stage: str
    messages: list[dict[str, str]]
    image_paths: tuple[str, ...]
    image_kind: str
    length: int = 0
    truncate_to: int = 0  # 0: whole sample
    source: str = ""  # the DriveLM file it came from ("" for general data)


@dataclass
class DataReport:
    """What went into the dataset and what was left out, and why."""

    frames: int = 0
    qa: Counter = field(default_factory=Counter)  # read per stage, before weighting
    samples: Counter = field(default_factory=Counter)  # per stage, after weighting and filtering
    sources: Counter = field(default_factory=Counter)  # per DriveLM file, after weighting and filtering
    open_choices_added: int = 0
    malformed_qa: int = 0
    missing_image_frames: int = 0
    missing_image_samples: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    packs: int = 0  # frame packs the samples went into (0: not packed)

    def summary(self) -> str:
        stages = ", ".join(f"{stage} {count}" for stage, count in sorted(self.samples.items()))
        sources = ", ".join(f"{source} {count}" for source, count in self.sources.items())
        return (
            f"{sum(self.samples.values())} samples ({stages}{'; ' + sources if len(self.sources) > 1 else ''}) "
            f"from {self.frames} frames / "
            f"{sum(self.qa.values())} QA; open forms added {self.open_choices_added}; skipped: "
            f"{self.malformed_qa} malformed QA, {self.missing_image_frames} frames and "
            f"{self.missing_image_samples} general samples with missing images, {self.dropped_too_long} "
            f"over the length limit; {self.truncated} truncated{f'; {self.packs} frame packs' if self.packs else ''}"
        )


def repeats(weight: float, rng: np.random.Generator) -> int:
    """How many times an item is used for a sampling weight: the integer part plus a coin for the fraction."""
    whole = math.floor(weight)
    return whole + int(rng.random() < weight - whole)


def is_valid_qa(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("Q"), str)
        and isinstance(item.get("A"), str)
        and bool(item["Q"].strip())
        and bool(item["A"].strip())
    )


def frame_image_paths(frame: dict, builder: PromptBuilder, image_root: Path) -> tuple[list[Path], list[str]]:
    """The rig's camera images of a frame in rig order, and the cameras whose file is missing."""
    listed = frame.get("image_paths") or {}
    paths = [
        image_root / listed[camera] if camera in listed else image_root / f"<no {camera}>"
        for camera in builder.rig.names
    ]
    return paths, [camera for camera, path in zip(builder.rig.names, paths, strict=True) if not path.is_file()]


def frame_conversations(
    frame: dict, builder: PromptBuilder, open_choices: bool, report: DataReport
) -> list[tuple[str, str, str, str]]:
    """(stage, local id, question, answer) of one frame's valid QA, with the open form of each multiple-choice QA
    added (its stem answered with the option's text)."""
    conversations = []
    qa = frame.get("QA") if isinstance(frame.get("QA"), dict) else {}
    for stage, items in qa.items():
        for index, item in enumerate(items if isinstance(items, list) else [items]):
            if not is_valid_qa(item):
                report.malformed_qa += 1
                continue
            report.qa[stage] += 1
            conversations.append((stage, f"{stage}_{index}", item["Q"], item["A"]))
            choices = split_choices(item["Q"]) if open_choices else None
            if choices and resolve_choice(item["Q"], item["A"].strip()) in choices[1].values():
                conversations.append((stage, f"{stage}_{index}_open", choices[0],
                                      resolve_choice(item["Q"], item["A"].strip())))
                report.open_choices_added += 1
    return conversations


def read_drivelm(
    path: Path,
    image_root: Path | None,
    builder: PromptBuilder,
    args: DataArguments,
    report: DataReport,
    weighted: bool = True,
    source_weight: float = 1.0,
    source_filter: str = "",
) -> list[Sample]:
    """DriveLM v1.1 JSON -> samples (weighted by stage, times `source_weight`, unless `weighted` is False, as for
    evaluation), of the QA whose question matches both data.question_filter and `source_filter`."""
    scenes = load_json(path)
    image_root = image_root or path.parent
    rng = np.random.default_rng(args.seed)
    asked, asked_here = re.compile(args.question_filter), re.compile(source_filter)
    samples = []
    for scene_token, scene in scenes.items():
        for frame_token, frame in (scene.get("key_frames") or {}).items():
            report.frames += 1
            paths, missing = frame_image_paths(frame, builder, image_root)
            if missing:
                if args.missing_images == "fail":
                    raise DataError(
                        f"{path}: frame {frame_token} has no image file for {', '.join(missing)} under "
                        f"{image_root}; set data.missing_images=skip to skip such frames"
                    )
                report.missing_image_frames += 1
                continue
            for stage, local_id, question, answer in frame_conversations(frame, builder, args.open_choices, report):
                if not (asked.search(question) and asked_here.search(question)):
                    continue
                weight = args.stage_weights.get(stage, 1.0) * source_weight if weighted else 1.0
                sample = Sample(
                    f"{scene_token}_{frame_token}_{local_id}",
                    stage,
                    builder.messages(question, answer),
                    tuple(str(p) for p in paths),
                    FRAME,
                    source=str(path),
                )
                samples += [sample] * repeats(weight, rng)
    return samples


def llava_messages(entry: dict, image_count: int) -> list[dict[str, str]] | None:
    """LLaVA conversations -> chat messages; None when malformed. Images lacking a placeholder go first."""
    turns = entry.get("conversations")
    if not isinstance(turns, list) or not turns:
        return None
    messages = []
    for turn in turns:
        role = LLAVA_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            return None
        messages.append({"role": role, "content": turn["value"]})
    if not any(m["role"] == "assistant" for m in messages):
        return None
    user = next(m for m in messages if m["role"] == "user")
    placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if placeholders == 0 and image_count:
        user["content"] = "\n".join([IMAGE_PLACEHOLDER] * image_count + [user["content"]])
    elif placeholders != image_count:
        return None
    return messages


def read_general(
    path: Path, image_root: Path | None, args: DataArguments, count: int, report: DataReport
) -> list[Sample]:
    """`count` samples drawn (seeded, with replacement only when there are too few) from LLaVA-style JSON."""
    entries = load_json(path)
    image_root = image_root or path.parent
    usable = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        images = entry.get("image", []) if isinstance(entry, dict) else []
        images = [images] if isinstance(images, str) else list(images)
        messages = llava_messages(entry, len(images)) if isinstance(entry, dict) else None
        if messages is None:
            report.malformed_qa += 1
            continue
        paths = [image_root / image for image in images]
        if not all(p.is_file() for p in paths):
            if args.missing_images == "fail":
                raise DataError(
                    f"{path}: entry {index} has a missing image under {image_root}; set "
                    "data.missing_images=skip to skip such entries"
                )
            report.missing_image_samples += 1
            continue
        usable.append(
            Sample(f"general_{entry.get('id', index)}", GENERAL_STAGE, messages, tuple(str(p) for p in paths), IMAGE)
        )
    if not usable or count <= 0:
        return []
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.choice(len(usable), size=count, replace=count > len(usable))
    return [usable[i] for i in picks]


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"'{path}' is not valid JSON: {error}") from error


def read_image(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image '{path}' cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


class ConversationDataset(Dataset):
    """Samples -> model inputs: images loaded and tiled as the node does, ids and answer-only labels; after
    `pack_frames`, each item is a pack of one frame's samples (`collate.pack_encoded`)."""

    def __init__(
        self, samples: list[Sample], tokenizer: Any, spec: TilingSpec, builder: PromptBuilder, image_seq_length: int
    ):
        self.samples, self.tokenizer, self.spec, self.builder = samples, tokenizer, spec, builder
        self.image_seq_length = image_seq_length
        self.template_lengths: dict[tuple[str, ...], int] = {}
        self.packs: list[list[int]] | None = None  # sample indices per item, once packed
        self.pointers: PointerTargets | None = None  # set for pointer supervision: items get "pointers"

    def __len__(self) -> int:
        return len(self.packs) if self.packs is not None else len(self.samples)

    def tiles_per_image(self, sample: Sample) -> list[int]:
        """Tile counts without decoding: the layout's image sizes for frames, file headers for general images."""
        if sample.image_kind == FRAME:
            size = self.builder.rig.mosaic_size if self.builder.layout == "stitched" else self.builder.rig.image_size
            return [self.spec.tile_count(*size)] * self.builder.image_count
        return [self.spec.tile_count(*image_size(path)) for path in sample.image_paths]

    def encode(self, sample: Sample, tiles: list[int]) -> tuple[list[int], list[int]]:
        input_ids, labels = encode_conversation(self.tokenizer, sample.messages, tiles, self.image_seq_length)
        if sample.truncate_to:
            return input_ids[: sample.truncate_to], labels[: sample.truncate_to]
        return input_ids, labels

    def pixel_values(self, sample: Sample) -> tuple[torch.Tensor, list[int]]:
        images = [read_image(path) for path in sample.image_paths]
        if sample.image_kind == FRAME:
            images = layout_images(images, self.builder)
        return to_pixel_values(images, self.spec)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.packs is None:
            return self.single(index)
        members = [self.samples[i] for i in self.packs[index]]
        pixel_values, tiles = self.pixel_values(members[0])  # one frame: the same images for all
        encoded = [self.encode(sample, tiles) for sample in members]
        packed = pack_encoded(encoded)
        item = {**packed, "pixel_values": pixel_values, "sample_ids": [sample.sample_id for sample in members]}
        if self.pointers is not None:
            prefix, starts = shared_prefix_length(encoded), packed_starts(encoded)
            item["pointers"] = [pointer for sample, (ids, labels), start in zip(members, encoded, starts, strict=True)
                                for pointer in shift_pointers(self.sample_pointers(ids, labels), prefix, start)]
        return item

    def sample_pointers(self, ids: list[int], labels: list[int]) -> list[Pointer]:
        return self.pointers(ids, labels) if self.pointers else []

    def single(self, index: int) -> dict[str, Any]:
        """Sample `index` on its own, packed or not."""
        sample = self.samples[index]
        pixel_values, tiles = self.pixel_values(sample)
        input_ids, labels = self.encode(sample, tiles)
        item = {"input_ids": input_ids, "labels": labels, "pixel_values": pixel_values, "sample_ids": [sample.sample_id]}
        if self.pointers is not None:
            item["pointers"] = self.sample_pointers(input_ids, labels)
        return item

    def pack_frames(self, max_length: int, seed: int) -> None:
        """Group the samples of each frame (shuffled, seeded) into packs of at most `max_length` tokens (by the
        length bound, the images counted once); general samples stay alone."""
        rng = np.random.default_rng(seed)
        by_frame: dict[tuple[str, ...], list[int]] = {}
        for index, sample in enumerate(self.samples):
            key = sample.image_paths if sample.image_kind == FRAME else (sample.sample_id, str(index))
            by_frame.setdefault(key, []).append(index)
        self.packs = []
        for indices in by_frame.values():
            tiles = self.tiles_per_image(self.samples[indices[0]])
            images = sum(self.image_seq_length * count + 2 for count in tiles)
            pack, length = [], images
            for index in rng.permutation(indices).tolist():
                rest = self.length_bound(self.samples[index], tiles) - images
                if pack and length + rest > max_length:
                    self.packs.append(pack)
                    pack, length = [], images
                pack.append(index)
                length += rest
            self.packs.append(pack)

    def length_bound(self, sample: Sample, tiles: list[int]) -> int:
        """An upper bound of the token count without tokenizing: byte-level BPE gives at most one token per
        byte of text, plus the template's own tokens and the image tokens (tokenizing 378K QA takes minutes)."""
        text = sum(len(message["content"].encode()) for message in sample.messages)
        images = sum(self.image_seq_length * count + 2 for count in tiles)
        return self.template_tokens(tuple(message["role"] for message in sample.messages)) + text + images

    def template_tokens(self, roles: tuple[str, ...]) -> int:
        """Tokens the chat template adds around messages with these roles (computed once per role sequence)."""
        if roles not in self.template_lengths:
            empty = self.tokenizer.apply_chat_template([{"role": r, "content": ""} for r in roles], tokenize=False)
            self.template_lengths[roles] = len(self.tokenizer.encode(empty, add_special_tokens=False))
        return self.template_lengths[roles]

    def fit_length(self, max_length: int, overlong: str, report: DataReport) -> None:
        """Drop (or truncate after the last image token, keeping some answer) samples over `max_length`."""
        kept = []
        for sample in self.samples:
            tiles = self.tiles_per_image(sample)
            if self.length_bound(sample, tiles) <= max_length:
                kept.append(sample)
                continue
            input_ids, labels = self.encode(sample, tiles)
            if len(input_ids) <= max_length:
                kept.append(sample)
                continue
            last_image = max((i for i, t in enumerate(input_ids) if t == self.tokenizer.end_image_token_id), default=-1)
            first_label = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
            if overlong == "truncate" and max(last_image, first_label) < max_length:
                kept.append(replace(sample, truncate_to=max_length))
                report.truncated += 1
            else:
                report.dropped_too_long += 1
        self.samples = kept


def build_datasets(
    args: DataArguments, tokenizer: Any, spec: TilingSpec, builder: PromptBuilder, image_seq_length: int
) -> tuple[ConversationDataset, ConversationDataset | None, DataReport]:
    """Training set (DriveLM weighted by stage + general data at the ratio) and the held-out set, with the report."""
    report = DataReport()
    samples = []
    for source in drivelm_sources(args):
        source_root = Path(source.image_root) if source.image_root else None
        samples += read_drivelm(Path(source.json), source_root, builder, args, report, source_weight=source.weight,
                                source_filter=source.question_filter)
    if args.general_json:
        general_root = Path(args.general_image_root) if args.general_image_root else None
        count = round(len(samples) * args.general_ratio)
        samples += read_general(Path(args.general_json), general_root, args, count, report)
    if args.max_samples:
        order = np.random.default_rng(args.seed).permutation(len(samples))[: args.max_samples]
        samples = [samples[i] for i in sorted(order)]
    train = ConversationDataset(samples, tokenizer, spec, builder, image_seq_length)
    train.fit_length(args.max_length, args.overlong, report)
    if args.pack_frame_qa:
        train.pack_frames(args.max_length, args.seed)
        report.packs = len(train)
    report.samples = Counter(sample.stage for sample in train.samples)
    report.sources = Counter(sample.source for sample in train.samples if sample.source)
    if not train.samples:
        raise DataError(
            f"{args.drivelm_json}: no training samples left after filtering ({report.summary()}); check "
            "the image root, the stage weights and data.max_length"
        )
    evaluation = None
    if args.eval_json:
        root = Path(args.image_root) if args.image_root else None
        held_out = read_drivelm(Path(args.eval_json), root, builder, args, DataReport(), weighted=False)
        if args.eval_max_samples:
            held_out = held_out[: args.eval_max_samples]
        evaluation = ConversationDataset(held_out, tokenizer, spec, builder, image_seq_length)
        evaluation.fit_length(args.max_length, args.overlong, DataReport())
    return train, evaluation, report
