"""Camera views -> the layout's images -> model-ready ``pixel_values``, in numpy/OpenCV/torch.

``stitched``: each view resized to 896x448 and pasted on the rig's grid with its camera name drawn
top-left; ``per_view``: the views themselves. Tiling follows transformers' GotOcr2 image processor
(same grid choice, tile order and thumbnail) so the checkpoint sees what its processor would give it,
about 10x faster than the PIL path (see `drive-mllm bench preprocess`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
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
# four components, so that a four-channel canvas (label_stamp) gets the colour in every channel
LABEL_COLOR, LABEL_OUTLINE = (255, 255, 255, 255), (0, 0, 0, 0)


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


def resize(image: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Resize to (width, height) close to PIL's antialiased bicubic, at OpenCV speed.

    Area averaging when shrinking 2x or more (where aliasing shows); bicubic when an axis grows; bilinear
    for mild shrinking (e.g. a half-size 800x450 decode to a 448 tile), where area averaging with a
    fractional factor is ~6x slower and bilinear stays within about one grey level of PIL.
    out: where to write the result (a view such as a mosaic cell, so it is not allocated and copied there).
    """
    height, width = image.shape[:2]
    if (width, height) == tuple(size):
        if out is None:
            return image
        out[:] = image
        return out
    factors = (width / size[0], height / size[1])
    if max(factors) >= 2:
        interpolation = cv2.INTER_AREA
    elif min(factors) < 1:
        interpolation = cv2.INTER_CUBIC
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(image, size, dst=out, interpolation=interpolation)


def blank_view(rig: CameraRig) -> np.ndarray:
    """A black view in the rig's camera size, standing in for a camera that sent nothing."""
    width, height = rig.image_size
    return np.zeros((height, width, 3), dtype=np.uint8)


def draw_label(view: np.ndarray, text: str) -> None:
    """Camera name top-left, white on a black outline so it reads on any background.

    The reference drawing; the mosaic replays it through label_stamp, which gives the same pixels faster.
    """
    (_, text_height), _ = cv2.getTextSize(text, LABEL_FONT, LABEL_SCALE, LABEL_THICKNESS)
    origin = (LABEL_MARGIN, LABEL_MARGIN + text_height)
    cv2.putText(view, text, origin, LABEL_FONT, LABEL_SCALE, LABEL_OUTLINE, LABEL_THICKNESS + 3, cv2.LINE_AA)
    cv2.putText(view, text, origin, LABEL_FONT, LABEL_SCALE, LABEL_COLOR, LABEL_THICKNESS, cv2.LINE_AA)


@dataclass(frozen=True)
class LabelStamp:
    """A camera name as draw_label draws it, replayed as a table lookup: the same pixels at about 40 % of the cost.

    Every pixel that putText's anti-aliased strokes touch ends as a fixed function of its own value: each stroke
    blends black or white into it with a coverage set by the geometry alone, the same in every channel. So the
    name drawn once over each of the 256 flat grey levels gives, per touched pixel, its value for any background.
    """

    text: str
    height: int  # the box at the view's top-left corner that holds every touched pixel
    width: int
    pixels: np.ndarray  # flat indices of the touched pixels in the box
    table: np.ndarray  # touched pixels x 256, flattened: pixel i drawn over grey level g
    rows: np.ndarray  # (touched pixels, 1): where each pixel's 256 values start in `table`

    def draw(self, view: np.ndarray) -> None:
        """Draw onto an RGB view's top-left corner, exactly as draw_label(view, text)."""
        if view.shape[0] < self.height or view.shape[1] < self.width:
            draw_label(view, self.text)  # the view's edge clips the name: the table does not hold that
            return
        box = view[:self.height, :self.width]
        patch = np.ascontiguousarray(box).reshape(-1, 3)  # a small copy: flat indexing is the fast kind
        background = patch.take(self.pixels, axis=0)
        patch[self.pixels] = self.table.take(self.rows + background)
        box[:] = patch.reshape(box.shape)


@cache
def label_stamp(text: str) -> LabelStamp:
    """The stamp of a camera name, built on first use (64 renders, tens of ms; a pool thread per name)."""
    (text_width, text_height), baseline = cv2.getTextSize(text, LABEL_FONT, LABEL_SCALE, LABEL_THICKNESS)
    pad = LABEL_MARGIN + 2 * (LABEL_THICKNESS + 3)  # room for the outline around the text box
    canvas_shape = (LABEL_MARGIN + text_height + baseline + pad, LABEL_MARGIN + text_width + pad)
    levels = np.arange(256, dtype=np.uint8)
    drawn = np.empty((256, *canvas_shape), dtype=np.uint8)
    for group in levels.reshape(-1, 4):  # four grey levels per render, one per channel
        canvas = np.empty((*canvas_shape, 4), dtype=np.uint8)
        canvas[:] = group
        draw_label(canvas, text)
        drawn[group] = np.moveaxis(canvas, 2, 0)
    ys, xs = np.nonzero((drawn != levels[:, None, None]).any(axis=0))
    height, width = (int(ys.max()) + 1, int(xs.max()) + 1) if ys.size else (0, 0)
    return LabelStamp(text=text, height=height, width=width, pixels=ys * width + xs,
                      table=np.ascontiguousarray(drawn[:, ys, xs].T).ravel(),
                      rows=np.arange(ys.size)[:, None] * 256)


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
    # only a grid with empty cells (fewer cameras than rows x columns) needs clearing: the others are overwritten
    allocate = np.empty if len(rig.names) == rig.rows * rig.columns else np.zeros
    mosaic = allocate((mosaic_height, mosaic_width, 3), dtype=np.uint8)

    def fill_cell(name: str, view: np.ndarray) -> None:
        row, column = rig.grid_cell(name)
        cell = mosaic[row * view_height:(row + 1) * view_height, column * view_width:(column + 1) * view_width]
        resize(view, MOSAIC_VIEW_SIZE, out=cell)
        label_stamp(name).draw(cell)

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


