"""`drive-mllm eval predict`: a checkpoint's answers to a test file's questions, without ROS.

Each key frame's six camera images (the test file's `image_paths`, relative to `--image-root`, default the test
file's folder) go through `DrivingModel` as the node would feed them; its questions are answered as one batch.
`--blank-images` feeds black views instead: the baseline that shows how much the model reads the cameras.
The output is the challenge's prediction format, `[{id, question, answer}, ...]`, for `eval score --pred`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..model import DrivingModel
from ..prompt import PromptBuilder, checkpoint_layout
from ..train.data import read_image
from .testset import ANSWER_BUDGET, GtItem, key_frames, load_json, load_test


def frame_views(frame_data: dict, builder: PromptBuilder, image_root: Path, blank: bool) -> list[np.ndarray]:
    """The frame's views in rig order (RGB), or black views of the same sizes when `blank`."""
    paths = frame_data.get("image_paths") or {}
    missing = [camera for camera in builder.rig.names if camera not in paths]
    if missing:
        raise ValueError(f"test file: a key frame has no image path for {missing}")
    views = [read_image(str(image_root / paths[camera])) for camera in builder.rig.names]
    return [np.zeros_like(view) for view in views] if blank else views


def predict(model: DrivingModel, test_path: str | Path, image_root: str | Path | None = None, blank: bool = False,
            max_new_tokens: int = ANSWER_BUDGET) -> list[dict[str, str]]:
    """Answers to every question of a prepared test file, frame by frame."""
    test_path = Path(test_path)
    image_root = Path(image_root) if image_root else test_path.parent
    items_by_frame: dict[tuple[str, str], list[GtItem]] = defaultdict(list)
    for item in load_test(test_path):
        items_by_frame[(item.scene, item.frame)].append(item)
    predictions = []
    for scene, frame, frame_data in key_frames(load_json(test_path, "GT test file"), str(test_path)):
        items = items_by_frame[(scene, frame)]
        if not items:
            continue
        prepared = model.prepare(frame_views(frame_data, model.builder, image_root, blank))
        answers = model.answer(prepared, [item.question for item in items], max_new_tokens)
        predictions += [{"id": item.id, "question": item.question, "answer": answer}
                        for item, answer in zip(items, answers, strict=True)]
    return predictions


def load_for_prediction(checkpoint: str | Path, device: str = "auto") -> DrivingModel:
    """The checkpoint with the layout it was trained for (drive_mllm.json; per_view when it does not say)."""
    layout = checkpoint_layout(checkpoint) or "per_view"
    return DrivingModel.load(checkpoint, PromptBuilder(layout=layout), device=device)


def write_predictions(predictions: list[dict[str, str]], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(predictions, indent=1, ensure_ascii=False), encoding="utf-8")
    return out
