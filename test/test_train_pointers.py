"""Pointer supervision targets: each tag's location tokens look at the image token that holds the tag's centre."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer, InternVLForConditionalGeneration

from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.drivelm import Q_OBJECTS_IN_PATH
from drive_mllm_ros.locations import LocationGrid, location_tokens
from drive_mllm_ros.pointing import ImageTokenGrid, token_of_patch
from drive_mllm_ros.prompt import PromptBuilder
from drive_mllm_ros.train.arguments import ConfigError, parse_config
from drive_mllm_ros.train.collate import (
    IGNORE_INDEX,
    AnswerOnlyCollator,
    encode_conversation,
    pack_encoded,
    packed_starts,
    shared_prefix_length,
)
from drive_mllm_ros.train.pointers import PointerTargets, pointer_loss, shift_pointers

WIDTH, HEIGHT, TOKENS, PATCHES = 320, 180, 64, 16
BUILDER = PromptBuilder(rig=CameraRig(image_size=(WIDTH, HEIGHT)), layout="per_view",
                        locations=LocationGrid(32, WIDTH, HEIGHT))
TAGS = [("CAM_BACK", 40.2, 120.7), ("CAM_FRONT_RIGHT", 300.0, 20.5)]
ANSWER = (f"Firstly notice that <c1,{TAGS[0][0]},{TAGS[0][1]},{TAGS[0][2]}>. There is a car at (100.0, 90.0). "
          f"Secondly notice that <c2,{TAGS[1][0]},{TAGS[1][1]},{TAGS[1][2]}>.")


@pytest.fixture(scope="module")
def parts(tiny_checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tokenizer.add_tokens(location_tokens(32))
    model = InternVLForConditionalGeneration.from_pretrained(tiny_checkpoint)
    lookup = token_of_patch(model, PATCHES)
    grid = ImageTokenGrid(BUILDER.locations, BUILDER.rig.names, TOKENS, lookup, PATCHES)
    return tokenizer, grid, PointerTargets(BUILDER, tokenizer, grid)


def encoded(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    return encode_conversation(tokenizer, BUILDER.messages(question, answer), [1] * 6, TOKENS)


def test_each_tag_points_both_its_tokens_at_the_image_token_of_its_centre(parts):
    tokenizer, tokens, targets = parts
    ids, labels = encoded(tokenizer, Q_OBJECTS_IN_PATH, ANSWER)
    pointers = targets(ids, labels)
    assert len(pointers) == 2 * len(TAGS)  # the listed "at (x, y)" point names no camera: no pointer
    images = [j for j, token in enumerate(ids) if token == tokenizer.context_image_token_id]
    x_tokens, y_tokens = set(location_tokens(32)[:32]), set(location_tokens(32)[32:])
    for (camera, x, y), (x_pointer, y_pointer) in zip(TAGS, zip(pointers[::2], pointers[1::2], strict=True), strict=True):
        assert tokenizer.convert_ids_to_tokens(labels[x_pointer[0] + 1]) in x_tokens  # the query predicts <xI>
        assert tokenizer.convert_ids_to_tokens(labels[y_pointer[0] + 1]) in y_tokens
        assert x_pointer[1] == y_pointer[1]
        view, token = divmod(images.index(x_pointer[1]), TOKENS)
        assert BUILDER.rig.names[view] == camera
        patch = int(y / HEIGHT * PATCHES) * PATCHES + int(x / WIDTH * PATCHES)
        assert int(tokens.token_of_patch[patch]) == token  # the token that holds the tag's centre


def test_a_tag_read_in_the_question_points_its_y_token_at_the_object(parts):
    tokenizer, tokens, targets = parts
    camera, x, y = TAGS[0]
    ids, labels = encoded(tokenizer, f"What is the moving status of object <c1,{camera},{x},{y}>?", "Stopped.")
    images = [j for j, token in enumerate(ids) if token == tokenizer.context_image_token_id]
    grid = BUILDER.locations
    key = images[tokens.token(camera, grid.bin(x, WIDTH), grid.bin(y, HEIGHT))]
    [(query, pointed)] = targets(ids, labels)
    assert pointed == key and tokenizer.convert_ids_to_tokens(ids[query]) == f"<y{grid.bin(y, HEIGHT)}>"
    assert labels[query] == IGNORE_INDEX  # read, not written


def test_packed_pointers_keep_their_queries_and_keys(parts):
    tokenizer, _, targets = parts
    samples = [encoded(tokenizer, Q_OBJECTS_IN_PATH, ANSWER), encoded(tokenizer, "Where are they?", ANSWER)]
    row = pack_encoded(samples)
    prefix, starts = shared_prefix_length(samples), packed_starts(samples)
    for (ids, labels), start in zip(samples, starts, strict=True):
        alone = targets(ids, labels)
        packed = shift_pointers(alone, prefix, start)
        assert len(packed) == len(alone) == 4
        for (query, key), (packed_query, packed_key) in zip(alone, packed, strict=True):
            assert row["input_ids"][packed_query + 1] == ids[query + 1] and row["labels"][packed_query + 1] == labels[query + 1]
            assert packed_key == key < prefix
    batch = AnswerOnlyCollator(tokenizer.pad_token_id)([{**row, "pixel_values": torch.zeros(6, 3, 224, 224),
                                                         "sample_ids": ["a", "b"], "pointers": [(5, 1), (6, 2)]}])
    assert batch["pointer_targets"].tolist() == [[0, 5, 1], [0, 6, 2]]


def test_pointer_loss_is_the_mean_negative_log_attention_at_the_targets():
    length = 8
    uniform = torch.full((1, 2, length, length), 1 / length)
    targets = torch.tensor([[0, 5, 1], [0, 6, 2]])
    assert pointer_loss(uniform, targets).item() == pytest.approx(math.log(length))
    sharp = torch.zeros(1, 2, length, length)
    sharp[0, :, 5, 1] = sharp[0, :, 6, 2] = 1.0
    assert pointer_loss(sharp, targets).item() == pytest.approx(0.0, abs=1e-5)


def test_pointers_need_location_tokens_and_the_per_view_layout(parts):
    tokenizer, lookup, _ = parts
    with pytest.raises(ValueError, match="location tokens"):
        PointerTargets(PromptBuilder(rig=BUILDER.rig, layout="per_view"), tokenizer, lookup)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.location_bins=1"], "data.location_bins: expected 0 .* or at least 2"),
        (["data.location_bins=32"], "location tokens need data.layout 'per_view', got 'stitched'"),
        (["method.pointer_weight=-1"], "method.pointer_weight: expected a weight >= 0"),
        (["method.pointer_weight=1", "method.name=distill", "method.teacher_path=t"],
         "pointer supervision runs with method.name 'sft', got 'distill'"),
    ],
)
def test_bad_location_and_pointer_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(None, ["model.path=x", "data.drivelm_json=y", "training.output_dir=z", *overrides])
