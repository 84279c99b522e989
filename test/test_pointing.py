"""Pointer decoding: image-token geometry both ways, the answer's location steps, and bins read off the attention."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, InternVLForConditionalGeneration

from drive_mllm_ros.cameras import NUSCENES_CAMERAS
from drive_mllm_ros.locations import LocationGrid, location_tokens
from drive_mllm_ros.pointing import ImageTokenGrid, LocationStep, location_steps, point, repoint_tags

BINS, WIDTH, HEIGHT = 32, 224.0, 126.0


@pytest.fixture(scope="module")
def tokens(tiny_checkpoint) -> ImageTokenGrid:
    model = InternVLForConditionalGeneration.from_pretrained(tiny_checkpoint)
    return ImageTokenGrid.of_model(model, 224, LocationGrid(BINS, WIDTH, HEIGHT), NUSCENES_CAMERAS)


def test_each_image_token_holds_the_bins_that_map_to_it_and_the_views_tile_the_grid(tokens):
    assert tokens.image_seq_length == 64 and tokens.patch_grid == 16
    for camera in ("CAM_FRONT", "CAM_BACK_LEFT"):
        covered = set()
        for token in tokens.camera_tokens(camera):
            x_bins, y_bins = tokens.bins(token)
            assert len(x_bins) == len(y_bins) == BINS // 8  # 8 x 8 tokens per view
            assert {tokens.token(camera, x, y) for x in x_bins for y in y_bins} == {token}
            covered |= {(x, y) for x in x_bins for y in y_bins}
        assert len(covered) == BINS * BINS
    back = NUSCENES_CAMERAS.index("CAM_BACK")
    assert tokens.camera_tokens("CAM_BACK") == range(back * 64, (back + 1) * 64)


def test_location_steps_are_the_tags_pairs_with_their_camera(tiny_checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tokenizer.add_tokens(location_tokens(BINS))
    answer = ("Firstly notice that <c1,CAM_BACK,<x3>,<y20>>. There is a car at (<x9>, <y1>). "
              "Secondly notice that <c2,CAM_FRONT_LEFT,<x31>,<y0>>.")
    ids = tokenizer.encode(answer, add_special_tokens=False)
    x_ids = {tokenizer.convert_tokens_to_ids(f"<x{i}>") for i in range(BINS)}
    y_ids = {tokenizer.convert_tokens_to_ids(f"<y{i}>") for i in range(BINS)}
    steps = location_steps(ids, tokenizer, x_ids, y_ids, NUSCENES_CAMERAS)
    assert [step.camera for step in steps] == ["CAM_BACK", "CAM_FRONT_LEFT"]
    assert [tokenizer.convert_ids_to_tokens([ids[s.x_at], ids[s.y_at]]) for s in steps] == [
        ["<x3>", "<y20>"], ["<x31>", "<y0>"]]  # a listed object's "at (x, y)" keeps its bins


def test_point_takes_the_most_attended_token_of_any_view_and_the_best_scored_bins_inside_it(tokens):
    prompt, length = 400, 420  # image tokens at 10..393 of the prompt; the answer starts at 400
    images = list(range(10, 10 + 6 * 64))
    back, front_right = tokens.camera_tokens("CAM_BACK")[5], tokens.camera_tokens("CAM_FRONT_RIGHT")[21]
    attention = torch.full((2, length, length), 1e-4)
    steps = [LocationStep(3, 5, "CAM_FRONT"), LocationStep(12, 14, "CAM_FRONT")]  # as written; any view competes
    for step in steps:
        for query in (prompt + step.x_at - 1, prompt + step.y_at - 1):
            attention[:, query, images[back]] = 0.9
            attention[:, query, images[front_right]] = 0.5
    x_logits, y_logits = torch.zeros(length, BINS), torch.zeros(length, BINS)
    x_bins, y_bins = tokens.bins(back)
    x_logits[prompt + 2, x_bins[-1]] = y_logits[prompt + 4, y_bins[1]] = 5.0
    x_logits[prompt + 2, 0] = 9.0  # a bin outside the pointed token does not count
    first, second = point(attention, x_logits, y_logits, images, prompt, steps, tokens)
    assert first == ("CAM_BACK", x_bins[-1], y_bins[1])
    assert tokens.token(*second) == front_right  # one object, one listing: the next best token


def test_repoint_tags_replaces_camera_and_bins_of_each_tag_in_order():
    text = "Firstly <c1,CAM_BACK,<x3>,<y20>> at (<x9>, <y1>), then <c2,CAM_FRONT_LEFT,<x31>,<y0>>."
    placed = [("CAM_FRONT", 4, 5), ("CAM_BACK_RIGHT", 6, 7)]
    assert repoint_tags(text, placed, NUSCENES_CAMERAS) == (
        "Firstly <c1,CAM_FRONT,<x4>,<y5>> at (<x9>, <y1>), then <c2,CAM_BACK_RIGHT,<x6>,<y7>>.")
    assert repoint_tags(text, placed[:1], NUSCENES_CAMERAS) == text  # not paired up: left as written
