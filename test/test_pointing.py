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


def test_token_centres_tile_each_view_and_spread_then_locate_gives_the_position_back(tokens):
    assert tokens.image_seq_length == 64 and tokens.patch_grid == 16
    xs, ys = sorted(set(tokens.centres[:, 0].tolist())), sorted(set(tokens.centres[:, 1].tolist()))
    assert xs == pytest.approx([28 * (i + 0.5) for i in range(8)]) and ys == pytest.approx([15.75 * (i + 0.5) for i in range(8)])
    corner = NUSCENES_CAMERAS.index("CAM_BACK") * 64 + int(tokens.token_of_patch[0])
    assert tokens.spread("CAM_BACK", 0, 0) == [(corner, 1.0)]  # past the corner token's centre: that token alone
    for camera, x_bin, y_bin in (("CAM_FRONT", 16, 18), ("CAM_BACK_LEFT", 3, 27), ("CAM_BACK", 4, 2)):
        spread = tokens.spread(camera, x_bin, y_bin)
        assert 1 <= len(spread) <= 4 and sum(weight for _, weight in spread) == pytest.approx(1.0)
        attention = torch.zeros(6 * 64)
        for token, weight in spread:
            attention[token] = weight
        top = max(spread, key=lambda pair: pair[1])[0]
        assert tokens.locate(top, attention) == (camera, x_bin, y_bin)  # an attention that matches the target


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


def test_point_takes_the_most_attended_token_of_any_view_refined_by_its_neighbours(tokens):
    prompt, length = 400, 420  # image tokens at 10..393 of the prompt; the answer starts at 400
    images = list(range(10, 10 + 6 * 64))
    attention = torch.full((2, length, length), 1e-6)
    steps = [LocationStep(3, 5, "CAM_FRONT"), LocationStep(12, 14, "CAM_FRONT")]  # as written; any view competes
    back, front_right = tokens.spread("CAM_BACK", 20, 10), tokens.spread("CAM_FRONT_RIGHT", 5, 25)
    for step in steps:
        for query in (prompt + step.x_at - 1, prompt + step.y_at - 1):
            for token, weight in back:
                attention[:, query, images[token]] = 0.6 * weight
            for token, weight in front_right:
                attention[:, query, images[token]] = 0.4 * weight
    first, second = point(attention, images, prompt, steps, tokens)
    assert first == ("CAM_BACK", 20, 10)
    assert second == ("CAM_FRONT_RIGHT", 5, 25)  # one object, one listing: the next best object


def test_repoint_tags_replaces_camera_and_bins_of_each_tag_in_order():
    text = "Firstly <c1,CAM_BACK,<x3>,<y20>> at (<x9>, <y1>), then <c2,CAM_FRONT_LEFT,<x31>,<y0>>."
    placed = [("CAM_FRONT", 4, 5), ("CAM_BACK_RIGHT", 6, 7)]
    assert repoint_tags(text, placed, NUSCENES_CAMERAS) == (
        "Firstly <c1,CAM_FRONT,<x4>,<y5>> at (<x9>, <y1>), then <c2,CAM_BACK_RIGHT,<x6>,<y7>>.")
    assert repoint_tags(text, placed[:1], NUSCENES_CAMERAS) == text  # not paired up: left as written
