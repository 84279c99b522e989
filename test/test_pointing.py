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


def test_tokens_hold_their_bins_and_locate_reads_where_between_tokens_the_attention_lies(tokens):
    assert tokens.image_seq_length == 64 and tokens.patch_grid == 16
    xs, ys = sorted(set(tokens.centres[:, 0].tolist())), sorted(set(tokens.centres[:, 1].tolist()))
    assert xs == pytest.approx([28 * (i + 0.5) for i in range(8)]) and ys == pytest.approx([15.75 * (i + 0.5) for i in range(8)])
    grid = tokens.grid
    for camera, x_bin, y_bin in (("CAM_FRONT", 16, 18), ("CAM_BACK_LEFT", 3, 27), ("CAM_BACK", 0, 0)):
        token = tokens.token(camera, x_bin, y_bin)
        assert token // 64 == NUSCENES_CAMERAS.index(camera)
        offset = (tokens.centres[token % 64] - torch.tensor([grid.centre(x_bin, WIDTH), grid.centre(y_bin, HEIGHT)])).abs()
        assert (offset <= tokens.spacing / 2).all()  # the token holds the bin's centre
        alone = torch.zeros(6 * 64)
        alone[token] = 1.0
        x, y = tokens.centres[token % 64].tolist()
        assert tokens.locate(token, alone) == (camera, grid.bin(x, WIDTH), grid.bin(y, HEIGHT))
    left, right = tokens.token("CAM_FRONT", 12, 16), tokens.token("CAM_FRONT", 16, 16)  # neighbours along x
    split = torch.zeros(6 * 64)
    split[left] = split[right] = 0.5
    camera, x_bin, y_bin = tokens.locate(left, split)
    x_bins = [grid.bin(float(tokens.centres[token % 64][0]), WIDTH) for token in (left, right)]
    assert camera == "CAM_FRONT" and x_bins[0] < x_bin < x_bins[1]  # between the two
    assert y_bin == grid.bin(float(tokens.centres[left % 64][1]), HEIGHT)


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
    # A small model sometimes leaves a location token out: pointer decoding still places the tag (partial).
    ids = tokenizer.encode("Firstly notice that <c1,CAM_BACK,<y20>>. Secondly notice that <c2,CAM_FRONT,<x4>>. "
                           "Thirdly notice that <c3,CAM_BACK_LEFT,<x3>,<y2>>.", add_special_tokens=False)
    assert [step.camera for step in location_steps(ids, tokenizer, x_ids, y_ids, NUSCENES_CAMERAS)] == ["CAM_BACK_LEFT"]
    steps = location_steps(ids, tokenizer, x_ids, y_ids, NUSCENES_CAMERAS, partial=True)
    assert [(step.camera, tokenizer.convert_ids_to_tokens([ids[at] for at in step.written])) for step in steps] == [
        ("CAM_BACK", ["<y20>"]), ("CAM_FRONT", ["<x4>"]), ("CAM_BACK_LEFT", ["<x3>", "<y2>"])]


def test_point_takes_the_most_attended_token_of_any_view_and_one_place_per_object(tokens):
    prompt, length = 400, 420  # image tokens at 10..393 of the prompt; the answer starts at 400
    images = list(range(10, 10 + 6 * 64))
    attention = torch.full((2, length, length), 1e-6)
    steps = [LocationStep(3, 5, "CAM_FRONT"), LocationStep(12, 14, "CAM_FRONT")]  # as written; any view competes
    back, front_right = tokens.token("CAM_BACK", 20, 10), tokens.token("CAM_FRONT_RIGHT", 5, 25)
    for step in steps:
        for query in (prompt + step.x_at - 1, prompt + step.y_at - 1):
            attention[:, query, images[back]] = 0.6
            attention[:, query, images[back + 1]] = 0.2  # the same object's next token: passed over
            attention[:, query, images[front_right]] = 0.1
    first, second = point(attention, images, prompt, steps, tokens)
    assert first[0] == "CAM_BACK" and tokens.token(*first) in (back, back + 1)
    assert second[0] == "CAM_FRONT_RIGHT" and tokens.token(*second) == front_right
    attention[:, prompt + 17, images[front_right]] = 0.9  # a tag that wrote only its <yJ> (at 18) points too
    (only,) = point(attention, images, prompt, [LocationStep(None, 18, "CAM_BACK")], tokens)
    assert only[0] == "CAM_FRONT_RIGHT" and tokens.token(*only) == front_right


def test_repoint_tags_replaces_camera_and_bins_of_each_tag_in_order():
    text = "Firstly <c1,CAM_BACK,<x3>,<y20>> at (<x9>, <y1>), then <c2,CAM_FRONT_LEFT,<x31>,<y0>>."
    placed = [("CAM_FRONT", 4, 5), ("CAM_BACK_RIGHT", 6, 7)]
    assert repoint_tags(text, placed, NUSCENES_CAMERAS) == (
        "Firstly <c1,CAM_FRONT,<x4>,<y5>> at (<x9>, <y1>), then <c2,CAM_BACK_RIGHT,<x6>,<y7>>.")
    assert repoint_tags(text, placed[:1], NUSCENES_CAMERAS) == text  # not paired up: left as written
    partial = "Firstly <c1,CAM_BACK,<y20>>, then <c2,CAM_FRONT_LEFT,<x31>, so on."  # a location token or > left out
    assert repoint_tags(partial, placed, NUSCENES_CAMERAS) == (
        "Firstly <c1,CAM_FRONT,<x4>,<y5>>, then <c2,CAM_BACK_RIGHT,<x6>,<y7>>, so on.")
