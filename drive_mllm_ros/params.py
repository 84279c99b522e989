"""The node's parameter schema: defaults, ROS names and validation with errors that name the parameter.

config/drive_mllm.yaml documents the same defaults (a test keeps them equal). Pure Python.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .cameras import DEFAULT_TOPIC_PATTERN, NUSCENES_CAMERAS, CameraRig
from .drivelm import Q_BEHAVIOR_OPEN, Q_FUTURE_CONFLICT, Q_IMPORTANT_OBJECTS, Q_SAFE_ACTIONS, STAGES
from .hard_cases import HardCaseSettings
from .prompt import LAYOUTS, PromptBuilder, checkpoint_layout
from .scene import OBJECT_SLOT, StageQuestions
from .sync import MISSING_POLICIES

UNSET = ""  # ROS parameter arrays cannot be empty in YAML: [""] stands for "none"
TRANSPORTS = ("compressed", "raw")
RELIABILITIES = ("best_effort", "reliable")
DEVICES_PREFIXES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _default_questions() -> dict[str, list[str]]:
    return {
        "perception": [Q_IMPORTANT_OBJECTS],
        "prediction": [Q_FUTURE_CONFLICT.replace("{object}", OBJECT_SLOT)],
        "planning": [Q_SAFE_ACTIONS],
        "behavior": [Q_BEHAVIOR_OPEN],
        "trajectory": [],
    }


def _default_budgets() -> dict[str, int]:
    return {"perception": 96, "prediction": 16, "planning": 64, "behavior": 32, "trajectory": 64}


@dataclass
class NodeParams:
    model_path: str = ""
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    layout: str = "auto"  # auto: the checkpoint's own (drive_mllm.json), else stitched
    cameras: list[str] = field(default_factory=lambda: list(NUSCENES_CAMERAS))
    camera_topics: list[str] = field(default_factory=list)
    topic_pattern: str = DEFAULT_TOPIC_PATTERN
    image_transport: str = "compressed"
    image_qos_reliability: str = "best_effort"
    image_width: int = 1600
    image_height: int = 900
    mosaic_columns: int = 3
    anchor_camera: str = "CAM_FRONT"
    sync_tolerance: float = 0.05
    sync_max_wait: float = 0.25
    missing_camera_policy: str = "drop"
    questions: dict[str, list[str]] = field(default_factory=_default_questions)
    max_new_tokens: dict[str, int] = field(default_factory=_default_budgets)
    max_objects: int = 3
    question_file: str = ""
    question_file_tolerance: float = 0.025
    publish_annotated: bool = True
    annotated_jpeg_quality: int = 80
    trajectory_frame_id: str = "base_link"
    diagnostics_period: float = 1.0
    hard_cases: HardCaseSettings = field(default_factory=HardCaseSettings)
    autostart: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.hard_cases, dict):  # flat ROS values arrive as a dict
            self.hard_cases = HardCaseSettings(**self.hard_cases)

    def ros_defaults(self) -> dict[str, Any]:
        """Flat ROS parameter names ('questions.perception') -> default values, with [""] for empty lists."""
        flat: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if isinstance(value, dict):
                flat.update(
                    {f"{name}.{stage}": v or [UNSET] if isinstance(v, list) else v for stage, v in value.items()}
                )
            else:
                flat[name] = value or [UNSET] if isinstance(value, list) else value
        return flat

    @classmethod
    def from_ros(cls, flat: dict[str, Any]) -> NodeParams:
        """Build and validate from flat ROS values (unknown names are ignored: ROS rejects undeclared ones)."""
        values: dict[str, Any] = {}
        dict_fields = {f.name for f in fields(cls) if f.name in ("questions", "max_new_tokens", "hard_cases")}
        for name, value in flat.items():
            if isinstance(value, (list, tuple)):
                value = [v for v in value if v != UNSET]
            prefix, _, stage = name.partition(".")
            if prefix in dict_fields and stage:
                values.setdefault(prefix, {})[stage] = value
            elif name in {f.name for f in fields(cls)}:
                values[name] = value
        params = cls(**values)
        params.validate()
        return params

    def validate(self) -> None:
        """Raise ValueError naming the first invalid parameter and what is expected."""
        _choice("layout", self.layout, ("auto", *LAYOUTS))
        _choice("image_transport", self.image_transport, TRANSPORTS)
        _choice("image_qos_reliability", self.image_qos_reliability, RELIABILITIES)
        _choice("missing_camera_policy", self.missing_camera_policy, MISSING_POLICIES)
        _choice("dtype", self.dtype, DTYPES)
        if not self.device.startswith(DEVICES_PREFIXES):
            raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got '{self.device}'")
        for name in ("sync_tolerance", "diagnostics_period", "question_file_tolerance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {getattr(self, name)}")
        if self.sync_max_wait < 0:
            raise ValueError(f"sync_max_wait: expected >= 0 s, got {self.sync_max_wait}")
        if not 1 <= self.annotated_jpeg_quality <= 100:
            raise ValueError(f"annotated_jpeg_quality: expected 1..100, got {self.annotated_jpeg_quality}")
        if self.max_objects < 0:
            raise ValueError(f"max_objects: expected >= 0, got {self.max_objects}")
        for stage in (*self.questions, *self.max_new_tokens):
            if stage not in STAGES:
                raise ValueError(f"questions.{stage}: unknown stage, expected one of {STAGES}")
        if self.question_file and not Path(self.question_file).is_file():
            raise ValueError(
                f"question_file: '{self.question_file}' is not a file (expected a DriveLM JSON or an "
                "'eval prepare' test file)"
            )
        self.rig()
        self.stage_questions()
        self.hard_cases.validate()

    def rig(self) -> CameraRig:
        size = (self.image_width, self.image_height)
        common = {"anchor": self.anchor_camera, "columns": self.mosaic_columns, "image_size": size}
        if self.camera_topics:
            return CameraRig(names=tuple(self.cameras), topics=tuple(self.camera_topics), **common)
        return CameraRig.from_names(self.cameras, self.topic_pattern, **common)

    def stage_questions(self) -> StageQuestions:
        return StageQuestions(self.questions, dict(self.max_new_tokens), self.max_objects)

    def prompt_builder(self, model_path: str) -> PromptBuilder:
        """The prompt builder for a checkpoint: layout "auto" takes the one the checkpoint was made for."""
        layout = self.layout if self.layout != "auto" else checkpoint_layout(model_path) or "stitched"
        return PromptBuilder(self.rig(), layout)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got '{value}'")
