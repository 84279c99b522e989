"""Camera views -> the layout's images -> model-ready ``pixel_values``, in numpy/OpenCV/torch.

``stitched``: each view resized to 896x448 and pasted on the rig's grid with its camera name drawn
top-left; ``per_view``: the views themselves. Tiling follows transformers' GotOcr2 image processor
(same grid choice, tile order and thumbnail) so the checkpoint sees what its processor would give it,
about 10x faster than the PIL path (see `drive-mllm bench preprocess`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

from .cameras import MOSAIC_VIEW_SIZE, CameraRig
from .images import decode_pool
from .prompt import PromptBuilder

LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_SCALE, LABEL_THICKNESS, LABEL_MARGIN = 0.9, 2, 10


@dataclass(frozen=True)
class TilingSpec:
    """How a checkpoint wants its images: tile size, normalisation, dynamic tiling bounds."""

    tile_size: int = 448
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    rescale_factor: float = 1 / 255
    crop_to_patches: bool = True
    min_tiles: int = 1
    max_tiles: int = 12

    @classmethod
    def from_image_processor(cls, processor: Any, layout: str, max_tiles: int | None = None) -> TilingSpec:
        """Settings of a GotOcr2 image processor; tiling on for `stitched`, one tile per view for `per_view`.

        The layout decides `crop_to_patches` because InternVLProcessor overrides the image processor's own
        value on every call anyway (its default is True), so the config's value says nothing about training.
        """
        if processor.size.height != processor.size.width:
            raise ValueError(f"image processor: expected square tiles, got {processor.size}")
        return cls(
            tile_size=processor.size.height, mean=tuple(processor.image_mean), std=tuple(processor.image_std),
            rescale_factor=processor.rescale_factor, crop_to_patches=layout == "stitched",
            min_tiles=processor.min_patches, max_tiles=max_tiles or processor.max_patches,
        )

    def processor_kwargs(self) -> dict[str, Any]:
        """The same settings as keyword arguments of GotOcr2ImageProcessor(Pil) / InternVLProcessor calls."""
        return {"crop_to_patches": self.crop_to_patches, "min_patches": self.min_tiles,
                "max_patches": self.max_tiles, "size": {"height": self.tile_size, "width": self.tile_size}}

    def tile_grid(self, width: int, height: int) -> tuple[int, int]:
        """(columns, rows) of the tile grid for an image, 1x1 without dynamic tiling."""
        if not self.crop_to_patches or self.max_tiles <= 1:
            return 1, 1
        tile = (self.tile_size, self.tile_size)
        return get_optimal_tiled_canvas((height, width), tile, self.min_tiles, self.max_tiles)

    def tile_count(self, width: int, height: int) -> int:
        """Tiles one image becomes: the grid plus a thumbnail when the grid has more than one tile."""
        columns, rows = self.tile_grid(width, height)
        return 1 if columns * rows == 1 else columns * rows + 1


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height) close to PIL's antialiased bicubic, at OpenCV speed.

    Area averaging when shrinking 2x or more (where aliasing shows); bicubic when an axis grows; bilinear
    for mild shrinking (e.g. a half-size 800x450 decode to a 448 tile), where area averaging with a
    fractional factor is ~6x slower and bilinear stays within about one grey level of PIL.
    """
    height, width = image.shape[:2]
    if (width, height) == tuple(size):
        return image
    factors = (width / size[0], height / size[1])
    if max(factors) >= 2:
        interpolation = cv2.INTER_AREA
    elif min(factors) < 1:
        interpolation = cv2.INTER_CUBIC
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def blank_view(rig: CameraRig) -> np.ndarray:
    """A black view in the rig's camera size, standing in for a camera that sent nothing."""
    width, height = rig.image_size
    return np.zeros((height, width, 3), dtype=np.uint8)


def draw_label(view: np.ndarray, text: str) -> None:
    """Camera name top-left, white on a black outline so it reads on any background."""
    (_, text_height), _ = cv2.getTextSize(text, LABEL_FONT, LABEL_SCALE, LABEL_THICKNESS)
    origin = (LABEL_MARGIN, LABEL_MARGIN + text_height)
    cv2.putText(view, text, origin, LABEL_FONT, LABEL_SCALE, (0, 0, 0), LABEL_THICKNESS + 3, cv2.LINE_AA)
    cv2.putText(view, text, origin, LABEL_FONT, LABEL_SCALE, (255, 255, 255), LABEL_THICKNESS, cv2.LINE_AA)


def check_views(views: list[np.ndarray], rig: CameraRig) -> None:
    if len(views) != len(rig.names):
        raise ValueError(f"views: expected {len(rig.names)} (one per camera {list(rig.names)}), got {len(views)}")
    for name, view in zip(rig.names, views, strict=True):
        if view.dtype != np.uint8 or view.ndim != 3 or view.shape[2] != 3:
            raise ValueError(f"{name}: expected an RGB uint8 array HxWx3, got {view.dtype} {view.shape}")


