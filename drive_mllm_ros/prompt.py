"""The one prompt builder: multi-view prompt text and chat messages, shared by serving and training.

Two layouts (METHOD.md): ``stitched`` shows one 2x3 mosaic and writes object coordinates
normalised to 0..1000 over it; ``per_view`` shows one image per camera, each announced as
``CAM_FRONT: <image>``, and keeps camera pixels. Pure Python.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cameras import CameraRig
from .drivelm import TAG_PATTERN, format_tag
from .locations import LocationGrid

LAYOUTS: tuple[str, ...] = ("stitched", "per_view")
IMAGE_PLACEHOLDER = "<image>"
LAYOUT_FILE = "drive_mllm.json"  # written into checkpoints we make: the layout they were trained for
# rank: a multiple-choice question is answered with the option whose text the model finds likeliest as the answer to
# the question's stem (as lm-evaluation-harness scores choices); a small student reads the answer from the images but
# does not learn to name its letter (docs/STUDENT.md, run 6).
MULTIPLE_CHOICE_MODES: tuple[str, ...] = ("generate", "rank")


def checkpoint_settings(checkpoint: str | Path) -> dict[str, Any]:
    """The checkpoint's drive_mllm.json ({} when absent)."""
    path = Path(checkpoint) / LAYOUT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def update_checkpoint_settings(checkpoint: str | Path, **values: Any) -> None:
    """Set settings in the checkpoint's drive_mllm.json, keeping the others."""
    path = Path(checkpoint) / LAYOUT_FILE
    path.write_text(json.dumps({**checkpoint_settings(checkpoint), **values}) + "\n")


def checkpoint_setting(checkpoint: str | Path, key: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    """A setting from the checkpoint's drive_mllm.json (`default` when the file or key is absent)."""
    value = checkpoint_settings(checkpoint).get(key, default)
    if value != default and value not in allowed:
        raise ValueError(f"{Path(checkpoint) / LAYOUT_FILE}: '{key}' must be one of {allowed}, got {value!r}")
    return value


def write_checkpoint_setting(checkpoint: str | Path, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}: expected one of {allowed}, got '{value}'")
    update_checkpoint_settings(checkpoint, **{key: value})


def checkpoint_locations(checkpoint: str | Path) -> LocationGrid | None:
    """The location-token grid the checkpoint writes positions with (None: decimals; locations.py): its bins per
    axis and the camera-pixel extent they span, that of its training data."""
    settings = checkpoint_settings(checkpoint)
    bins, extent = settings.get("location_bins", 0), settings.get("location_extent")
    if not bins:
        return None
    valid_extent = isinstance(extent, list) and len(extent) == 2 and all(
        isinstance(v, int | float) and v > 0 for v in extent)
    if isinstance(bins, bool) or not isinstance(bins, int) or not valid_extent:
        raise ValueError(f"{Path(checkpoint) / LAYOUT_FILE}: expected 'location_bins' (a whole number >= 2) and "
                         f"'location_extent' ([width, height] in pixels), got {bins!r} and {extent!r}")
    return LocationGrid(bins, float(extent[0]), float(extent[1]))


def checkpoint_layout(checkpoint: str | Path) -> str | None:
    """The layout a checkpoint was made for (None when it does not say, e.g. a downloaded one)."""
    return checkpoint_setting(checkpoint, "layout", LAYOUTS, None)


def write_checkpoint_layout(checkpoint: str | Path, layout: str) -> None:
    write_checkpoint_setting(checkpoint, "layout", layout, LAYOUTS)


def checkpoint_pointer_decoding(checkpoint: str | Path) -> bool:
    """Whether the checkpoint's tags are placed by its attention (pointing.py): a pointer-trained checkpoint."""
    value = checkpoint_settings(checkpoint).get("pointer_decoding", False)
    if not isinstance(value, bool):
        raise ValueError(f"{Path(checkpoint) / LAYOUT_FILE}: 'pointer_decoding' must be true or false, got {value!r}")
    return value


def checkpoint_multiple_choice(checkpoint: str | Path) -> str:
    """How a checkpoint answers multiple-choice questions: "generate" the letter (default) or "rank" the options."""
    return checkpoint_setting(checkpoint, "multiple_choice", MULTIPLE_CHOICE_MODES, "generate") or "generate"


def write_checkpoint_multiple_choice(checkpoint: str | Path, mode: str) -> None:
    write_checkpoint_setting(checkpoint, "multiple_choice", mode, MULTIPLE_CHOICE_MODES)


@dataclass(frozen=True)
class PromptBuilder:
    rig: CameraRig = CameraRig()
    layout: str = "stitched"
    system_prompt: str = ""
    locations: LocationGrid | None = None  # positions as location tokens (locations.py), per_view only

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {LAYOUTS}, got '{self.layout}'")
        if self.locations and self.layout != "per_view":
            raise ValueError(f"location tokens need the per_view layout, got '{self.layout}'")

    @property
    def image_count(self) -> int:
        return 1 if self.layout == "stitched" else len(self.rig.names)

    def to_model_text(self, text: str) -> str:
        """Camera-pixel tags -> the layout's coordinates (mosaic 0..1000 when stitched, location tokens when set)."""
        if self.locations:
            return self.locations.to_tokens(text)
        if self.layout != "stitched":
            return text
        return TAG_PATTERN.sub(lambda m: self._convert_tag(m, to_mosaic=True), text)

    def from_model_text(self, text: str) -> str:
        """The layout's coordinates -> camera-pixel tags (inverse of ``to_model_text``)."""
        if self.locations:
            return self.locations.from_tokens(text)
        if self.layout != "stitched":
            return text
        return TAG_PATTERN.sub(lambda m: self._convert_tag(m, to_mosaic=False), text)

    def _convert_tag(self, match: re.Match, to_mosaic: bool) -> str:
        object_id, camera, x, y = match.group(1), match.group(2), float(match.group(3)), float(match.group(4))
        if camera not in self.rig.names:
            return match.group(0)  # unknown camera: leave it for the answer parser to report
        if to_mosaic:
            x, y = self.rig.to_mosaic(camera, x, y)
        else:
            camera, x, y = self.rig.from_mosaic(x, y, camera)
        return format_tag(object_id, camera, x, y)

    def user_text(self, question: str) -> str:
        """Image placeholders (annotated with camera positions) followed by the question."""
        if self.layout == "stitched":
            images = IMAGE_PLACEHOLDER
        else:
            images = "\n".join(f"{name}: {IMAGE_PLACEHOLDER}" for name in self.rig.names)
        return f"{images}\n{self.to_model_text(question)}"

    def messages(self, question: str, answer: str | None = None) -> list[dict[str, str]]:
        """Chat messages for one question (and its answer, for training)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": self.user_text(question)})
        if answer is not None:
            messages.append({"role": "assistant", "content": self.to_model_text(answer)})
        return messages

    def render(self, tokenizer: Any, question: str, answer: str | None = None) -> str:
        """Prompt text through the checkpoint's own chat template (generation prompt when no answer)."""
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "tokenizer: the checkpoint has no chat template; add chat_template.jinja to the "
                "checkpoint folder or set 'chat_template' in its model preset"
            )
        return tokenizer.apply_chat_template(
            self.messages(question, answer), tokenize=False, add_generation_prompt=answer is None
        )
