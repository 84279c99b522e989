"""`drive-mllm convert-checkpoint`: an original InternVL2 / Mini-InternVL checkpoint (Qwen2 LLM) -> native layout.

The original (remote-code `InternVLChatModel`) folder is read as data only: config.json for the sizes, safetensors
(or pickle-free `torch.load(weights_only=True)`) for the weights, no code is run. Key names follow transformers'
`convert_internvl_weights_to_hf.py`: `vision_model.*` -> `vision_tower.*` (InternViT parts renamed, fused `qkv`
split into q/k/v), `mlp1.{0,1,3}` -> `multi_modal_projector.{layer_norm,linear_1,linear_2}`, and
`language_model.model.*` / `language_model.lm_head.*` kept (the Qwen2 names are already native). The config is
rebuilt with the shared architecture builder, the result is loaded back with strict key checks and exported
atomically with tokenizer, processor files and a model card, like a trained student.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..preprocess import TilingSpec
from ..presets import ArchitectureSizes, build_config, load_preset
from ..prompt import LAYOUTS
from ..tiny_model import CHATML_TEMPLATE, IMAGE_CONTEXT_TOKEN, IMAGE_END_TOKEN, IMAGE_START_TOKEN
from .save import export_model

# Applied in order to vision keys (InternViT -> InternVLVisionModel); `attn.qkv` is split separately.
VISION_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^vision_model\.", "vision_tower."),
    (r"\.layers\.", ".layer."),
    (r"\.class_embedding$", ".cls_token"),
    (r"\.position_embedding$", ".position_embeddings"),
    (r"\.patch_embedding\.", ".patch_embeddings.projection."),
    (r"\.ls(\d)$", r".lambda_\1"),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.", ".attention."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
)
PROJECTOR_RENAMES = {
    "mlp1.0.": "multi_modal_projector.layer_norm.",
    "mlp1.1.": "multi_modal_projector.linear_1.",
    "mlp1.3.": "multi_modal_projector.linear_2.",
}


class ConversionError(ValueError):
    """A source folder that is not an original-format InternVL2 checkpoint with a Qwen2 LLM."""


def native_key(key: str) -> str:
    if key.startswith("vision_model."):
        for pattern, replacement in VISION_RENAMES:
            key = re.sub(pattern, replacement, key)
        return key
    for prefix, replacement in PROJECTOR_RENAMES.items():
        if key.startswith(prefix):
            return replacement + key[len(prefix) :]
    if key.startswith(("language_model.model.", "language_model.lm_head.")):
        return key
    raise ConversionError(f"weight '{key}': not an InternVL2 name (vision_model.*, mlp1.*, language_model.*)")


def convert_state_dict(original: dict[str, torch.Tensor], tie_word_embeddings: bool) -> dict[str, torch.Tensor]:
    """Original weights -> native names; the fused vision qkv becomes q_proj/k_proj/v_proj."""
    converted = {}
    for key, tensor in original.items():
        if tie_word_embeddings and key.startswith("language_model.lm_head."):
            continue  # tied to the embeddings in the native model
        name = native_key(key)
        if ".attention.qkv." in name:
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                converted[name.replace(".qkv.", f".{part}.")] = chunk.contiguous()
        else:
            converted[name] = tensor
    return converted


def architecture_sizes(config: dict, image_token_id: int) -> ArchitectureSizes:
    """Sizes from an original config.json (`vision_config`, `llm_config`, `downsample_ratio`, `force_image_size`)."""
    vision, llm = config.get("vision_config"), config.get("llm_config")
    if not isinstance(vision, dict) or not isinstance(llm, dict):
        raise ConversionError(
            "config.json has no 'vision_config'/'llm_config': not an original InternVL2 checkpoint "
            "(a native -hf checkpoint loads as is)"
        )
    architectures = llm.get("architectures") or [llm.get("model_type", "?")]
    if architectures[0] != "Qwen2ForCausalLM":
        raise ConversionError(
            f"the LLM is {architectures[0]}; only Qwen2 LLMs (Mini-InternVL2-1B, InternVL2-1B) "
            "convert without remote code"
        )
    if vision.get("qk_normalization") or vision.get("norm_type", "layer_norm") != "layer_norm":
        raise ConversionError(
            "the vision tower uses qk normalisation or RMS norm (InternViT-6B); only "
            "InternViT-300M-style towers are supported"
        )
    tile = config.get("force_image_size") or vision["image_size"]
    return ArchitectureSizes(
        vision_hidden_size=vision["hidden_size"],
        vision_layers=vision["num_hidden_layers"],
        vision_heads=vision["num_attention_heads"],
        vision_intermediate_size=vision["intermediate_size"],
        vision_attention_bias=vision.get("qkv_bias", True),
        tile_size=tile,
        patch_size=vision["patch_size"],
        downsample_ratio=config.get("downsample_ratio", 0.5),
        text_hidden_size=llm["hidden_size"],
        text_layers=llm["num_hidden_layers"],
        text_heads=llm["num_attention_heads"],
        text_kv_heads=llm.get("num_key_value_heads", llm["num_attention_heads"]),
        text_intermediate_size=llm["intermediate_size"],
        vocab_size=llm["vocab_size"],
        rope_theta=llm.get("rope_theta", 1_000_000.0),
        tie_word_embeddings=llm.get("tie_word_embeddings", False),
        image_token_id=image_token_id,
        max_position_embeddings=llm.get("max_position_embeddings", 32768),
    )


def read_weights(source: Path) -> dict[str, torch.Tensor]:
    """All weight shards of a folder: safetensors, else pickle-free `torch.load(weights_only=True)`."""
    shards = sorted(source.glob("*.safetensors"))
    if shards:
        return {k: v for shard in shards for k, v in load_file(shard).items()}
    shards = sorted(source.glob("*.bin"))
    if not shards:
        raise ConversionError(f"'{source}' has no *.safetensors or *.bin weights")
    return {k: v for shard in shards for k, v in torch.load(shard, map_location="cpu", weights_only=True).items()}


def load_tokenizer(source: Path) -> Any:
    """The checkpoint's own tokenizer (no remote code) with InternVL's image tokens named, and ChatML if absent."""
    from transformers import AutoTokenizer

    named = {
        "start_image_token": IMAGE_START_TOKEN,
        "end_image_token": IMAGE_END_TOKEN,
        "context_image_token": IMAGE_CONTEXT_TOKEN,
    }
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, extra_special_tokens=named)
    except ValueError as error:
        raise ConversionError(f"'{source}': the tokenizer needs remote code or is unreadable: {error}") from error
    if tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN) in (None, tokenizer.unk_token_id):
        raise ConversionError(f"'{source}': the tokenizer has no {IMAGE_CONTEXT_TOKEN} token")
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE  # InternVL2's "Hermes-2" template is ChatML
    return tokenizer


def load_converted(config: Any, state: dict[str, torch.Tensor], dtype: torch.dtype, staging: Path) -> Any:
    """Write config + weights, load them back and refuse any missing or unexpected weight."""
    from transformers import InternVLForConditionalGeneration

    config.save_pretrained(staging)
    save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
    model, info = InternVLForConditionalGeneration.from_pretrained(staging, dtype=dtype, output_loading_info=True)
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[name]}
    if problems:
        raise ConversionError(f"converted weights do not fit the native model: {problems}")
    return model


def convert(source: Path, out: Path, layout: str, preset: str | None = None) -> Path:
    original = json.loads((source / "config.json").read_text())
    tokenizer = load_tokenizer(source)
    sizes = architecture_sizes(original, tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN))
    max_tiles = original.get("max_dynamic_patch", 12)
    if preset:
        expected = load_preset(preset)
        if expected.sizes != sizes:
            raise ConversionError(
                f"'{source}' does not have the sizes of preset '{preset}': {sizes} vs {expected.sizes}"
            )
        layout, max_tiles = expected.layout, expected.max_tiles
    weights = read_weights(source)
    dtype = next(iter(weights.values())).dtype
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as staging:
        model = load_converted(
            build_config(sizes), convert_state_dict(weights, sizes.tie_word_embeddings), dtype, Path(staging)
        )
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    spec = TilingSpec(tile_size=sizes.tile_size, crop_to_patches=layout == "stitched", max_tiles=max_tiles)
    card = (
        f"# {source.name} (native transformers layout)\n\nConverted by `drive-mllm convert-checkpoint` from the "
        f"original InternVL2 checkpoint in `{source}`; layout `{layout}`, max {max_tiles} tiles. Weights are "
        "unchanged (renamed, vision qkv split); no remote code is needed to load them.\n"
    )
    return export_model(model, tokenizer, spec, out, card, layout)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drive-mllm convert-checkpoint", description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="original-format checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, help="native checkpoint folder to write")
    parser.add_argument("--preset", help="model preset to check the sizes against (gives layout and max tiles)")
    parser.add_argument(
        "--layout", choices=LAYOUTS, default="stitched", help="the layout the checkpoint was trained on"
    )
    args = parser.parse_args(argv)
    if not (args.src / "config.json").is_file():
        parser.error(f"--src: '{args.src}' has no config.json")
    try:
        target = convert(args.src, args.out, args.layout, args.preset)
    except (ConversionError, ValueError) as error:
        print(f"drive-mllm convert-checkpoint: {error}", file=sys.stderr)
        return 2
    print(f"wrote native checkpoint to {target}")
    return 0
