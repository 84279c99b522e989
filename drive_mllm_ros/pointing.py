"""Where each image token lies in its view, and positions read off the attention (pointer decoding).

A checkpoint trained with the pointer loss (`method.pointer_weight`, train/pointers.py) attends, when it writes a
tag's `<xI>`/`<yJ>` (locations.py), to the image token that holds the object. Its bins are copied less well than its
attention finds the object (docs/STUDENT.md, run 11), so a checkpoint saved with `"pointer_decoding": true` takes each
tag's place from that attention instead: the token (of any view) the tag's two location steps attend to most, refined
by the attention on its neighbours. Training (targets) and serving (decoding) share this geometry. No rclpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Any

import torch
from torch import nn

from .locations import LocationGrid

TAG_CAMERA = re.compile(r"<\s*c\d+\s*,\s*([A-Za-z_]+)\s*,\s*$")  # a tag's head up to its `<xI>`
# The neighbours' attention is weighted by its square root: attention taught to land on one token is too peaked to
# interpolate between tokens as it is (match F1 +2.4 on seed 9001 over the plain weights; docs/STUDENT.md run 11).
LOCATE_POWER = 0.5
SAME_OBJECT_PX = 16.0  # two listed places closer than this (L1, view pixels) are one object: the scorer's radius
TAG_HEAD_TOKENS = 32  # a tag's head ("<c12,CAM_FRONT_RIGHT,") is decoded from at most this many tokens back
# A tag with its location tokens; a small model sometimes leaves one of them, or the closing `>`, out
# (`<c2,CAM_BACK,<y22>>`, `<c2,CAM_BACK,<x16>, so ...`).
TAG_WITH_LOCATION = re.compile(r"(<\s*c\d+\s*,\s*)([A-Za-z_]+)(\s*,\s*)(?:<x\d+>\s*,?\s*<y\d+>|<x\d+>|<y\d+>)\s*>?")


def patch_size(model: nn.Module) -> int:
    """The vision tower's patch side in pixels."""
    size = model.config.vision_config.patch_size
    return size[0] if isinstance(size, list | tuple) else size


def token_of_patch(model: nn.Module, grid: int) -> torch.Tensor:
    """(grid * grid,) image-token index of each ViT patch (row-major), through the model's own pixel shuffle."""
    internvl = model.model
    patches = torch.arange(grid * grid, dtype=torch.float32).reshape(1, grid, grid, 1)
    shuffled = internvl.pixel_shuffle(patches, scale_factor=internvl.config.downsample_ratio)
    token_patches = shuffled.reshape(-1, shuffled.shape[-1]).long()
    lookup = torch.empty(grid * grid, dtype=torch.long)
    for token, members in enumerate(token_patches):
        lookup[members] = token
    return lookup


