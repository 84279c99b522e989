"""Pointer supervision (`method.pointer_weight`): the attention that writes a tag's location tokens learns to land
on the image token where that object is.

A small language model trained on answers alone writes where objects usually are, not where they are in these
views: its attention does not find the object's image token by itself within our budgets (docs/STUDENT.md, runs
8-10). Here the last language layer's attention (mean over heads) at the positions that predict a tag's `<xI>` and
`<yJ>` (locations.py) is pulled, by cross-entropy, onto the image token that holds the tag's centre; the
answer's cross-entropy then only has to copy the bin. Needs location tokens and the per_view layout with one tile
per view (the object map's geometry, train/object_maps.py).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..locations import LOCATION_PAIR, LocationGrid
from ..prompt import PromptBuilder
from .collate import IGNORE_INDEX

TAG_LOCATION = re.compile(r"<\s*c\d+\s*,\s*([A-Za-z_]+)\s*,\s*<x(\d+)>\s*,\s*<y(\d+)>\s*>")
Pointer = tuple[int, int]  # (query position, key position) in one encoded sequence


class PointerTargets:
    """Where each tag's location tokens should look, for encoded samples of one builder and checkpoint."""

    def __init__(self, builder: PromptBuilder, tokenizer: Any, token_of_patch: torch.Tensor, image_seq_length: int,
                 patch_grid: int):
        if builder.locations is None or builder.layout != "per_view":
            raise ValueError("method.pointer_weight: needs location tokens (data.location_bins) and the per_view layout")
        self.builder, self.grid = builder, builder.locations
        self.token_of_patch, self.patch_grid, self.image_seq_length = token_of_patch, patch_grid, image_seq_length
        self.image_token_id = tokenizer.context_image_token_id
        self.x_ids = {tokenizer.convert_tokens_to_ids(f"<x{i}>") for i in range(self.grid.bins)}
        self.y_ids = {tokenizer.convert_tokens_to_ids(f"<y{i}>") for i in range(self.grid.bins)}

    def image_token(self, camera: str, x_bin: int, y_bin: int) -> int:
        """Index among the frame's image tokens of the token that holds a bin's centre in that camera's view."""
        grid: LocationGrid = self.grid
        x, y = grid.centre(x_bin, grid.width) / grid.width, grid.centre(y_bin, grid.height) / grid.height
        patch = int(y * self.patch_grid) * self.patch_grid + int(x * self.patch_grid)
        return self.builder.rig.index(camera) * self.image_seq_length + int(self.token_of_patch[patch])

    def __call__(self, ids: list[int], labels: list[int], answer: str) -> list[Pointer]:
        """(query, key) pairs of one sample: `answer` is its assistant text as the model writes it."""
        tag_cameras = {tag.start(2) - len("<x"): tag.group(1) for tag in TAG_LOCATION.finditer(answer)}
        pairs = list(LOCATION_PAIR.finditer(answer))  # in the order their tokens appear in the labels
        cameras = [tag_cameras.get(pair.start()) for pair in pairs]  # None: a listed object's "at (x, y)"
        bins = [(int(pair.group(1)), int(pair.group(3))) for pair in pairs]
        learned = [j for j, label in enumerate(labels) if label != IGNORE_INDEX]
        xs = [j for j in learned if labels[j] in self.x_ids]
        ys = [j for j in learned if labels[j] in self.y_ids]
        images = [j for j, token in enumerate(ids) if token == self.image_token_id]
        pointers = []
        for camera, (x_bin, y_bin), x_at, y_at in zip(cameras, bins, xs, ys, strict=False):
            if camera in self.builder.rig.names and y_at > x_at:
                key = images[self.image_token(camera, x_bin, y_bin)]
                pointers += [(x_at - 1, key), (y_at - 1, key)]
        return pointers


def shift_pointers(pointers: list[Pointer], prefix: int, start: int) -> list[Pointer]:
    """A sample's pointers once packed: its tokens after the shared prefix begin at `start`; keys (image tokens)
    lie in the prefix."""
    return [(query - prefix + start, key) for query, key in pointers if key < prefix <= query]


def pointer_loss(attention: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean -log of the attention (B, heads, L, L; averaged over heads) at each (row, query, key) target."""
    rows, queries, keys = targets.unbind(-1)
    probabilities = attention.float().mean(1)[rows, queries, keys]
    return -torch.log(probabilities.clamp_min(1e-6)).mean()
