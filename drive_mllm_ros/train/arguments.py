"""Training configuration: one YAML file with model/data/method/training sections, plus `section.key=value` overrides.

`model`, `data` and `method` are our dataclasses; `training` is passed to transformers.TrainingArguments as is,
so every Trainer option (bf16, gradient checkpointing, DeepSpeed/FSDP, save and log steps) is available.
An unknown key anywhere is an error that names the nearest valid key.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..drivelm import STAGES

SFT, DISTILL, OBJECTS = "sft", "distill", "objects"  # objects: vision pretraining (train/object_maps.py)
TUNES = ("full", "frozen_vision", "lora")
MISSING_IMAGE_POLICIES = ("skip", "fail")
OVERLONG_POLICIES = ("drop", "truncate")


class ConfigError(ValueError):
    """A configuration that cannot train: unknown key, bad value, inconsistent settings."""


@dataclass
class ModelArguments:
    path: str = ""  # student checkpoint folder in the native layout (drive-mllm convert-checkpoint for originals)
    random_init: str = ""  # instead of path: a preset name (real sizes) or "tiny"; benchmarks and tests
    dtype: str = "auto"  # weights as loaded; mixed precision comes from training.bf16
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False


@dataclass
class DataArguments:
    drivelm_json: str = ""  # DriveLM v1.1 train JSON
    image_root: str = ""  # folder the JSON's image_paths are relative to (default: the JSON's folder)
    # More DriveLM v1.1 files mixed in (e.g. replay of earlier training data): a path or {json: PATH, image_root: DIR,
    # weight: W, question_filter: REGEX} each; W repeats every sample of that file (only the questions REGEX matches,
    # when given) on top of the stage weights (fractions drawn, seeded).
    extra_drivelm_json: list[str | dict[str, Any]] = field(default_factory=list)
    eval_json: str = ""  # held-out DriveLM JSON (the val split)
    eval_max_samples: int = 0  # 0: all
    layout: str = "stitched"
    camera_image_size: list[int] = field(default_factory=lambda: [1600, 900])  # pixels the tags refer to
    max_tiles: int = 12
    stage_weights: dict[str, float] = field(
        default_factory=lambda: {
            "perception": 1.0,
            "prediction": 1.0,
            "planning": 1.0,
            "behavior": 1.0,
            "trajectory": 1.0,
        }
    )
    # Also train each multiple-choice question's open form (its stem answered with the option's text): the node asks
    # "Predict the behavior of the ego vehicle.", and multiple_choice "rank" answering scores options that way.
    open_choices: bool = True
    general_json: str = ""  # LLaVA-style instruction data with images
    general_image_root: str = ""
    general_ratio: float = 0.25  # general samples per domain sample (paper: general:domain = 1:4)
    missing_images: str = "skip"
    max_length: int = 8192
    overlong: str = "drop"
    max_samples: int = 0  # 0: all (after weighting); for quick runs
    question_filter: str = ""  # a regular expression: only DriveLM QA whose question it matches (e.g. a first stage)
    # Train a frame's QA in one sequence (up to max_length tokens): the images once, each QA attending to them and to
    # itself only, as if alone (what the node's fast path serves); the held-out loss stays per QA.
    pack_frame_qa: bool = False
    # > 0: positions in tags and listings are written as location tokens, this many bins per axis (locations.py;
    # per_view only); added to a checkpoint's tokenizer that lacks them. 0: as the checkpoint writes them.
    location_bins: int = 0
    seed: int = 0


@dataclass
class MethodArguments:
    name: str = SFT
    tune: str = "full"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    teacher_path: str = ""
    teacher_device: str = ""  # default: the student's device
    teacher_dtype: str = "auto"  # auto: bf16 on a GPU, fp32 on CPU (the frozen teacher needs no fp32 master weights)
    teacher_cache: str = ""  # folder of precomputed top-k teacher logits (filled first when teacher_path is set)
    top_k: int = 0  # 0: full teacher distribution (no cache)
    temperature: float = 2.0
    ce_weight: float = 0.5
    kl_weight: float = 0.5
    vision_weight: float = 0.0
    vision_layers: int = 2  # last K vision layers matched by the vision-feature loss
    # > 0 (sft): weight of the pointer loss, which teaches the attention writing a tag's location tokens to land on
    # the object's image token (train/pointers.py); runs the language model with eager attention.
    pointer_weight: float = 0.0


@dataclass(frozen=True)
class DriveLMSource:
    """One DriveLM training file, the folder its image paths are relative to ("": its own) and its repeat weight."""

    json: str
    image_root: str = ""
    weight: float = 1.0
    question_filter: str = ""  # a regular expression: only the QA of this file whose question it matches


def check_question_filter(pattern: str, where: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"{where}: not a regular expression ({error}): '{pattern}'") from None


def extra_source(entry: Any, where: str) -> DriveLMSource:
    if isinstance(entry, str):
        entry = {"json": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("json"), str) or not entry["json"]:
        raise ConfigError(f"{where}: expected a path or a mapping with 'json' (a DriveLM v1.1 file), got {entry!r}")
    keys = [f.name for f in fields(DriveLMSource)]
    if unknown := sorted(set(entry) - set(keys)):
        raise unknown_key_error(f"{where}.{unknown[0]}", [f"{where}.{key}" for key in keys])
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"{where}.weight: expected a repeat weight > 0, got {weight!r}")
    question_filter = str(entry.get("question_filter") or "")
    check_question_filter(question_filter, f"{where}.question_filter")
    return DriveLMSource(entry["json"], str(entry.get("image_root") or ""), float(weight), question_filter)


def drivelm_sources(data: DataArguments) -> list[DriveLMSource]:
    """The DriveLM training files: data.drivelm_json (weight 1), then each entry of data.extra_drivelm_json."""
    extra = data.extra_drivelm_json
    if not isinstance(extra, list):
        raise ConfigError(f"data.extra_drivelm_json: expected a list of paths or {{json, image_root, weight}} "
                          f"mappings, got {extra!r}")
    main = DriveLMSource(data.drivelm_json, data.image_root)
    return [main, *(extra_source(entry, f"data.extra_drivelm_json[{i}]") for i, entry in enumerate(extra))]


class ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 with YAML 1.2's floats: `3e-4` is a number, as users write learning rates, not the string '3e-4'."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


SECTIONS: dict[str, type] = {"model": ModelArguments, "data": DataArguments, "method": MethodArguments}


@dataclass
class TrainConfig:
    model: ModelArguments
    data: DataArguments
    method: MethodArguments
    training: dict[str, Any]
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        sections = {name: vars(getattr(self, name)) for name in SECTIONS}
        return {**sections, "training": dict(self.training)}


def training_argument_names() -> list[str]:
    from transformers import TrainingArguments

    return [f.name for f in fields(TrainingArguments) if f.init]


def unknown_key_error(key: str, valid: list[str]) -> ConfigError:
    nearest = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{nearest[0]}'?" if nearest else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"config: unknown key '{key}'{hint}")


def valid_keys() -> list[str]:
    keys = [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)]
    return keys + [f"training.{name}" for name in training_argument_names()]


def apply_override(raw: dict[str, Any], override: str) -> None:
    """`section.key=value` (value parsed as YAML) into the raw config."""
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected section.key=value, e.g. training.learning_rate=1e-5")
    key, value = override.split("=", 1)
    if "." not in key:
        raise unknown_key_error(key, valid_keys())
    section, name = key.split(".", 1)
    raw.setdefault(section, {})[name] = load_yaml(value)


def parse_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file + overrides -> checked TrainConfig; unknown sections and keys name the nearest valid one."""
    raw = load_yaml(Path(path).read_text()) if path else {}
    raw = raw or {}
    for override in overrides:
        apply_override(raw, override)
    known = valid_keys()
    for section, values in raw.items():
        if section not in (*SECTIONS, "training"):
            raise unknown_key_error(section, [*SECTIONS, "training"])
        for name in values or {}:
            if f"{section}.{name}" not in known:
                raise unknown_key_error(f"{section}.{name}", known)
    parsed = {name: cls(**(raw.get(name) or {})) for name, cls in SECTIONS.items()}
    config = TrainConfig(**parsed, training=dict(raw.get("training") or {}), source=str(path or ""))
    check_config(config)
    return config