@dataclass(frozen=True)
class ImageTokenGrid:
    """Positions in a view <-> the frame's image tokens (per_view layout, one tile per view, views in rig order)."""

    grid: LocationGrid
    cameras: tuple[str, ...]
    image_seq_length: int  # image tokens per view
    token_of_patch: torch.Tensor  # (patch_grid ** 2,) token index within its view of each ViT patch
    patch_grid: int  # ViT patches per tile side

    @classmethod
    def of_model(cls, model: nn.Module, tile_size: int, grid: LocationGrid, cameras: tuple[str, ...]
                 ) -> ImageTokenGrid:
        """For an InternVL model (not wrapped: DDP, peft) and its tile side in pixels."""
        patch_grid = tile_size // patch_size(model)
        return cls(grid, cameras, model.config.image_seq_length, token_of_patch(model, patch_grid), patch_grid)

    @cached_property
    def centres(self) -> torch.Tensor:
        """(image_seq_length, 2) centre of each token of a view in view pixels: the mean of its patches' centres."""
        patches = torch.arange(self.patch_grid ** 2)
        xy = torch.stack([patches % self.patch_grid, patches // self.patch_grid], 1).float() + 0.5
        scale = torch.tensor([self.grid.width, self.grid.height]) / self.patch_grid
        sums = torch.zeros(self.image_seq_length, 2).index_add_(0, self.token_of_patch, xy * scale)
        return sums / torch.bincount(self.token_of_patch, minlength=self.image_seq_length)[:, None]

    @cached_property
    def spacing(self) -> torch.Tensor:
        """(2,) distance between neighbouring token centres along x and y, in view pixels."""
        side = round(self.image_seq_length ** 0.5)
        return torch.tensor([self.grid.width, self.grid.height]) / side

    def token(self, camera: str, x_bin: int, y_bin: int) -> int:
        """Index among the frame's image tokens of the token that holds a bin's centre in that camera's view."""
        x = self.grid.centre(x_bin, self.grid.width) / self.grid.width
        y = self.grid.centre(y_bin, self.grid.height) / self.grid.height
        patch = int(y * self.patch_grid) * self.patch_grid + int(x * self.patch_grid)
        return self.cameras.index(camera) * self.image_seq_length + int(self.token_of_patch[patch])

    def near(self, place: tuple[str, int, int], other: tuple[str, int, int]) -> bool:
        """Whether two (camera, x bin, y bin) places are one object: same view, under SAME_OBJECT_PX apart (L1)."""
        grid = self.grid
        distance = (abs(grid.centre(place[1], grid.width) - grid.centre(other[1], grid.width))
                    + abs(grid.centre(place[2], grid.height) - grid.centre(other[2], grid.height)))
        return place[0] == other[0] and distance < SAME_OBJECT_PX

    def locate(self, token: int, attention: torch.Tensor) -> tuple[str, int, int]:
        """(camera, x bin, y bin) of the attention-weighted centre of a frame token and its neighbours (3 x 3), from
        the attention over the frame's image tokens: where between the tokens the object lies."""
        view, local = divmod(token, self.image_seq_length)
        near = ((self.centres - self.centres[local]).abs() <= self.spacing * 1.01).all(1)
        weights = attention[view * self.image_seq_length:(view + 1) * self.image_seq_length][near] ** LOCATE_POWER
        x, y = ((weights[:, None] * self.centres[near]).sum(0) / weights.sum().clamp_min(1e-12)).tolist()
        return self.cameras[view], self.grid.bin(x, self.grid.width), self.grid.bin(y, self.grid.height)


@dataclass(frozen=True)
class LocationStep:
    """One tag's location tokens in a token sequence: indices of its `<xI>` and `<yJ>` (None: left out), and its
    camera as written."""

    x_at: int | None
    y_at: int | None
    camera: str

    @property
    def written(self) -> list[int]:
        """Indices of the location tokens the tag has."""
        return [at for at in (self.x_at, self.y_at) if at is not None]


def location_steps(answer_ids: list[int], tokenizer: Any, x_ids: set[int], y_ids: set[int],
                   cameras: tuple[str, ...], partial: bool = False) -> list[LocationStep]:
    """The tags' location pairs (a tag's `<xI>`, then its `<yJ>` after the separator); with `partial`, also tags
    that have only one of the two. A listed object's "at (x, y)" names no camera and has no pointer target in
    training: it keeps the bins the model wrote."""
    steps: list[LocationStep] = []
    paired: set[int] = set()  # indices of the `<yJ>` already read with their `<xI>`
    for at, token in enumerate(answer_ids):
        if token not in x_ids and not (partial and token in y_ids and at not in paired):
            continue  # a y of a pair is read with its x: no second look back for a tag head
        head = TAG_CAMERA.search(tokenizer.decode(answer_ids[max(0, at - TAG_HEAD_TOKENS):at],
                                                  skip_special_tokens=True))
        if not head or head.group(1) not in cameras:
            continue  # not right after a tag's camera: a listed object's position
        if token in y_ids:
            steps.append(LocationStep(None, at, head.group(1)))
            continue
        y_at = next((j for j in range(at + 1, min(at + 4, len(answer_ids))) if answer_ids[j] in y_ids), None)
        if y_at is not None:
            paired.add(y_at)
        if y_at is not None or partial:
            steps.append(LocationStep(at, y_at, head.group(1)))
    return steps


def point(attention: torch.Tensor, image_positions: list[int], answer_start: int, steps: list[LocationStep],
          tokens: ImageTokenGrid) -> list[tuple[str, int, int]]:
    """(camera, x bin, y bin) per step, from the last-layer attention (heads, queries, keys) of a pass whose keys
    are the whole sequence (image tokens at `image_positions`) and whose queries end with the answer, starting at
    row `answer_start`: the image token both of the step's positions attend to most, refined by the attention on its
    neighbours.

    Every view competes: the attention finds the object more often than the written camera names its view (on
    seed 9101, match F1 47.9 vs 40.3 within the written camera; docs/STUDENT.md run 11). One object, one listing:
    a place within SAME_OBJECT_PX of one already listed in this answer is passed over for the next best token."""
    looks = attention.float().mean(0)[:, image_positions]  # (L, image tokens)
    chosen: list[tuple[str, int, int]] = []
    for step in steps:
        queries = [answer_start + at - 1 for at in step.written]  # the positions predicting them
        ranked = looks[queries].clamp_min(1e-9).log().sum(0).argsort(descending=True).tolist()
        places = (tokens.locate(token, looks[queries].mean(0)) for token in ranked)  # located lazily, best first
        best = next(places)
        chosen.append(next((place for place in chain([best], places)
                            if not any(tokens.near(place, other) for other in chosen)), best))
    return chosen


def repoint_tags(text: str, placed: list[tuple[str, int, int]], cameras: tuple[str, ...]) -> str:
    """The text's tags (those `location_steps(partial=True)` finds, in order) with their camera and both bins
    written. Unchanged when the tags and `placed` do not pair up (a tag cut short at the token budget)."""
    tags = [match for match in TAG_WITH_LOCATION.finditer(text) if match.group(2) in cameras]
    if len(tags) != len(placed):
        return text
    placed_iter = iter(placed)

    def replace(match: re.Match) -> str:
        if match.group(2) not in cameras:
            return match.group(0)
        camera, x_bin, y_bin = next(placed_iter)
        return f"{match.group(1)}{camera}{match.group(3)}<x{x_bin}>,<y{y_bin}>>"
    return TAG_WITH_LOCATION.sub(replace, text)
