"""Training data and configuration: answer-only labels, DriveLM/general reading, bad input, config keys."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.data.synthetic import WorldOptions, generate
from drive_mllm_ros.drivelm import MOVING_STATUS_OPTIONS, MOVING_STATUS_QUESTION, Q_BEHAVIOR_OPEN
from drive_mllm_ros.model import DrivingModel
from drive_mllm_ros.preprocess import TilingSpec
from drive_mllm_ros.prompt import PromptBuilder
from drive_mllm_ros.train.arguments import ConfigError, DataArguments, parse_config
from drive_mllm_ros.train.collate import (
    IGNORE_INDEX,
    AnswerOnlyCollator,
    answer_logits,
    encode_conversation,
    pack_encoded,
)
from drive_mllm_ros.train.data import DataError, build_datasets

WIDTH, HEIGHT = 320, 180
SPEC = TilingSpec(tile_size=224, crop_to_patches=False, max_tiles=1)
BUILDER = PromptBuilder(rig=CameraRig(image_size=(WIDTH, HEIGHT)), layout="per_view")
TOKENS_PER_TILE = 64


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(WorldOptions(out, scenes=2, seed=3, duration=1.0, width=WIDTH, height=HEIGHT, val_fraction=0.5))
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def data_args(world: Path, **changes) -> DataArguments:
    return DataArguments(
        drivelm_json=str(world / "drivelm" / "v1_1_train_nus.json"),
        layout="per_view",
        camera_image_size=[WIDTH, HEIGHT],
        max_tiles=1,
        **changes,
    )


def build(world: Path, tokenizer, **changes):
    return build_datasets(data_args(world, **changes), tokenizer, SPEC, BUILDER, TOKENS_PER_TILE)


def copy_world(world: Path, tmp_path: Path) -> Path:
    shutil.copytree(world, tmp_path / "world")
    return tmp_path / "world"


def rewrite_json(path: Path, edit) -> None:
    scenes = json.loads(path.read_text())
    edit(scenes)
    path.write_text(json.dumps(scenes))


def first_frame(scenes: dict) -> dict:
    return next(iter(next(iter(scenes.values()))["key_frames"].values()))


def test_labels_are_exactly_the_answer_tokens_and_end_token(tokenizer, tiny_checkpoint):
    question, answer = "Is <c1,CAM_FRONT,100.0,50.0> moving?", "No, it is parked. <c1,CAM_FRONT,100.0,50.0>"
    messages = BUILDER.messages(question, answer)
    input_ids, labels = encode_conversation(tokenizer, messages, [1] * 6, TOKENS_PER_TILE)
    served = DrivingModel.load(tiny_checkpoint, BUILDER).prompt_ids(question, [1] * 6)
    answer_ids = tokenizer.encode(answer, add_special_tokens=False)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert input_ids[: len(served)] == served  # the prompt is what the node serves
    assert input_ids[len(served) :] == [*answer_ids, end, *tokenizer.encode("\n", add_special_tokens=False)]
    expected = (
        [IGNORE_INDEX] * len(served)
        + answer_ids
        + [end]
        + [IGNORE_INDEX] * (len(input_ids) - len(served) - len(answer_ids) - 1)
    )
    assert labels == expected
    assert input_ids.count(tokenizer.context_image_token_id) == 6 * TOKENS_PER_TILE


def test_collator_masks_padding_and_concatenates_tiles(tokenizer, world):
    train, _, _ = build(world, tokenizer)
    short, long = sorted((train[0], train[1]), key=lambda f: len(f["input_ids"]))
    batch = AnswerOnlyCollator(tokenizer.pad_token_id)([short, long])
    size = len(short["input_ids"])
    assert batch["labels"][0, :size].tolist() == short["labels"]
    assert (batch["labels"][0, size:] == IGNORE_INDEX).all() and (batch["attention_mask"][0, size:] == 0).all()
    assert batch["pixel_values"].shape == (12, 3, 224, 224)


def test_stage_weights_and_open_forms_of_multiple_choice(tokenizer, world):
    train, _, report = build(world, tokenizer)
    behaviour_qa = report.qa["behavior"]
    moving_status = [s for s in train.samples if MOVING_STATUS_QUESTION in s.messages[0]["content"].lower()]
    open_status = [s for s in moving_status if s.sample_id.endswith("_open")]
    assert report.open_choices_added == behaviour_qa + len(open_status) and len(open_status) > 0
    assert report.samples["behavior"] == 2 * behaviour_qa
    assert "Please select" not in open_status[0].messages[0]["content"]
    assert open_status[0].messages[1]["content"] in MOVING_STATUS_OPTIONS  # "Stopped.", not "C."
    train, _, report = build(world, tokenizer, stage_weights={"perception": 2.0, "behavior": 0.0})
    assert report.samples["perception"] == 2 * report.qa["perception"] and "behavior" not in report.samples
    open_sample = next(s for s in build(world, tokenizer)[0].samples if s.sample_id.endswith("_open")
                       and s.stage == "behavior")
    assert Q_BEHAVIOR_OPEN in open_sample.messages[0]["content"]
    assert open_sample.messages[1]["content"].startswith("The ego vehicle is ")  # the option text, not "A."


def test_extra_drivelm_files_mix_in_with_their_own_image_root_and_weight(tokenizer, world, tmp_path):
    """Replay of earlier training data: a second DriveLM file elsewhere, its images under its own root."""
    extra = tmp_path / "elsewhere" / "replay.json"
    extra.parent.mkdir()
    shutil.copy(world / "drivelm" / "v1_1_train_nus.json", extra)
    main = str(world / "drivelm" / "v1_1_train_nus.json")
    entry = {"json": str(extra), "image_root": str(world / "drivelm"), "weight": 2}
    _, _, report = build(world, tokenizer, extra_drivelm_json=[entry])
    assert report.sources[str(extra)] == 2 * report.sources[main] > 0
    assert f"{extra} {report.sources[str(extra)]}" in report.summary()
    _, _, unrooted = build(world, tokenizer, extra_drivelm_json=[str(extra)])  # images looked for next to it
    assert unrooted.missing_image_frames == unrooted.frames // 2 and str(extra) not in unrooted.sources


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x.json", r"extra_drivelm_json: expected a list"),
        ("[{path: x.json}]", r"extra_drivelm_json\[0\]: expected a path or a mapping with 'json'"),
        ("[a.json, {json: b.json, wieght: 2}]", r"did you mean 'data.extra_drivelm_json\[1\].weight'"),
        ("[{json: b.json, weight: 0}]", r"extra_drivelm_json\[0\].weight: expected a repeat weight > 0, got 0"),
    ],
)
def test_bad_extra_drivelm_entries_name_the_entry(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(None, ["model.path=x", "data.drivelm_json=y", "training.output_dir=z",
                            f"data.extra_drivelm_json={value}"])


def test_missing_images_skip_with_count_or_fail(tokenizer, world, tmp_path):
    copy = copy_world(world, tmp_path)
    frame = first_frame(json.loads((copy / "drivelm" / "v1_1_train_nus.json").read_text()))
    (copy / "drivelm" / frame["image_paths"]["CAM_BACK"]).unlink()
    _, _, full = build(world, tokenizer)
    _, _, report = build(copy, tokenizer)
    assert report.missing_image_frames == 1 and report.frames == full.frames
    assert sum(report.samples.values()) < sum(full.samples.values())
    with pytest.raises(DataError, match="CAM_BACK"):
        build(copy, tokenizer, missing_images="fail")


def test_malformed_qa_are_counted(tokenizer, world, tmp_path):
    copy = copy_world(world, tmp_path)

    def break_entries(scenes):
        qa = first_frame(scenes)["QA"]
        qa["perception"].append({"Q": "What?"})  # no answer
        qa["planning"].append("not a dict")
        qa["prediction"][0]["A"] = ""

    rewrite_json(copy / "drivelm" / "v1_1_train_nus.json", break_entries)
    _, _, report = build(copy, tokenizer)
    assert report.malformed_qa == 3
    assert "3 malformed QA" in report.summary()


def test_empty_dataset_after_filtering_is_an_error(tokenizer, world):
    with pytest.raises(DataError, match="no training samples left"):
        build(world, tokenizer, max_length=50)
    weights = dict.fromkeys(("perception", "prediction", "planning", "behavior", "trajectory"), 0.0)
    with pytest.raises(DataError, match="no training samples left"):
        build(world, tokenizer, stage_weights=weights)


def test_overlong_samples_are_dropped_or_truncated_with_counts(tokenizer, world):
    prompt_length = 6 * (TOKENS_PER_TILE + 2) + 60  # images + template + question text, roughly
    train, _, report = build(world, tokenizer, max_length=prompt_length + 40)
    _, _, whole = build(world, tokenizer)
    assert report.dropped_too_long > 0 and report.truncated == 0
    train, _, report = build(world, tokenizer, max_length=prompt_length + 40, overlong="truncate")
    assert report.truncated > 0
    assert all(len(train[i]["input_ids"]) <= prompt_length + 40 for i in range(len(train)))
    assert sum(report.samples.values()) + report.dropped_too_long == sum(whole.samples.values())
    for sample in train.samples:  # the bound that spares most samples the tokenizer is an upper bound
        tiles = train.tiles_per_image(sample)
        assert train.length_bound(sample, tiles) >= len(train.encode(replace(sample, truncate_to=0), tiles)[0])


def test_general_data_is_mixed_at_the_ratio(tokenizer, world, tmp_path):
    image = next((world / "nuscenes" / "samples" / "CAM_FRONT").iterdir())
    entries = [
        {
            "id": i,
            "image": str(image),
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the picture."},
                {"from": "gpt", "value": f"A road {i}."},
            ],
        }
        for i in range(3)
    ]
    entries.append({"id": 9, "image": "missing.jpg", "conversations": entries[0]["conversations"]})
    entries.append({"id": 10, "conversations": [{"from": "human", "value": "no answer"}]})
    general = tmp_path / "general.json"
    general.write_text(json.dumps(entries))
    train, _, report = build(world, tokenizer, general_json=str(general), general_ratio=0.25)
    domain = sum(count for stage, count in report.samples.items() if stage != "general")
    assert report.samples["general"] == round(domain * 0.25)
    assert report.missing_image_samples == 1 and report.malformed_qa == 1
    sample = next(i for i, s in enumerate(train.samples) if s.stage == "general")
    assert train[sample]["pixel_values"].shape[0] == 1  # one 224 tile, no camera layout
    assert train[sample]["input_ids"].count(tokenizer.context_image_token_id) == TOKENS_PER_TILE


def test_a_pack_repeats_no_prefix_token_and_predicts_each_answer_inside_its_segment():
    same = ([1, 2, 3, 4, 5], [IGNORE_INDEX] * 3 + [4, 5])  # the same QA twice (a stage weight of 2)
    packed = pack_encoded([same, same])
    assert packed["input_ids"] == [1, 2, 3, 4, 5, 3, 4, 5]
    assert packed["labels"] == [IGNORE_INDEX] * 3 + [4, 5, IGNORE_INDEX, 4, 5]
    assert packed["segment_ids"] == [0, 0, 1, 1, 1, 2, 2, 2]
    assert packed["position_ids"] == [0, 1, 2, 3, 4, 2, 3, 4]


def test_frame_packs_give_each_answer_the_logits_of_its_own_sample(world, tokenizer, tiny_checkpoint):
    import torch
    from transformers import InternVLForConditionalGeneration

    single, _, _ = build(world, tokenizer)
    packed, _, report = build(world, tokenizer, pack_frame_qa=True)  # one pack per frame
    assert sorted(i for pack in packed.packs for i in pack) == list(range(len(single.samples)))
    assert report.packs == len(packed) < len(single) and "frame packs" in report.summary()
    assert all(len({packed.samples[i].image_paths for i in pack}) == 1 for pack in packed.packs)
    model = InternVLForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    collate = AnswerOnlyCollator(tokenizer.pad_token_id)
    first, second = packed[0], packed[1]
    assert first["input_ids"].count(tokenizer.context_image_token_id) == 6 * TOKENS_PER_TILE  # images once
    with torch.no_grad():
        pack_logits, pack_targets, _ = answer_logits(model, collate([first, second]))  # padded batch of two packs
        alone_logits, alone_targets, _ = answer_logits(
            model, collate([packed.single(i) for pack in packed.packs[:2] for i in pack]))
    assert torch.equal(pack_targets, alone_targets)
    torch.testing.assert_close(pack_logits, alone_logits, atol=1e-4, rtol=1e-4)


def test_question_filter_keeps_only_the_matching_questions(world, tokenizer):
    train, _, _ = build(world, tokenizer, question_filter="^What are objects to the")
    questions = {sample.messages[-2]["content"].split("\n")[-1] for sample in train.samples}
    assert questions and all(question.startswith("What are objects to the") for question in questions)
    with pytest.raises(ConfigError, match="data.question_filter: not a regular expression"):
        parse_config(None, ["model.path=x", "data.drivelm_json=y", "training.output_dir=z", "data.question_filter=(a"])


def test_an_extra_source_can_repeat_only_some_questions(world, tokenizer):
    drivelm = str(world / "drivelm" / "v1_1_train_nus.json")
    where = "^What are objects to the front of"
    plain, _, _ = build(world, tokenizer)
    mixed, _, _ = build(world, tokenizer, extra_drivelm_json=[{"json": drivelm, "weight": 3, "question_filter": where}])
    asks = lambda samples: sum(s.messages[-2]["content"].split("\n")[-1].startswith(where[1:]) for s in samples)  # noqa: E731
    assert asks(plain.samples) > 0 and asks(mixed.samples) == 4 * asks(plain.samples)
    assert len(mixed.samples) - len(plain.samples) == 3 * asks(plain.samples)
    with pytest.raises(ConfigError, match=r"extra_drivelm_json\[0\].question_filter"):
        build(world, tokenizer, extra_drivelm_json=[{"json": drivelm, "question_filter": "(a"}])


def test_config_unknown_key_names_the_nearest(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("model: {path: x}\ndata: {drivelm_json: y}\ntraining: {output_dir: z, learnig_rate: 1.0e-5}\n")
    with pytest.raises(ConfigError, match="did you mean 'training.learning_rate'"):
        parse_config(config)
    with pytest.raises(ConfigError, match="did you mean 'data.stage_weights'"):
        parse_config(None, ["model.path=x", "data.drivelm_json=y", "training.output_dir=z", "data.stage_weight=1"])
    with pytest.raises(ConfigError, match="did you mean 'method'"):
        parse_config(None, ["metod.name=sft"])
    parsed = parse_config(None, ["model.path=x", "data.drivelm_json=y", "training.output_dir=z", "method.top_k=8"])
    assert parsed.method.top_k == 8


def test_exponent_floats_are_numbers_in_files_and_overrides(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("model: {path: x}\ndata: {drivelm_json: y}\ntraining: {output_dir: z, learning_rate: 3e-4}\n")
    assert parse_config(config).training["learning_rate"] == 3e-4
    parsed = parse_config(config, ["training.weight_decay=1E-2", "method.temperature=2", "training.run_name=1e5x"])
    assert parsed.training["weight_decay"] == 0.01 and parsed.method.temperature == 2
    assert parsed.training["run_name"] == "1e5x"  # not a number: stays text


def test_example_configs_parse():
    for path in sorted(Path(__file__).resolve().parents[1].glob("config/train/*.yaml")):
        parse_config(path)
