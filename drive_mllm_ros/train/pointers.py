"""Pointer supervision (`method.pointer_weight`): the attention at a tag's location tokens learns to land on the
image token where that object is, where the model writes the tag and where it reads one in the question.

A small language model trained on answers alone writes where objects usually are, not where they are in these
views: its attention does not find the object's image token by itself within our budgets (docs/STUDENT.md, runs
8-10). Here the last language layer's attention (mean over heads) at the positions that predict a tag's `<xI>` and
`<yJ>` (locations.py) is pulled, by cross-entropy, onto the image token that holds the tag's centre; the
answer's cross-entropy then only has to copy the bin, and serving can read the position off that attention
(pointing.py). A tag in the question gets the same target at its `<yJ>`. Needs location tokens and the per_view layout with one tile
per view (the object map's geometry, train/object_maps.py).
"""

from __future__ import annotations

from typing import Any

import torch

from ..pointing import ImageTokenGrid, location_steps
from ..prompt import PromptBuilder
from .collate import IGNORE_INDEX

Pointer = tuple[int, int, float]  # (query position, key position, weight) in one encoded sequence


class PointerTargets:
    """Where each tag's location tokens should look, for encoded samples of one builder and checkpoint."""

    def __init__(self, builder: PromptBuilder, tokenizer: Any, tokens: ImageTokenGrid):
        if builder.locations is None or builder.layout != "per_view":
            raise ValueError("method.pointer_weight: needs location tokens (data.location_bins) and the per_view layout")
        self.tokenizer, self.tokens = tokenizer, tokens
        self.image_token_id = tokenizer.context_image_token_id
        bins = range(builder.locations.bins)
        self.x_bins = {tokenizer.convert_tokens_to_ids(f"<x{i}>"): i for i in bins}  # token id -> bin
        self.y_bins = {tokenizer.convert_tokens_to_ids(f"<y{i}>"): i for i in bins}

    def __call__(self, ids: list[int], labels: list[int]) -> list[Pointer]:
        """(query, key, weight) targets of one encoded sample: the object's position spread over the image tokens
        around it (`ImageTokenGrid.spread`). A tag the model writes: at the positions predicting its `<xI>` and
        `<yJ>`. A tag it reads (in the question): at its `<yJ>`, where the whole position is known, so that what
        follows about the object (its moving status, whether it is in the path) can use the object's tokens."""
        images = [j for j, token in enumerate(ids) if token == self.image_token_id]
        pointers = []
        for step in location_steps(ids, self.tokenizer, set(self.x_bins), set(self.y_bins), self.tokens.cameras):
            spread = self.tokens.spread(step.camera, self.x_bins[ids[step.x_at]], self.y_bins[ids[step.y_at]])
            written = labels[step.x_at] != IGNORE_INDEX
            queries = [step.x_at - 1, step.y_at - 1] if written else [step.y_at]
            pointers += [(query, images[token], weight) for query in queries for token, weight in spread]
        return [pointer for pointer in pointers if pointer[1] < pointer[0]]


def shift_pointers(pointers: list[Pointer], prefix: int, start: int) -> list[Pointer]:
    """A sample's pointers once packed: its tokens after the shared prefix begin at `start`; keys (image tokens)
    lie in the prefix."""
    return [(query - prefix + start, key, weight) for query, key, weight in pointers if key < prefix <= query]


def pointer_loss(attention: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the attention (B, heads, L, L; averaged over heads) against (row, query, key, weight)
    targets, per query (each query's weights sum to 1)."""
    rows, queries, keys = targets[:, :3].long().unbind(-1)
    weights = targets[:, 3].float()
    probabilities = attention.float().mean(1)[rows, queries, keys]
    return -(weights * torch.log(probabilities.clamp_min(1e-6))).sum() / weights.sum()
