"""Conversations -> input ids with answer-only labels, and batches of them.

Prompts are tokenized exactly as the node tokenizes them (`model.encode_with_images` on the chat template's
text), so the student trains on what it is served. Labels are the assistant's answer tokens and the end-of-turn
token; the prompt, the image tokens, the template's trailing newline and the padding are -100.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..model import encode_with_images
from ..prompt import IMAGE_PLACEHOLDER

IGNORE_INDEX = -100


def answer_ids(tokenizer: Any, completion: str) -> tuple[list[int], list[int]]:
    """The completion's ids and labels: learned up to and including the first end-of-turn token."""
    ids = tokenizer.encode(completion, add_special_tokens=False)
    end = ids.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in ids else len(ids)
    return ids, ids[:end] + [IGNORE_INDEX] * (len(ids) - end)


def encode_conversation(
    tokenizer: Any, messages: list[dict[str, str]], tiles_per_image: list[int], image_seq_length: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a chat with `<image>` placeholders; every assistant turn is learned."""
    input_ids: list[int] = []
    labels: list[int] = []
    done, tiles = "", list(tiles_per_image)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError(
                "chat template: a conversation's rendering is not a prefix of its continuation, so "
                "answer tokens cannot be located; use a ChatML-like template"
            )
        segment = prompt[len(done) :]
        images = segment.count(IMAGE_PLACEHOLDER)
        prompt_ids = encode_with_images(tokenizer, segment, tiles[:images], image_seq_length)
        tiles = tiles[images:]
        completion_ids, completion_labels = answer_ids(tokenizer, full[len(prompt) :])
        input_ids += prompt_ids + completion_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + completion_labels
        done = full
    if tiles:
        raise ValueError(f"conversation: {len(tiles)} images without an {IMAGE_PLACEHOLDER} placeholder")
    return input_ids, labels


class AnswerOnlyCollator:
    """Right-pads a list of encoded samples; pixel values of all samples are concatenated, as InternVL expects."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        length = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            size = len(feature["input_ids"])
            input_ids[row, :size] = torch.as_tensor(feature["input_ids"])
            labels[row, :size] = torch.as_tensor(feature["labels"])
            attention_mask[row, :size] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": torch.cat([f["pixel_values"] for f in features]),
            "sample_ids": [f["sample_id"] for f in features],
        }


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) True at positions whose logits predict an answer token (labels shifted left by one)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def answer_logits(model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, V) logits at the N answer-predicting positions, their (N,) targets and the (B, L) position mask.

    Only those positions go through the output head: with a 150k vocabulary the full logits of a 3k-token
    prompt would dominate memory and time.
    """
    labels = inputs["labels"]
    mask = answer_mask(labels)
    output = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        pixel_values=inputs["pixel_values"],
        logits_to_keep=mask,
    )
    targets = labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]
    return output.logits.reshape(-1, output.logits.shape[-1]), targets, mask


def answer_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets)
