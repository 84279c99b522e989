"""All of a frame's questions answered from one cached prefix: images and prompt head encoded once per frame.

Every prompt about a frame starts with the same tokens (chat-template head, image tokens). That prefix goes
through the vision tower and the LLM once; its KV cache stays on the frame, so later questions about the same
frame (per-object questions, follow-ups) skip both. Each call copies the prefix cache across a batch, prefills
only each question's suffix and decodes greedily with transformers' `generate`. Suffixes are right-aligned:
padding sits between prefix and suffix, masked out, and generate counts positions over real tokens only, so
every row's last prompt token is in the last column and the rows decode in lockstep. Greedy tokens equal plain
per-question `generate` (test/test_model.py checks token for token). On request each chosen token's
log-probability is kept on the way (one logsumexp over the vocabulary per step): what
`compute_transition_scores` gives plain generate, without storing every step's scores.

On CUDA the batch cache is a StaticCache, one per (batch, length bucket) kept for reuse: generate then
compiles its decode step (CUDA graphs need the cache at fixed addresses, hence the reuse).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    StaticCache,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.cache_utils import Cache

STATIC_LENGTH_BUCKET = 256  # static caches are sized in steps of this many tokens, so few shapes get compiled


@dataclass
class FramePrefix:
    """The LLM's keys and values for a frame's shared prompt prefix (batch 1), and what computing them cost."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    vision_ms: float
    prefill_ms: float


@dataclass
class DecodeResult:
    """New tokens per question (up to its budget), each token's log-probability under the (processed) scores
    greedy chose it from, and the time to the first token (suffix prefill) and after it."""

    new_ids: list[list[int]]
    prefill_ms: float
    decode_ms: float
    new_logprobs: list[list[float]] = field(default_factory=list)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work, so wall-clock stage timings are not just launch times."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def image_prefix_length(ids: list[int], end_image_token_id: int) -> int:
    """Tokens up to and including the last `</img>`: what every question about the frame shares."""
    if end_image_token_id not in ids:
        raise ValueError("prompt: no image end token; the prefix cache needs the images before the question")
    return len(ids) - ids[::-1].index(end_image_token_id)


def encode_prefix(model: Any, prefix_ids: list[int], pixel_values: torch.Tensor) -> FramePrefix:
    """Vision tower + projector, then the LLM over the prefix with the image features in place (batch 1)."""
    device = pixel_values.device
    with torch.inference_mode():
        started = time.perf_counter()
        features = model.get_image_features(pixel_values=pixel_values, return_dict=True)
        synchronize(device)
        encoded = time.perf_counter()
        cache = DynamicCache(config=model.config)
        model.model(
            input_ids=torch.tensor([prefix_ids], device=device),
            mm_encoder_outputs={"image": features},
            cache=cache,
            use_cache=True,
        )
        synchronize(device)
        done = time.perf_counter()
    return FramePrefix(
        prefix_ids,
        [layer.keys for layer in cache.layers],
        [layer.values for layer in cache.layers],
        vision_ms=(encoded - started) * 1e3,
        prefill_ms=(done - encoded) * 1e3,
    )


class TokenBudgets(StoppingCriteria):
    """Row i is done after budgets[i] new tokens; also notes when the first new token exists (end of prefill)."""

    def __init__(self, budgets: list[int], prompt_length: int, device: torch.device | str):
        self.budgets = torch.tensor(budgets, device=device)
        self.prompt_length = prompt_length
        self.first_token_at: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if self.first_token_at is None:
            synchronize(input_ids.device)
            self.first_token_at = time.perf_counter()
        return input_ids.shape[1] - self.prompt_length >= self.budgets


class ChosenLogProbs(LogitsProcessor):
    """Records log p(greedy token) per step: the top processed score minus the log-partition, one pass each.

    Generate appends custom processors after its own, so these are the scores `argmax` picks from.
    """

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.steps.append(scores.max(dim=-1).values - scores.logsumexp(dim=-1))
        return scores

    def per_row(self, batch: int) -> list[list[float]]:
        """[row][step] log-probabilities (one device sync)."""
        return torch.stack(self.steps, dim=1).tolist() if self.steps else [[] for _ in range(batch)]


