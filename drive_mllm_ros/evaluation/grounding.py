"""`drive-mllm eval grounding`: how much a model's answers depend on the camera images.

Every QA of every key frame in a DriveLM v1.1 file is scored teacher-forced through the serving prompt (mean
cross-entropy per answer token) three ways: with the frame's own views, with the views of the frame halfway
round the file (another scene, as a rule) and with black views. Per question kind, `other - own` is what the
images are worth in nats per token: about 0 means the model answers from the question alone, whatever its
accuracy. Forward passes only, so it is cheap enough to run on training checkpoints to see grounding start.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..drivelm import Q_LOCATE_OBJECT, TAG_PATTERN
from ..model import DrivingModel
from .predict import frame_views
from .testset import key_frames, load_json

VIEWS = ("own", "other", "blank")
LOCATE = re.compile(re.escape(Q_LOCATE_OBJECT).replace(re.escape("{description}"), ".+"))
OPTIONS = re.compile(r"\s*Please select the correct answer from the following options:.*$", re.DOTALL)


def question_kind(question: str) -> str:
    """The question's template: object tags, described objects and multiple-choice options removed."""
    kind = OPTIONS.sub("", TAG_PATTERN.sub("<object>", question)).strip()
    return Q_LOCATE_OBJECT.format(description="<object>") if LOCATE.fullmatch(kind) else kind


@dataclass
class KindLoss:
    """Summed answer losses of one question kind, per kind of views."""

    count: int = 0
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(VIEWS, 0.0))

    def row(self) -> dict[str, float]:
        means = {view: total / self.count for view, total in self.totals.items()}
        return {"qa": self.count, **means, "gap_other": means["other"] - means["own"],
                "gap_blank": means["blank"] - means["own"]}


def frame_entries(drivelm_path: Path, frames: int) -> list[tuple[str, dict]]:
    """(where, frame) of up to `frames` key frames spread evenly over the file."""
    entries = [(f"scene '{scene}' frame '{frame}'", data)
               for scene, frame, data in key_frames(load_json(drivelm_path, "DriveLM JSON"), str(drivelm_path))]
    if not entries:
        raise ValueError(f"{drivelm_path}: expected DriveLM key frames, found none")
    step = max(1, len(entries) // frames) if frames else 1
    return entries[::step][: frames or None]


def own_views(frame: dict, model: DrivingModel, image_root: Path, where: str) -> list[np.ndarray]:
    try:
        return frame_views(frame, model.builder, image_root, blank=False)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def grounding(model: DrivingModel, drivelm_path: str | Path, image_root: str | Path | None = None,
              frames: int = 16) -> dict[str, dict[str, float]]:
    """Per question kind (and "all"): QA count, mean answer loss with own/other/blank views, and the gaps."""
    drivelm_path = Path(drivelm_path)
    image_root = Path(image_root) if image_root else drivelm_path.parent
    entries = frame_entries(drivelm_path, frames)
    views = [own_views(frame, model, image_root, where) for where, frame in entries]
    losses: dict[str, KindLoss] = defaultdict(KindLoss)
    for index, (_, frame) in enumerate(tqdm(entries, desc="grounding", unit="frame")):
        own = views[index]
        prepared = {"own": model.prepare(own), "other": model.prepare(views[(index + len(views) // 2) % len(views)]),
                    "blank": model.prepare([np.zeros_like(view) for view in own])}
        for items in (frame.get("QA") or {}).values():
            for qa in items:
                kind = question_kind(qa["Q"])
                for bucket in (losses[kind], losses["all"]):
                    bucket.count += 1
                for view, images in prepared.items():
                    loss = model.answer_losses(images, qa["Q"], [qa["A"]])[0]
                    losses[kind].totals[view] += loss
                    losses["all"].totals[view] += loss
    return {kind: bucket.row() for kind, bucket in sorted(losses.items(), key=lambda item: (item[0] != "all", item[0]))}


def grounding_table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| question kind | QA | own views | other scene | black views | gap other | gap black |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {kind[:70]} | {row['qa']} | {row['own']:.4f} | {row['other']:.4f} | {row['blank']:.4f} | "
              f"{row['gap_other']:+.4f} | {row['gap_blank']:+.4f} |" for kind, row in rows.items()]
    return "\n".join(lines)


def write_grounding(rows: dict[str, dict[str, float]], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return out
