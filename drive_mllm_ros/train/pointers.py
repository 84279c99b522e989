"""Pointer supervision (`method.pointer_weight`): the attention at a tag's location tokens learns to land on the
image token where that object is, where the model writes the tag and where it reads one in the question.

A small language model trained on answers alone writes where objects usually are, not where they are in these
views: its attention does not find the object's image token by itself within our budgets (docs/STUDENT.md, runs
8-10). Here the last language layer's attention (mean over heads) at the positions that predict a tag's `<xI>` and
`<yJ>` (locations.py) is pulled, by cross-entropy, onto the image token that holds the tag's centre; the
answer's cross-entropy then only has to copy the bin, and serving can read the position off that attention
(pointing.py). A tag in the question gets the same target at its `<yJ>`. Needs location tokens and the per_view layout with one tile
per view (the image-token geometry, pointing.py).
"""

from __future__ import annotations

from typing import Any

import torch

from ..pointing import ImageTokenGrid, location_steps
from ..prompt import PromptBuilder
from .collate import IGNORE_INDEX

Pointer = tuple[int, int]  # (query position, key position) in one encoded sequence


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
        self.x_ids, self.y_ids = set(self.x_bins), set(self.y_bins)

    def __call__(self, ids: list[int], labels: list[int]) -> list[Pointer]:
        """(query, key) pairs of one encoded sample. A tag the model writes: the positions predicting its `<xI>`
        and `<yJ>`. A tag it reads (in the question): its `<yJ>`, where the whole position is known, so that what
        follows about the object (its moving status, whether it is in the path) can use the object's token."""
        images = [j for j, token in enumerate(ids) if token == self.image_token_id]
        pointers = []
        for step in location_steps(ids, self.tokenizer, self.x_ids, self.y_ids, self.tokens.cameras):
            key = images[self.tokens.token(step.camera, self.x_bins[ids[step.x_at]], self.y_bins[ids[step.y_at]])]
            written = labels[step.x_at] != IGNORE_INDEX
            pointers += [(step.x_at - 1, key), (step.y_at - 1, key)] if written else [(step.y_at, key)]
        return [(query, key) for query, key in pointers if key < query]


def shift_pointers(pointers: list[Pointer], prefix: int, start: int) -> list[Pointer]:
    """A sample's pointers once packed: its tokens after the shared prefix begin at `start`; keys (image tokens)
    lie in the prefix."""
    return [(query - prefix + start, key) for query, key in pointers if key < prefix <= query]


def pointer_loss(attention: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean -log of the attention (B, heads, L, L; averaged over heads) at each (row, query, key) target."""
    rows, queries, keys = targets.unbind(-1)
    probabilities = attention.float().mean(1)[rows, queries, keys]
    return -torch.log(probabilities.clamp_min(1e-6)).mean()