TileSource = Callable[[], np.ndarray]


def tile_sources(image: np.ndarray, spec: TilingSpec) -> list[tuple[int, TileSource]]:
    """(position, source) per tile of an image, position in GotOcr2's order (grid row-major, then the thumbnail).

    A source gives the tile's (T, T, 3) uint8 pixels when called, in a pool thread. Grid tiles are views of
    the image resized to the grid (the image itself when it already has the grid's size, as the stitched
    mosaic does), so they are read where they lie and never copied. The thumbnail, which needs a resize of
    its own, is listed first so that it starts first and the pool's threads finish together.
    """
    height, width = image.shape[:2]
    tile = spec.tile_size
    columns, rows = spec.tile_grid(width, height)
    count = spec.tile_count(width, height)
    sources: list[tuple[int, TileSource]] = [(count - 1, lambda: resize(image, (tile, tile)))]
    if count > 1:
        grid = resize(image, (columns * tile, rows * tile))
        for index in range(count - 1):
            row, column = divmod(index, columns)
            view = grid[row * tile:(row + 1) * tile, column * tile:(column + 1) * tile]
            sources.append((index, lambda view=view: view))
    return sources


def tile_buffer(count: int, tile: int, device: torch.device) -> torch.Tensor:
    """Uninitialised (count, T, T, 3) uint8 host memory; pinned when bound for CUDA, so the copy is asynchronous
    (torch's pinned-memory cache reuses it only after that copy has finished)."""
    return torch.empty((count, tile, tile, 3), dtype=torch.uint8, pin_memory=device.type == "cuda")


def to_pixel_values(images: list[np.ndarray], spec: TilingSpec, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[int]]:
    """Tiles of all images concatenated, (N, 3, T, T) normalised on `device`, and the tile count per image.

    Each tile is made in a pool thread. On the CPU it is normalised channel-first straight from its source into
    the output; for a GPU the uint8 tiles are gathered in one host buffer and go over before normalising (4x less
    to copy, the GPU does the arithmetic).
    """
    device = torch.device(device)
    counts = [spec.tile_count(image.shape[1], image.shape[0]) for image in images]
    sources, start = [], 0
    for image, count in zip(images, counts, strict=True):
        sources += [(start + index, source) for index, source in tile_sources(image, spec)]
        start += count
    if device.type == "cpu":
        pixels = torch.empty((start, 3, spec.tile_size, spec.tile_size))
        out, tables = pixels.numpy(), normalisation_tables(spec)
        run_in_pool(sources, lambda index, tile: normalise_tile(tile, tables, out[index]))
        return pixels.to(dtype), counts
    host = tile_buffer(start, spec.tile_size, device)
    tiles = host.numpy()

    def gather(index: int, tile: np.ndarray) -> None:
        tiles[index] = tile

    run_in_pool(sources, gather)
    pixels = host.to(device, non_blocking=True).permute(0, 3, 1, 2)
    # (x * rescale - mean) / std as one multiply-add per channel, uint8 in, float32 out, channel-first
    scale, offset = normalisation(spec)
    scale_tensor = torch.tensor(scale, device=device).view(1, 3, 1, 1)
    offset_tensor = torch.tensor(offset, device=device).view(1, 3, 1, 1)
    normalised = torch.addcmul(offset_tensor, pixels, scale_tensor, out=torch.empty(pixels.shape, device=device))
    return normalised.to(dtype), counts


def run_in_pool(sources: list[tuple[int, TileSource]], use: Callable[[int, np.ndarray], object]) -> None:
    """use(position, pixels) for every tile, in the decode threads (OpenCV and NumPy release the GIL)."""
    list(decode_pool().map(lambda item: use(item[0], item[1]()), sources))


def normalisation(spec: TilingSpec) -> tuple[list[float], list[float]]:
    """Per-channel (scale, offset) with (x * rescale - mean) / std = x * scale + offset."""
    scale = [spec.rescale_factor / s for s in spec.std]
    offset = [-m / s for m, s in zip(spec.mean, spec.std, strict=True)]
    return scale, offset


@cache
def normalisation_tables(spec: TilingSpec) -> tuple[np.ndarray, ...]:
    """Per channel, the normalised float32 value of each of the 256 grey levels (computed in float64).

    A table lookup (cv2.LUT) does the multiply-add and the uint8 -> float32 conversion in one cheap pass.
    """
    levels = np.arange(256, dtype=np.float64)
    scales, offsets = normalisation(spec)
    return tuple((levels * scale + offset).astype(np.float32) for scale, offset in zip(scales, offsets, strict=True))


def normalise_tile(tile: np.ndarray, tables: tuple[np.ndarray, ...], out: np.ndarray) -> None:
    """(T, T, 3) uint8, possibly a view into a larger image -> out (3, T, T) float32, normalised channel-first.

    OpenCV rather than torch: torch's OpenMP threads spin-wait for busy cores (the model, other processes) and
    then run up to 10x slower. cv2.split de-interleaves the channels (SIMD), then one lookup per channel.
    """
    for plane, table, channel_out in zip(cv2.split(tile), tables, out, strict=True):
        cv2.LUT(plane, table, dst=channel_out)
