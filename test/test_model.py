"""DrivingModel on a tiny checkpoint written by `drive-mllm tiny-model`: prompts, answers, load errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GotOcr2ImageProcessorPil, InternVLProcessor

from drive_mllm_ros.bench.preprocess import synthetic_camera_image
from drive_mllm_ros.model import DrivingModel, ModelLoadError, parameter_count, parameter_label, resolve_dtype
from drive_mllm_ros.preprocess import layout_images
from drive_mllm_ros.prompt import IMAGE_PLACEHOLDER, PromptBuilder, checkpoint_layout, write_checkpoint_multiple_choice

QUESTIONS = ["What are the important objects in the current scene?",
             "Is <c1,CAM_FRONT,800.0,450.0> moving?",
             "What should the ego vehicle do?"]


class ImageTextProcessor(InternVLProcessor):
    """InternVLProcessor without its video slot (which needs torchvision): the reference prompt expansion."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length=256, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, image_seq_length=image_seq_length, chat_template=chat_template,
                         **kwargs)


@pytest.fixture(scope="module")
def views() -> list[np.ndarray]:
    return [synthetic_camera_image(seed, (400, 225)) for seed in range(6)]


@pytest.fixture(scope="module", params=["stitched", "per_view"])
def model(request, tiny_checkpoint) -> DrivingModel:
    return DrivingModel.load(tiny_checkpoint, PromptBuilder(layout=request.param))


def plain_generate(model: DrivingModel, views: list[np.ndarray], pixel_values: torch.Tensor, question: str,
                   max_new_tokens: int) -> list[int]:
    """What transformers alone does: its processor expands the prompt, generate runs the vision tower itself.

    The pixels are ours: the processor's differ slightly (PIL vs OpenCV resize), enough to change a random
    model's greedy tokens; their agreement is tested in test_preprocess.py.
    """
    processor = ImageTextProcessor(GotOcr2ImageProcessorPil.from_pretrained(model_path(model)), model.tokenizer,
                                   image_seq_length=model.image_seq_length)
    text = model.builder.render(model.tokenizer, question).replace(IMAGE_PLACEHOLDER, processor.image_token)
    inputs = processor(images=layout_images(views, model.builder), text=[text], return_tensors="pt",
                       **model.spec.processor_kwargs())
    output = model.model.generate(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                                  pixel_values=pixel_values, max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=model.stop_token_ids, pad_token_id=model.tokenizer.pad_token_id)
    return output[0, inputs.input_ids.shape[1]:].tolist()


def model_path(model: DrivingModel) -> str:
    return model.model.config.name_or_path


def test_answers_equal_plain_generate(model, views):
    frame = model.prepare(views)
    expected_tiles = [13] if model.builder.layout == "stitched" else [1] * 6
    assert frame.tiles_per_image == expected_tiles
    budgets = [6, 9, 4]
    answers = model.answer(frame, QUESTIONS, max_new_tokens=budgets)
    for question, budget, answer in zip(QUESTIONS, budgets, answers, strict=True):
        new_ids = plain_generate(model, views, frame.pixel_values, question, budget)
        assert 0 < len(new_ids) <= budget
        text = model.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
        assert answer == model.builder.from_model_text(text)
    assert len(set(answers)) == len(answers), "the tiny model's answers depend on the question"


def test_prompt_expansion_equals_processor(model, views):
    frame = model.prepare(views)
    processor = ImageTextProcessor(GotOcr2ImageProcessorPil.from_pretrained(model_path(model)), model.tokenizer,
                                   image_seq_length=model.image_seq_length)
    text = model.builder.render(model.tokenizer, QUESTIONS[1]).replace(IMAGE_PLACEHOLDER, processor.image_token)
    inputs = processor(images=layout_images(views, model.builder), text=[text], return_tensors="pt",
                       **model.spec.processor_kwargs())
    ids = model.prompt_ids(QUESTIONS[1], frame.tiles_per_image)
    assert ids == inputs.input_ids[0].tolist()
    assert ids.count(model.tokenizer.context_image_token_id) == 64 * sum(frame.tiles_per_image)
    assert (frame.pixel_values - inputs.pixel_values).abs().mean() < 0.05


def test_stitched_questions_are_converted_to_mosaic_coordinates(tiny_checkpoint):
    model = DrivingModel.load(tiny_checkpoint, PromptBuilder())
    text = model.tokenizer.decode(model.prompt_ids(QUESTIONS[1], [13]))
    assert "<c1,CAM_FRONT,500.0,250.0>" in text and text.endswith("<|im_start|>assistant\n")
    assert (model.device, model.dtype, model.model_id) == ("cpu", torch.float32, Path(tiny_checkpoint).name)
    assert model.view_size == (896, 448)


def test_answer_checks_budget_count(model, views):
    with pytest.raises(ValueError, match=r"max_new_tokens: expected 3 values \(one per question\), got 2"):
        model.answer(model.prepare(views), QUESTIONS, max_new_tokens=[4, 4])


