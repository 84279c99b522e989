"""Conversations -> input ids with answer-only labels, and batches of them.

Prompts are tokenized exactly as the node tokenizes them (`model.encode_with_images` on the chat template's
text), so the student trains on what it is served. Labels are the assistant's answer tokens and the end-of-turn
token; the prompt, the image tokens, the template's trailing newline and the padding are -100.

A frame pack (`pack_encoded`) holds several single-QA samples of one frame in one row: their shared prefix (the
images) once, then each sample's rest, which attends to the prefix and to itself only and continues the prefix's
positions. Every answer token then sees exactly what it sees in its own sample, at the cost of one image encoding.
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


def shared_prefix_length(encoded: list[tuple[list[int], list[int]]]) -> int:
    """Tokens all samples start with, ending before the last one whose logits predict no answer token of any sample
    (so that every answer is predicted from inside its own segment)."""
    first = encoded[0][0]
    common = next((i for i in range(len(first)) if any(i >= len(ids) or ids[i] != first[i] for ids, _ in encoded)),
                  len(first))
    first_answer = min(next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
                       for _, labels in encoded)
    return max(min(common, first_answer - 1), 0)


def pack_encoded(encoded: list[tuple[list[int], list[int]]]) -> dict[str, list[int]]:
    """Encoded samples of one frame -> one row: input ids, labels, segment ids (0: shared prefix, k: the k-th
    sample) and position ids (each sample's rest continues from the prefix)."""
    prefix = shared_prefix_length(encoded)
    row = {"input_ids": list(encoded[0][0][:prefix]), "labels": [IGNORE_INDEX] * prefix, "segment_ids": [0] * prefix,
           "position_ids": list(range(prefix))}
    for segment, (ids, labels) in enumerate(encoded, start=1):
        rest = len(ids) - prefix
        row["input_ids"] += ids[prefix:]
        row["labels"] += labels[prefix:]
        row["segment_ids"] += [segment] * rest
        row["position_ids"] += range(prefix, prefix + rest)
    return row


def packed_starts(encoded: list[tuple[list[int], list[int]]]) -> list[int]:
    """Where each sample's tokens after the shared prefix begin in its pack row (`pack_encoded`'s order)."""
    prefix = shared_prefix_length(encoded)
    lengths = [len(ids) - prefix for ids, _ in encoded]
    return [prefix + sum(lengths[:index]) for index in range(len(encoded))]


class AnswerOnlyCollator:
    """Right-pads a list of encoded samples (or frame packs); pixel values of all samples are concatenated, as
    InternVL expects. Packs also give segment ids (-1 on padding) and position ids; pointer supervision gives
    (K, 3) pointer targets (row, query, key)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        length = max(len(f["input_ids"]) for f in features)
        columns = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}
        if "segment_ids" in features[0]:
            columns.update(segment_ids=-1, position_ids=0)
        batch = {name: torch.full((len(features), length), pad, dtype=torch.long) for name, pad in columns.items()}
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            size = len(feature["input_ids"])
            for name in columns:
                batch[name][row, :size] = torch.as_tensor(feature[name])
            attention_mask[row, :size] = 1
        if "pointers" in features[0]:
            rows = [(row, query, key) for row, feature in enumerate(features) for query, key in feature["pointers"]]
            batch["pointer_targets"] = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
        return {
            **batch,
            "attention_mask": attention_mask,
            "pixel_values": torch.cat([f["pixel_values"] for f in features]),
            "sample_ids": [sample_id for f in features for sample_id in f["sample_ids"]],
        }


def pack_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, L, L) additive mask: causal, and a token sees the shared prefix (segment 0) and its own segment;
    padding (-1) is seen by nobody and sees itself only (no empty softmax row)."""
    length = segment_ids.shape[1]
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def model_inputs(inputs: dict[str, Any], dtype: torch.dtype, device: torch.device | None = None) -> dict[str, Any]:
    """The forward arguments of a batch, on `device`, with pixel values in `dtype`; packs get their 4D mask."""
    names = ("input_ids", "attention_mask", "pixel_values", "segment_ids", "position_ids")
    moved = {name: inputs[name].to(device) if device else inputs[name] for name in names if name in inputs}
    moved["pixel_values"] = moved["pixel_values"].to(dtype)
    if "segment_ids" in moved:
        moved["attention_mask"] = pack_attention_mask(moved.pop("segment_ids"), dtype)
    return moved


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) True at positions whose logits predict an answer token (labels shifted left by one)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def answer_forward(model: Any, inputs: dict[str, Any], output_attentions: bool = False
                   ) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The model's output with logits at the N answer-predicting positions only, their (N,) targets and the (B, L)
    position mask.

    Only those positions go through the output head: with a 150k vocabulary the full logits of a 3k-token
    prompt would dominate memory and time.
    """
    labels = inputs["labels"]
    mask = answer_mask(labels)
    output = model(**model_inputs(inputs, next(model.parameters()).dtype), logits_to_keep=mask,  # DDP has no .dtype
                   output_attentions=output_attentions)
    return output, labels[:, 1:][labels[:, 1:] != IGNORE_INDEX], mask


def answer_logits(model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, V) logits at the N answer-predicting positions, their (N,) targets and the (B, L) position mask."""
    output, targets, mask = answer_forward(model, inputs)
    return output.logits.reshape(-1, output.logits.shape[-1]), targets, mask


def answer_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets)