def stitch_views(views: list[np.ndarray], rig: CameraRig) -> np.ndarray:
    """The rig's mosaic: views resized to 896x448 on the grid in rig order, each labelled with its camera.

    Cells are filled in parallel threads (OpenCV releases the GIL), each view resized straight into its cell.
    """
    check_views(views, rig)
    view_width, view_height = MOSAIC_VIEW_SIZE
    mosaic_width, mosaic_height = rig.mosaic_size
    mosaic = np.zeros((mosaic_height, mosaic_width, 3), dtype=np.uint8)

    def fill_cell(name: str, view: np.ndarray) -> None:
        row, column = rig.grid_cell(name)
        cell = mosaic[row * view_height:(row + 1) * view_height, column * view_width:(column + 1) * view_width]
        cell[:] = resize(view, MOSAIC_VIEW_SIZE)
        draw_label(cell, name)

    list(decode_pool().map(fill_cell, rig.names, views))
    return mosaic


def layout_images(views: list[np.ndarray], builder: PromptBuilder) -> list[np.ndarray]:
    """The images the prompt's `<image>` placeholders stand for, in order."""
    if builder.layout == "stitched":
        return [stitch_views(views, builder.rig)]
    check_views(views, builder.rig)
    return list(views)


def view_target_size(builder: PromptBuilder, spec: TilingSpec) -> tuple[int, int] | None:
    """The smallest (width, height) a decoded view needs, or None when the full resolution is used."""
    if builder.layout == "stitched":
        return MOSAIC_VIEW_SIZE
    return None if spec.crop_to_patches else (spec.tile_size, spec.tile_size)


def tile_image(image: np.ndarray, spec: TilingSpec, out: np.ndarray | None = None) -> np.ndarray:
    """(tiles, T, T, 3) uint8: the grid tiles in row-major order, then the thumbnail (GotOcr2's order).

    out: where to write them (a slice of a frame-wide buffer, so tiles are never concatenated).
    """
    height, width = image.shape[:2]
    tile = spec.tile_size
    columns, rows = spec.tile_grid(width, height)
    count = spec.tile_count(width, height)
    tiles = np.empty((count, tile, tile, 3), dtype=np.uint8) if out is None else out
    tiles[-1] = resize(image, (tile, tile))  # the thumbnail, or the only tile
    if count > 1:
        grid = resize(image, (columns * tile, rows * tile))
        tiles[:-1].reshape(rows, columns, tile, tile, 3)[:] = grid.reshape(rows, tile, columns, tile, 3).swapaxes(1, 2)
    return tiles


def tile_buffer(count: int, tile: int, device: torch.device) -> torch.Tensor:
    """Uninitialised (count, T, T, 3) uint8 host memory; pinned when bound for CUDA, so the copy is asynchronous
    (torch's pinned-memory cache reuses it only after that copy has finished)."""
    return torch.empty((count, tile, tile, 3), dtype=torch.uint8, pin_memory=device.type == "cuda")


def to_pixel_values(images: list[np.ndarray], spec: TilingSpec, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[int]]:
    """Tiles of all images concatenated, (N, 3, T, T) normalised on `device`, and the tile count per image.

    Tiles are written straight into one host buffer. For a GPU the uint8 tiles go over before normalising (4x less
    to copy, the GPU does the arithmetic); on the CPU, NumPy normalises them channel-first in one pass per tile.
    """
    device = torch.device(device)
    counts = [spec.tile_count(image.shape[1], image.shape[0]) for image in images]
    host = tile_buffer(sum(counts), spec.tile_size, device)
    tiles, start = host.numpy(), 0
    for image, count in zip(images, counts, strict=True):
        tile_image(image, spec, tiles[start:start + count])
        start += count
    scale = [spec.rescale_factor / s for s in spec.std]
    offset = [-m / s for m, s in zip(spec.mean, spec.std, strict=True)]
    if device.type == "cpu":
        pixels = torch.empty((len(tiles), 3, spec.tile_size, spec.tile_size))
        normalise_tiles(tiles, scale, offset, pixels.numpy())
        return pixels.to(dtype), counts
    pixels = host.to(device, non_blocking=True).permute(0, 3, 1, 2)
    # (x * rescale - mean) / std as one multiply-add per channel, uint8 in, float32 out, channel-first
    scale_tensor = torch.tensor(scale, device=device).view(1, 3, 1, 1)
    offset_tensor = torch.tensor(offset, device=device).view(1, 3, 1, 1)
    normalised = torch.addcmul(offset_tensor, pixels, scale_tensor, out=torch.empty(pixels.shape, device=device))
    return normalised.to(dtype), counts


def normalise_tiles(tiles: np.ndarray, scale: list[float], offset: list[float], out: np.ndarray) -> None:
    """(N, T, T, 3) uint8 -> out (N, 3, T, T) float32 = x * scale + offset per channel, a tile per pool thread.

    NumPy in the decode threads rather than torch: torch's OpenMP threads spin-wait for busy cores (the model,
    other processes) and then run up to 10x slower; NumPy releases the GIL and does not spin.
    """
    scale32, offset32 = np.float32(scale), np.float32(offset)

    def normalise(index: int) -> None:
        for channel in range(3):
            plane = out[index, channel]
            np.multiply(tiles[index, :, :, channel], scale32[channel], out=plane, casting="unsafe")
            plane += offset32[channel]

    list(decode_pool().map(normalise, range(len(tiles))))