def variant(tmp_path: Path, checkpoint: Path, config_changes: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the tiny checkpoint with config.json edited and some files left out (weights linked, not copied)."""
    out = tmp_path / "variant"
    out.mkdir()
    for file in checkpoint.iterdir():
        if file.name not in drop:
            (out / file.name).symlink_to(file)
    if config_changes is not None:
        config = json.loads((checkpoint / "config.json").read_text())
        for key, value in config_changes.items():
            section, _, name = key.rpartition(".")
            (config[section] if section else config)[name] = value
        (out / "config.json").unlink()
        (out / "config.json").write_text(json.dumps(config))
    return out


def test_missing_folder_says_how_to_get_a_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match=r"'.*nowhere' does not exist; .*drive-mllm tiny-model --out DIR"):
        DrivingModel.load(tmp_path / "nowhere", PromptBuilder())


def test_pickle_only_weights_are_refused(tmp_path, tiny_checkpoint):
    folder = variant(tmp_path, tiny_checkpoint, drop=("model.safetensors",))
    torch.save({"weight": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pytorch_model.bin' holds pickle weights.*convert .* to safetensors"):
        DrivingModel.load(folder, PromptBuilder())


def test_folder_without_config_is_refused(tmp_path, tiny_checkpoint):
    folder = variant(tmp_path, tiny_checkpoint, drop=("config.json",))
    with pytest.raises(ModelLoadError, match=r"not a transformers checkpoint \(no config.json\)"):
        DrivingModel.load(folder, PromptBuilder())


def test_non_internvl_config_is_refused(tmp_path, tiny_checkpoint):
    folder = variant(tmp_path, tiny_checkpoint, drop=("config.json",))
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64}))
    with pytest.raises(ModelLoadError, match="is a 'qwen2' config, expected an InternVL one"):
        DrivingModel.load(folder, PromptBuilder())


def test_image_token_count_mismatch_is_explained(tmp_path, tiny_checkpoint):
    folder = variant(tmp_path, tiny_checkpoint, {"image_seq_length": 256})
    with pytest.raises(ModelLoadError, match="image_seq_length is 256 but a 224-px tile .* gives 64 image tokens"):
        DrivingModel.load(folder, PromptBuilder())


def test_tile_size_mismatch_is_explained(tmp_path, tiny_checkpoint):
    folder = variant(tmp_path, tiny_checkpoint, {"vision_config.image_size": [448, 448]})
    with pytest.raises(ModelLoadError, match="vision tower takes 448-px tiles but preprocessor_config.json "
                                             "resizes to 224-px tiles"):
        DrivingModel.load(folder, PromptBuilder())


def test_too_many_images_for_the_context_is_explained(tmp_path, tiny_checkpoint):
    folder = variant(tmp_path, tiny_checkpoint, {"text_config.max_position_embeddings": 300})
    with pytest.raises(ModelLoadError, match=r"per_view layout shows 6 image\(s\) = 384 image tokens, more than "
                                             "the model's context of 300"):
        DrivingModel.load(folder, PromptBuilder(layout="per_view"))


REMOTE_CONFIG = """from transformers import InternVLConfig


class RemoteInternVLConfig(InternVLConfig):
    model_type = "remote_internvl"
"""
REMOTE_MODEL = """from transformers import InternVLForConditionalGeneration

from .configuration_remote import RemoteInternVLConfig


class RemoteInternVLModel(InternVLForConditionalGeneration):
    config_class = RemoteInternVLConfig
"""


def test_remote_code_only_when_allowed(tmp_path, tiny_checkpoint, views):
    folder = variant(tmp_path, tiny_checkpoint, {
        "model_type": "remote_internvl",
        "auto_map": {"AutoConfig": "configuration_remote.RemoteInternVLConfig",
                     "AutoModelForImageTextToText": "modeling_remote.RemoteInternVLModel"},
    })
    (folder / "configuration_remote.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_remote.py").write_text(REMOTE_MODEL)
    with pytest.raises(ModelLoadError, match=r"asks for remote code .*trust_remote_code: true only if"):
        DrivingModel.load(folder, PromptBuilder())
    model = DrivingModel.load(folder, PromptBuilder(layout="per_view"), trust_remote_code=True)
    assert type(model.model).__name__ == "RemoteInternVLModel"
    assert len(model.answer(model.prepare(views), QUESTIONS[:1], max_new_tokens=2)) == 1


def test_dtype_names():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype: expected 'auto' or one of"):
        resolve_dtype("int3", "cpu")


CHOICE_QUESTION = ("What is the moving status of object <c1,CAM_FRONT,800.0,450.0>? Please select the correct answer "
                   "from the following options: A. Going ahead. B. Turn left. C. Turn right. D. Stopped.")
CHOICE_STEM = "What is the moving status of object <c1,CAM_FRONT,800.0,450.0>?"
OPTIONS = ["Going ahead.", "Turn left.", "Turn right.", "Stopped."]


def test_batched_answer_losses_equal_one_answer_at_a_time(views, tiny_per_view_checkpoint):
    model = DrivingModel.load(tiny_per_view_checkpoint, PromptBuilder(layout="per_view"))
    frame = model.prepare(views)
    batched = model.answer_losses(frame, CHOICE_STEM, OPTIONS)  # options of different token lengths: padded rows
    alone = [model.answer_losses(frame, CHOICE_STEM, [option])[0] for option in OPTIONS]
    assert batched == pytest.approx(alone, rel=1e-4)
    assert len(set(round(loss, 4) for loss in batched)) == len(OPTIONS)


def test_rank_answers_multiple_choice_with_the_likeliest_option(views, tiny_per_view_checkpoint, tmp_path):
    checkpoint = tmp_path / "ranked"
    shutil.copytree(tiny_per_view_checkpoint, checkpoint)
    write_checkpoint_multiple_choice(checkpoint, "rank")
    model = DrivingModel.load(checkpoint, PromptBuilder(layout="per_view"))
    assert model.multiple_choice == "rank" and checkpoint_layout(checkpoint) == "per_view"
    frame = model.prepare(views)
    losses = model.answer_losses(frame, CHOICE_STEM, OPTIONS)
    best = "ABCD"[losses.index(min(losses))]
    answers = model.answer(frame, [QUESTIONS[0], CHOICE_QUESTION], max_new_tokens=[5, 5])
    scored = model.answer_scored(frame, [QUESTIONS[0], CHOICE_QUESTION], max_new_tokens=[5, 5])
    assert answers[1] == scored[1].text == f"{best}."
    shares = torch.softmax(-torch.tensor(losses), 0)
    assert scored[1].confidence == pytest.approx(float(shares.max()), rel=1e-4)
    generating = DrivingModel.load(tiny_per_view_checkpoint, PromptBuilder(layout="per_view"))
    assert generating.multiple_choice == "generate"
    assert answers[0] == scored[0].text == generating.answer(generating.prepare(views), [QUESTIONS[0]], 5)[0]


def test_unknown_multiple_choice_mode_is_refused(tmp_path, tiny_per_view_checkpoint):
    with pytest.raises(ValueError, match="multiple_choice: expected one of"):
        write_checkpoint_multiple_choice(tmp_path, "vote")
    checkpoint = tmp_path / "odd"
    shutil.copytree(tiny_per_view_checkpoint, checkpoint)
    (checkpoint / "drive_mllm.json").write_text(json.dumps({"layout": "per_view", "multiple_choice": "vote"}))
    with pytest.raises(ValueError, match="'multiple_choice' must be one of"):
        DrivingModel.load(checkpoint, PromptBuilder(layout="per_view"))


def test_location_tokens_the_tokenizer_lacks_or_a_stitched_layout_are_refused(tmp_path, tiny_per_view_checkpoint):
    checkpoint = tmp_path / "located"
    shutil.copytree(tiny_per_view_checkpoint, checkpoint)
    (checkpoint / "drive_mllm.json").write_text(json.dumps({"layout": "per_view", "location_bins": 32,
                                                            "location_extent": [224, 126]}))
    with pytest.raises(ModelLoadError, match="tokenizer lacks <x0>"):
        DrivingModel.load(checkpoint, PromptBuilder(layout="per_view"))
    (checkpoint / "drive_mllm.json").write_text(json.dumps({"layout": "per_view", "location_bins": 32}))
    with pytest.raises(ModelLoadError, match="location_extent"):
        DrivingModel.load(checkpoint, PromptBuilder(layout="per_view"))


def test_pointer_decoding_without_location_tokens_or_not_a_boolean_is_refused(tmp_path, tiny_per_view_checkpoint):
    checkpoint = tmp_path / "pointed"
    shutil.copytree(tiny_per_view_checkpoint, checkpoint)
    (checkpoint / "drive_mllm.json").write_text(json.dumps({"layout": "per_view", "pointer_decoding": True}))
    with pytest.raises(ModelLoadError, match="pointer_decoding: needs location tokens"):
        DrivingModel.load(checkpoint, PromptBuilder(layout="per_view"))
    (checkpoint / "drive_mllm.json").write_text(json.dumps({"layout": "per_view", "pointer_decoding": "yes"}))
    with pytest.raises(ValueError, match="'pointer_decoding' must be true or false"):
        DrivingModel.load(checkpoint, PromptBuilder(layout="per_view"))


def test_parameter_count_reads_every_shard_without_loading(tiny_per_view_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import InternVLForConditionalGeneration

    loaded = sum(p.numel() for p in InternVLForConditionalGeneration.from_pretrained(tiny_per_view_checkpoint).parameters())
    weights = load_file(str(tiny_per_view_checkpoint / "model.safetensors"))
    names = sorted(weights)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for index, part in enumerate((names[::2], names[1::2])):
        save_file({name: weights[name] for name in part}, str(sharded / f"model-0000{index + 1}-of-00002.safetensors"))
    assert parameter_count(sharded) == parameter_count(tiny_per_view_checkpoint) == loaded
    assert parameter_count(tmp_path / "missing") == 0


@pytest.mark.parametrize(("count", "label"), [(26_000_000_000, "26B"), (1_880_160, "1.88M"), (429_232, "429K"), (12, "12")])
def test_parameter_label_reads_like_the_papers_tables(count, label):
    assert parameter_label(count) == label