class StaticCachePool:
    """StaticCaches by (batch, length bucket), reset and reused so compiled decode steps keep their addresses."""

    def __init__(self, config: Any, bucket: int = STATIC_LENGTH_BUCKET):
        self.config, self.bucket = config, bucket
        self.caches: dict[tuple[int, int], StaticCache] = {}

    def get(self, batch: int, length: int) -> StaticCache:
        key = (batch, math.ceil(length / self.bucket) * self.bucket)
        cache = self.caches.get(key)
        if cache is None:
            cache = self.caches[key] = StaticCache(config=self.config, max_cache_len=key[1])
        else:
            cache.reset()
        return cache


def fill_cache(cache: Cache, prefix: FramePrefix, batch: int) -> Cache:
    """The prefix's keys and values, broadcast to every row of the batch, written into an empty cache."""
    for layer, (keys, values) in enumerate(zip(prefix.keys, prefix.values, strict=True)):
        cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), layer)
    return cache


def right_aligned(
    prefix_ids: list[int], suffixes: list[list[int]], pad_id: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Rows of prefix + padding + suffix (all suffixes end in the last column) and their attention masks."""
    width = max(len(suffix) for suffix in suffixes)
    rows = [prefix_ids + [pad_id] * (width - len(s)) + s for s in suffixes]
    masks = [[1] * len(prefix_ids) + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
    return rows, masks


def decode_from_prefix(
    model: Any,
    prefix: FramePrefix,
    prompts: list[list[int]],
    max_new_tokens: list[int],
    stop_token_ids: list[int],
    pad_id: int,
    static_caches: StaticCachePool | None = None,
    min_new_tokens: int = 0,
    logprobs: bool = False,
) -> DecodeResult:
    """Greedy continuations of prompts that all start with `prefix.ids`, in one batch from the cached prefix.

    logprobs: also each new token's log-probability (a logsumexp over the vocabulary per step: on CPU a few
    percent of a step with a 150K vocabulary, so only when asked).
    """
    prefix_length = len(prefix.ids)
    if any(prompt[:prefix_length] != prefix.ids or len(prompt) == prefix_length for prompt in prompts):
        raise ValueError("prompts: each must extend the frame's cached prefix by at least one token")
    device = prefix.keys[0].device
    rows, masks = right_aligned(prefix.ids, [prompt[prefix_length:] for prompt in prompts], pad_id)
    prompt_length = len(rows[0])
    batch = len(rows)
    budgets = TokenBudgets(max_new_tokens, prompt_length, device)
    chosen = ChosenLogProbs()
    started = time.perf_counter()
    with torch.inference_mode():  # also around the static caches' in-place reset
        if static_caches is None:
            cache = DynamicCache(config=model.config)
        else:
            cache = static_caches.get(batch, prompt_length + max(max_new_tokens))
        output = model.generate(
            input_ids=torch.tensor(rows, device=device),
            attention_mask=torch.tensor(masks, device=device),
            cache=fill_cache(cache, prefix, batch),
            stopping_criteria=StoppingCriteriaList([budgets]),
            logits_processor=LogitsProcessorList([chosen] if logprobs else []),
            max_new_tokens=max(max_new_tokens),
            min_new_tokens=min_new_tokens or None,  # 0 would still add a min-length processor (a vocab-wide pass)
            do_sample=False,
            eos_token_id=stop_token_ids,
            pad_token_id=pad_id,
        )
    synchronize(device)
    done = time.perf_counter()
    first = budgets.first_token_at or done
    new_ids = [row[:budget] for row, budget in zip(output[:, prompt_length:].tolist(), max_new_tokens, strict=True)]
    new_logprobs = [row[:budget] for row, budget in zip(chosen.per_row(batch), max_new_tokens, strict=True)]
    return DecodeResult(new_ids, (first - started) * 1e3, (done - first) * 1e3, new_logprobs if logprobs else [])
