"""The trained student as a folder the node loads as is: native InternVL layout, tokenizer, processor files, card.

LoRA adapters are merged and the training-only heads (distillation projection, object-map head) dropped first. The folder is written next to its
target and renamed into place, so a failed save (disk full, killed process) leaves the previous export intact
and never a half-written one under the final name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ..locations import LocationGrid
from ..preprocess import TilingSpec
from ..prompt import update_checkpoint_settings, write_checkpoint_layout, write_checkpoint_multiple_choice
from ..tiny_model import preprocessor_config
from .arguments import TrainConfig
from .distill import PROJECTION_ATTRIBUTE, unwrap
from .object_maps import HEAD_ATTRIBUTE


def servable_model(model: nn.Module) -> nn.Module:
    """The plain InternVL model: DDP unwrapped, LoRA merged, training-only modules removed."""
    model = getattr(model, "module", model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model = unwrap(model)
    for attribute in (PROJECTION_ATTRIBUTE, HEAD_ATTRIBUTE):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model


def processor_files(spec: TilingSpec, image_seq_length: int) -> dict[str, dict]:
    image_processor = preprocessor_config(spec.tile_size, spec.crop_to_patches, spec.max_tiles)
    image_processor.update(image_mean=list(spec.mean), image_std=list(spec.std), rescale_factor=spec.rescale_factor)
    processor = {"processor_class": "InternVLProcessor", "image_seq_length": image_seq_length}
    return {"preprocessor_config.json": image_processor, "processor_config.json": processor}


def model_card(config: TrainConfig, data_summary: str, steps: int, metrics: dict[str, float]) -> str:
    evaluation = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items()))
    evaluation = (
        f"| metric | value |\n|---|---|\n{evaluation}"
        if evaluation
        else "Not evaluated yet: run `drive-mllm eval` on the DriveLM val split and add the scores here."
    )
    return f"""# drive_mllm_ros student

InternVL-family checkpoint in the native transformers layout (no remote code), trained with
`drive-mllm train` ({config.method.name}, {config.method.tune}). Loads in the drive_mllm node as is
(`model_path` = this folder, layout `{config.data.layout}`).

## Data
{data_summary}

## Training
{steps} optimizer steps.

```yaml
{yaml.safe_dump(config.as_dict(), sort_keys=False)}```

## Evaluation
{evaluation}
"""


def write_export(folder: Path, model: nn.Module, tokenizer: Any, spec: TilingSpec, card: str, layout: str,
                 multiple_choice: str, locations: LocationGrid | None, pointer_decoding: bool) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    write_checkpoint_layout(folder, layout)  # the node serves it with the layout it was trained for
    write_checkpoint_multiple_choice(folder, multiple_choice)  # and answers multiple choice as its source did
    if locations:
        update_checkpoint_settings(folder, **locations.settings())  # and writes positions as it learned to
    if pointer_decoding:
        update_checkpoint_settings(folder, pointer_decoding=True)  # its attention places the tags (pointing.py)
    tokenizer.save_pretrained(folder)
    for name, content in processor_files(spec, model.config.image_seq_length).items():
        (folder / name).write_text(json.dumps(content, indent=2))
    (folder / "README.md").write_text(card)


def export_model(model: nn.Module, tokenizer: Any, spec: TilingSpec, target: Path, card: str, layout: str,
                 multiple_choice: str = "generate", locations: LocationGrid | None = None,
                 pointer_decoding: bool = False) -> Path:
    """Write the servable checkpoint to `target` atomically (temp folder, then rename over the old one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write_export(staging, servable_model(model), tokenizer, spec, card, layout, multiple_choice, locations,
                     pointer_decoding)
        previous = target.with_name(f".{target.name}.old")
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
