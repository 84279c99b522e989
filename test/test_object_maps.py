"""Vision pretraining on object maps: labels from DriveLM frames, their tokens, the `objects` training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import InternVLForConditionalGeneration

from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.data.synthetic import WorldOptions, generate
from drive_mllm_ros.pointing import token_of_patch
from drive_mllm_ros.preprocess import TilingSpec
from drive_mllm_ros.prompt import PromptBuilder
from drive_mllm_ros.train.arguments import ConfigError, parse_config
from drive_mllm_ros.train.object_maps import (
    UNLABELLED,
    FrameLabels,
    ObjectMapDataset,
    ObjectMark,
    build_object_maps,
    frame_labels,
    frame_objects,
    frame_right,
)
from drive_mllm_ros.train.trainer import run

WIDTH, HEIGHT = 224, 126


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(WorldOptions(out, scenes=2, seed=11, duration=1.5, width=WIDTH, height=HEIGHT, val_fraction=0.5))
    return out


def test_frame_objects_reads_key_object_tags_and_per_camera_listings():
    frame = {
        "key_object_infos": {"<c1,CAM_BACK,147.1,74.3>": {"Visual_description": "Black car."}},
        "QA": {"perception": [
            {"Q": "What are objects to the front left of the ego car?",
             "A": "There is a green car at (116.5, 78.0), and a pedestrian in a red shirt at (20.0, 70.5)."},
            {"Q": "What are objects to the back of the ego car?", "A": "There is a black car at (147.1, 74.3)."},
            {"Q": "What are objects to the back right of the ego car?", "A": "There is no object to the back right."},
            {"Q": "Where is the green car in the current scene?", "A": "The green car is at (116.5, 78.0)."},
        ]},
    }
    assert sorted(frame_objects(frame), key=lambda mark: mark.x) == [
        ObjectMark("CAM_FRONT_LEFT", "pedestrian in a red shirt", 20.0, 70.5),
        ObjectMark("CAM_FRONT_LEFT", "green car", 116.5, 78.0),
        ObjectMark("CAM_BACK", "black car", 147.1, 74.3),  # the tag and the listing name the same object once
    ]


def test_frame_labels_read_moving_status_letters_and_the_ego_behaviour():
    frame = {
        "key_object_infos": {"<c1,CAM_FRONT,100.0,70.0>": {"Visual_description": "Red car."},
                             "<c2,CAM_BACK,50.0,60.0>": {"Visual_description": "Pedestrian."}},
        "QA": {"prediction": [
            {"Q": "What is the moving status of object <c1,CAM_FRONT,100.0,70.0>? Please select the correct answer "
                  "from the following options: A. Going ahead. B. Turn left. C. Stopped. D. Turn right.", "A": "C."},
        ], "behavior": [
            {"Q": "Predict the behavior of the ego vehicle. Please select the correct answer from the following "
                  "options: A. The ego vehicle is going straight. The ego vehicle is driving fast. B. The ego vehicle "
                  "is steering to the left. The ego vehicle is driving slowly.", "A": "B."},
        ]},
    }
    labels = frame_labels(frame)
    assert sorted(labels.marks, key=lambda mark: mark.x) == [
        ObjectMark("CAM_BACK", "pedestrian", 50.0, 60.0), ObjectMark("CAM_FRONT", "red car", 100.0, 70.0, "Stopped.")]
    assert (labels.steering, labels.speed) == (3, 1)  # steering to the left, driving slowly
    assert frame_labels({"QA": {"behavior": [{"Q": "Predict the behavior.", "A": "Unclear."}]}}) == FrameLabels([])


def test_each_image_token_covers_a_two_by_two_block_of_patches(tiny_checkpoint):
    model = InternVLForConditionalGeneration.from_pretrained(tiny_checkpoint)
    lookup = token_of_patch(model, 16).reshape(16, 16)
    blocks = lookup.reshape(8, 2, 8, 2).permute(0, 2, 1, 3).reshape(64, 4)
    assert (blocks == blocks[:, :1]).all() and sorted(blocks[:, 0].tolist()) == list(range(64))


def test_a_mark_labels_the_token_over_its_centre_in_its_camera_view(world, tiny_checkpoint):
    model = InternVLForConditionalGeneration.from_pretrained(tiny_checkpoint)
    builder = PromptBuilder(rig=CameraRig(image_size=(WIDTH, HEIGHT)), layout="per_view")
    paths = sorted((world / "nuscenes" / "samples").rglob("*.jpg"))[:6]
    # tile pixel (100, 177.8): patch row 12, column 7
    mark = ObjectMark("CAM_FRONT_RIGHT", "grey car", 100.0, 100.0, "Turn right.")
    dataset = ObjectMapDataset([(paths, FrameLabels([mark], steering=0, speed=4))], ["none", "grey car"],
                               TilingSpec(224, crop_to_patches=False, max_tiles=1), builder, 14, token_of_patch(model, 16))
    item = dataset[0]
    assert item["pixel_values"].shape == (6, 3, 224, 224)
    marked = item["object_classes"].nonzero().tolist()
    token = int(token_of_patch(model, 16)[12 * 16 + 7])
    assert marked == [[2, token]]
    assert torch.allclose(item["object_positions"][2].sum(0), torch.tensor([100 / WIDTH, 100 / HEIGHT]))
    assert (item["object_status"] != UNLABELLED).nonzero().tolist() == [[2, token]]
    assert item["object_status"][2, token] == 2  # MOVING_STATUS_OPTIONS.index("Turn right.")
    assert item["ego_behavior"].tolist() == [[0, 4]] * 6


def test_a_frame_is_read_from_its_views_summed_votes():
    # two frames of three views, labels 1 and 0: frame one's first view is sure of 1, the two others lean to 2
    logits = torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0],
                           [0.0, 0.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 3.0]])
    targets = torch.tensor([1, 1, 1, 0, 0, 0])
    assert frame_right(logits, targets, views=3) == 0.5  # frame one right, frame two wrong
    assert (logits.argmax(-1) == targets).float().mean() == 1 / 6  # per view: only frame one's first
    assert frame_right(logits, torch.full((6,), UNLABELLED), views=3) is None


def objects_config(world: Path, checkpoint: Path, out: Path, *extra: str):
    drivelm = world / "drivelm"
    return parse_config("config/train/student_objects.yaml", [
        f"model.path={checkpoint}", f"data.drivelm_json={drivelm / 'v1_1_train_nus.json'}",
        f"data.eval_json={drivelm / 'v1_1_val_nus.json'}", f"training.output_dir={out}", "training.max_steps=30",
        "training.learning_rate=3e-3", "training.logging_steps=30", "training.disable_tqdm=true", *extra])


def test_objects_run_trains_the_vision_only_and_exports_without_the_head(world, tiny_checkpoint, tmp_path):
    target = run(objects_config(world, tiny_checkpoint, tmp_path / "run"))
    before, after = load_file(tiny_checkpoint / "model.safetensors"), load_file(target / "model.safetensors")
    assert before.keys() == after.keys()  # same architecture, no head
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(name.startswith("vision_tower.") for name in changed)
    assert any(name.startswith("multi_modal_projector.") for name in changed)
    assert not any(name.startswith(("language_model.", "lm_head.")) for name in changed)
    card = (target / "README.md").read_text()
    assert "object marks" in card and "eval_detected" in card and "moving statuses" in card
    assert "eval_speed_right" in card and "eval_status_right" in card and "eval_speed_frame_right" in card
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())  # what a pipeline reads back
    assert 0 <= results["eval_speed_frame_right"] <= 1 and results["train_loss"] > 0
    InternVLForConditionalGeneration.from_pretrained(target)


def test_extra_training_files_add_their_frames_repeated(world, tiny_checkpoint, tmp_path):
    drivelm = world / "drivelm"
    val = drivelm / "v1_1_val_nus.json"
    # A question filter selects QA for answer training; object maps read labels from all of a frame's QA.
    config = objects_config(world, tiny_checkpoint, tmp_path / "run",
                            f"data.extra_drivelm_json=[{{json: '{val}', weight: 2.0, question_filter: '^Never'}}]")
    builder = PromptBuilder(rig=CameraRig(image_size=(WIDTH, HEIGHT)), layout="per_view")
    model = InternVLForConditionalGeneration.from_pretrained(tiny_checkpoint)
    spec = TilingSpec(224, crop_to_patches=False, max_tiles=1)
    alone, _, _ = build_object_maps(objects_config(world, tiny_checkpoint, tmp_path / "run").data, spec, builder, model)
    mixed, _, summary = build_object_maps(config.data, spec, builder, model)
    val_frames = sum(len(scene["key_frames"]) for scene in json.loads(val.read_text()).values())
    assert val_frames and len(mixed) == len(alone) + 2 * val_frames
    assert mixed.frames[-1][1].marks and f"{len(mixed)} frames" in summary


def test_objects_needs_a_trainable_vision_and_one_tile_per_image(world, tiny_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="method.tune"):
        objects_config(world, tiny_checkpoint, tmp_path, "method.tune=frozen_vision")
    with pytest.raises(ValueError, match="max_tiles: 1"):
        run(objects_config(world, tiny_checkpoint, tmp_path, "data.layout=stitched", "data.max_tiles=4"))