def check_config(config: TrainConfig) -> None:
    model, data, method = config.model, config.data, config.method
    problems = []
    if bool(model.path) == bool(model.random_init):
        problems.append("model: set exactly one of 'path' (a checkpoint folder) and 'random_init' (a preset)")
    if not data.drivelm_json:
        problems.append("data.drivelm_json: the DriveLM v1.1 training JSON is required")
    try:
        drivelm_sources(data)
        check_question_filter(data.question_filter, "data.question_filter")
    except ConfigError as error:
        problems.append(str(error))
    if data.layout not in ("stitched", "per_view"):
        problems.append(f"data.layout: expected 'stitched' or 'per_view', got '{data.layout}'")
    unknown_stages = sorted(set(data.stage_weights) - set(STAGES))
    if unknown_stages:
        problems.append(f"data.stage_weights: unknown stages {unknown_stages}; expected some of {list(STAGES)}")
    if data.missing_images not in MISSING_IMAGE_POLICIES:
        problems.append(f"data.missing_images: expected one of {MISSING_IMAGE_POLICIES}, got '{data.missing_images}'")
    if data.overlong not in OVERLONG_POLICIES:
        problems.append(f"data.overlong: expected one of {OVERLONG_POLICIES}, got '{data.overlong}'")
    if method.name not in (SFT, DISTILL, OBJECTS):
        problems.append(f"method.name: expected '{SFT}', '{DISTILL}' or '{OBJECTS}', got '{method.name}'")
    if method.name == OBJECTS and method.tune != "full":
        problems.append(f"method.tune: '{OBJECTS}' trains the vision tower and projector, expected 'full', got "
                        f"'{method.tune}'")
    if method.tune not in TUNES:
        problems.append(f"method.tune: expected one of {TUNES}, got '{method.tune}'")
    if method.name == DISTILL and not (method.teacher_path or method.teacher_cache):
        problems.append("method: distill needs 'teacher_path' (a native checkpoint) or a filled 'teacher_cache'")
    if method.name == DISTILL and method.vision_weight > 0 and not method.teacher_path:
        problems.append("method.vision_weight: vision-feature distillation needs the teacher model (teacher_path)")
    if data.location_bins < 0 or data.location_bins == 1:
        problems.append(f"data.location_bins: expected 0 (decimals) or at least 2 bins per axis, got {data.location_bins}")
    if data.location_bins and data.layout != "per_view":
        problems.append(f"data.location_bins: location tokens need data.layout 'per_view', got '{data.layout}'")
    if method.pointer_weight < 0:
        problems.append(f"method.pointer_weight: expected a weight >= 0, got {method.pointer_weight}")
    if method.pointer_weight > 0 and method.name != SFT:
        problems.append(f"method.pointer_weight: pointer supervision runs with method.name '{SFT}', got '{method.name}'")
    if "output_dir" not in config.training:
        problems.append("training.output_dir: required (checkpoints, metrics and the exported model go there)")
    if problems:
        raise ConfigError("config: " + "; ".join(problems))
