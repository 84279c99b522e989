"""Model presets (models/*.yaml) and the InternVL architecture they describe.

`build_config` turns sizes (a preset, a dict or `ArchitectureSizes`) into a transformers InternVLConfig:
the tiny test checkpoint, random-init real-size models for training and benchmarks, and checks of
downloaded checkpoints all start from it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .paths import share_dir
from .prompt import LAYOUTS


@dataclass(frozen=True)
class ArchitectureSizes:
    """The sizes that define an InternVL-family model: InternViT vision tower + MLP projector + Qwen2 LLM.

    Defaults are InternVL3-1B's (InternViT-300M-448px, Qwen2.5-0.5B).
    """

    vision_hidden_size: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    vision_intermediate_size: int = 4096
    vision_attention_bias: bool = True
    tile_size: int = 448
    patch_size: int = 14
    downsample_ratio: float = 0.5
    text_hidden_size: int = 896
    text_layers: int = 24
    text_heads: int = 14
    text_kv_heads: int = 2
    text_intermediate_size: int = 4864
    vocab_size: int = 151674
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = True
    image_token_id: int = 151667
    max_position_embeddings: int = 32768

    @property
    def image_seq_length(self) -> int:
        """Visual tokens per tile: (tile / patch)^2 patches, pixel-unshuffled by the downsample ratio."""
        return int((self.tile_size // self.patch_size) ** 2 * self.downsample_ratio**2)

    @classmethod
    def from_dict(cls, sizes: dict[str, Any]) -> ArchitectureSizes:
        known = {f.name for f in fields(cls)}
        if set(sizes) - known:
            raise ValueError(f"architecture: unknown keys {sorted(set(sizes) - known)}; expected some of "
                             f"{sorted(known)}")
        return cls(**sizes)


def build_config(sizes: ArchitectureSizes | dict[str, Any] | str) -> Any:
    """An InternVLConfig from sizes, a dict of them, or a preset name (random init needs only this)."""
    from transformers import InternVLConfig

    if isinstance(sizes, str):
        sizes = load_preset(sizes).sizes
    elif isinstance(sizes, dict):
        sizes = ArchitectureSizes.from_dict(sizes)
    vision = {
        "hidden_size": sizes.vision_hidden_size, "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads, "intermediate_size": sizes.vision_intermediate_size,
        "attention_bias": sizes.vision_attention_bias,
        "image_size": [sizes.tile_size, sizes.tile_size], "patch_size": [sizes.patch_size, sizes.patch_size],
    }
    text = {
        "model_type": "qwen2", "hidden_size": sizes.text_hidden_size, "num_hidden_layers": sizes.text_layers,
        "num_attention_heads": sizes.text_heads, "num_key_value_heads": sizes.text_kv_heads,
        "intermediate_size": sizes.text_intermediate_size, "vocab_size": sizes.vocab_size,
        "rope_theta": sizes.rope_theta, "tie_word_embeddings": sizes.tie_word_embeddings,
        "max_position_embeddings": sizes.max_position_embeddings, "bos_token_id": 151643, "eos_token_id": 151645,
    }
    return InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=sizes.image_token_id,
        image_seq_length=sizes.image_seq_length, downsample_ratio=sizes.downsample_ratio,
        tie_word_embeddings=sizes.tie_word_embeddings,
    )


@dataclass(frozen=True)
class ModelPreset:
    """A real checkpoint: where it comes from, its layout and sizes, and the node settings it wants."""

    id: str
    hf_repo: str
    format: str  # "native": loads as downloaded; "original": remote-code layout, convert-checkpoint first
    layout: str
    chat_template: str
    sizes: ArchitectureSizes
    max_tiles: int
    max_new_tokens: dict[str, int]
    weights: str


def presets_dir() -> Path:
    return share_dir() / "models"


def preset_names() -> list[str]:
    return sorted(path.stem for path in presets_dir().glob("*.yaml"))


def load_preset(name: str) -> ModelPreset:
    """models/<name>.yaml, validated (layout, format, and image_seq_length against the sizes)."""
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"model preset '{name}' not found in {presets_dir()}; expected one of {preset_names()}")
    data = yaml.safe_load(path.read_text())
    sizes = ArchitectureSizes.from_dict(data["architecture"])
    if data["layout"] not in LAYOUTS or data["format"] not in ("native", "original"):
        raise ValueError(f"{path}: layout must be one of {LAYOUTS} and format 'native' or 'original'")
    if data.get("image_seq_length", sizes.image_seq_length) != sizes.image_seq_length:
        raise ValueError(f"{path}: image_seq_length {data['image_seq_length']} disagrees with the sizes, which "
                         f"give {sizes.image_seq_length}")
    node = data["node"]
    return ModelPreset(id=data["id"], hf_repo=data["hf_repo"], format=data["format"], layout=data["layout"],
                       chat_template=data["chat_template"], sizes=sizes, max_tiles=node["max_tiles"],
                       max_new_tokens=dict(node["max_new_tokens"]), weights=data["weights"])
