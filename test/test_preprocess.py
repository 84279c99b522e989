"""Mosaic layout, tiling and normalisation against transformers' GotOcr2ImageProcessorPil.

Measured agreement (normalised units, 1.0 = about 58 grey levels): stitched 448-px grid tiles are
identical (the 2688x896 mosaic is exactly 6x2 tiles, no resize); the thumbnail (2688x896 -> 448x448)
differs by 0.018 mean because OpenCV's area averaging is not PIL's antialiased bicubic, about one grey
level; per-view 1600x900 -> 448x448 differs by 0.010 mean; a half-size 800x450 decode -> 448x448
(bilinear, see preprocess.resize) by 0.024 on the noisy test picture, 0.013 on its JPEG; an image that
needs enlarging (1000x700 -> 3x2 tiles, OpenCV bicubic vs PIL bicubic) by 0.007. Single pixels differ
by up to ~0.9 at sharp edges.
"""

import numpy as np
import pytest
import torch
from transformers import GotOcr2ImageProcessorPil

from drive_mllm_ros.bench.preprocess import synthetic_camera_image
from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.preprocess import (
    TilingSpec,
    blank_view,
    draw_label,
    label_stamp,
    layout_images,
    resize,
    stitch_views,
    to_pixel_values,
    view_target_size,
)
from drive_mllm_ros.prompt import PromptBuilder

RIG = CameraRig()


@pytest.fixture(scope="module")
def views() -> list[np.ndarray]:
    return [synthetic_camera_image(seed) for seed in range(len(RIG.names))]


def processor_pixel_values(images: list[np.ndarray], spec: TilingSpec) -> tuple[torch.Tensor, list[int]]:
    processor = GotOcr2ImageProcessorPil(image_mean=list(spec.mean), image_std=list(spec.std))
    out = processor(images, return_tensors="pt", **spec.processor_kwargs())
    return out.pixel_values, out.num_patches.tolist()


def test_stitched_tiles_match_processor(views):
    mosaic = stitch_views(views, RIG)
    assert mosaic.shape == (896, 2688, 3)
    spec = TilingSpec()
    ours, tiles = to_pixel_values([mosaic], spec)
    reference, reference_tiles = processor_pixel_values([mosaic], spec)
    assert tiles == reference_tiles == [13]
    assert ours.shape == reference.shape == (13, 3, 448, 448)
    torch.testing.assert_close(ours[:12], reference[:12], rtol=0, atol=1e-5)  # same grid, same order
    assert (ours[12] - reference[12]).abs().mean() < 0.03  # thumbnail: INTER_AREA vs PIL bicubic


@pytest.mark.parametrize(("spec", "size", "tolerance"), [
    (TilingSpec(crop_to_patches=False), (1600, 900), 0.02),  # per_view: one 448 tile per view
    (TilingSpec(crop_to_patches=False), (800, 450), 0.03),  # per_view from a half-size JPEG decode
    (TilingSpec(max_tiles=6), (1000, 700), 0.015),  # enlarged to a 3x2 grid + thumbnail
    (TilingSpec(tile_size=224), (2688, 896), 0.03),  # 224-px tiles, as the tiny test checkpoint uses
])
def test_tiling_matches_processor(spec, size, tolerance):
    image = synthetic_camera_image(7, size)
    ours, tiles = to_pixel_values([image, image], spec)
    reference, reference_tiles = processor_pixel_values([image, image], spec)
    assert tiles == reference_tiles
    assert ours.shape == reference.shape
    per_tile = (ours - reference).abs().mean(dim=(1, 2, 3))
    assert per_tile.max() < tolerance, per_tile


def test_tile_counts_follow_checkpoint_limits():
    assert TilingSpec().tile_count(2688, 896) == 13
    assert TilingSpec(max_tiles=6).tile_count(2688, 896) == 4  # 3x1 keeps the 3:1 aspect, + thumbnail
    assert TilingSpec(crop_to_patches=False).tile_count(2688, 896) == 1
    assert TilingSpec(max_tiles=1).tile_count(2688, 896) == 1


def test_mosaic_cells_and_labels(views):
    mosaic = stitch_views(views, RIG)
    back_right = mosaic[448:, 1792:]  # row 1, column 2
    plain = resize(views[5], (896, 448))
    # the label changes the top-left corner only
    assert np.abs(back_right[100:, 300:].astype(int) - plain[100:, 300:]).max() == 0
    assert np.abs(back_right[:40, :250].astype(int) - plain[:40, :250]).mean() > 20


@pytest.mark.parametrize("name", RIG.names)
def test_label_stamp_draws_what_puttext_draws(name):
    rng = np.random.default_rng(3)
    for background in (rng.integers(0, 256, (448, 896, 3), dtype=np.uint8), np.full((448, 896, 3), 77, np.uint8)):
        reference = background.copy()
        draw_label(reference, name)
        mosaic = np.zeros((448, 1792, 3), dtype=np.uint8)
        mosaic[:, 896:] = background
        label_stamp(name).draw(mosaic[:, 896:])  # a cell: a view with the mosaic's row stride
        np.testing.assert_array_equal(mosaic[:, 896:], reference)
        assert mosaic[:, :896].max() == 0
    small = rng.integers(0, 256, (20, 100, 3), dtype=np.uint8)  # clipped by the view's edge: drawn directly
    reference = small.copy()
    draw_label(reference, name)
    label_stamp(name).draw(small)
    np.testing.assert_array_equal(small, reference)


def test_layout_images_and_blank_view(views):
    assert len(layout_images(views, PromptBuilder(layout="per_view"))) == 6
    assert layout_images(views, PromptBuilder())[0].shape == (896, 2688, 3)
    blank = blank_view(RIG)
    assert blank.shape == (900, 1600, 3) and blank.max() == 0
    with pytest.raises(ValueError, match=r"views: expected 6 \(one per camera"):
        layout_images(views[:5], PromptBuilder())
    with pytest.raises(ValueError, match="CAM_FRONT: expected an RGB uint8 array"):
        layout_images([views[0], views[1][..., 0], *views[2:]], PromptBuilder())


def test_view_target_sizes():
    assert view_target_size(PromptBuilder(), TilingSpec()) == (896, 448)
    assert view_target_size(PromptBuilder(layout="per_view"), TilingSpec(crop_to_patches=False)) == (448, 448)
    assert view_target_size(PromptBuilder(layout="per_view"), TilingSpec(crop_to_patches=True)) is None


def test_spec_from_image_processor():
    processor = GotOcr2ImageProcessorPil(size={"height": 224, "width": 224}, max_patches=6,
                                         image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    spec = TilingSpec.from_image_processor(processor, "stitched")
    assert (spec.tile_size, spec.max_tiles, spec.mean, spec.crop_to_patches) == (224, 6, (0.5, 0.5, 0.5), True)
    assert TilingSpec.from_image_processor(processor, "per_view", max_tiles=2).crop_to_patches is False
    assert TilingSpec.from_image_processor(processor, "per_view", max_tiles=2).max_tiles == 2
