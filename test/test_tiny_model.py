"""The tiny checkpoint's files and tokenizer, and the model presets that share its config builder."""

import json

import pytest
import torch
from transformers import AutoTokenizer, InternVLForConditionalGeneration

from drive_mllm_ros.presets import ArchitectureSizes, build_config, load_preset, preset_names
from drive_mllm_ros.tiny_model import main as tiny_model_main


def test_checkpoint_files_are_native_and_safe(tiny_checkpoint):
    names = {path.name for path in tiny_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json", "chat_template.jinja"} <= names
    assert not [name for name in names if name.endswith((".bin", ".pt"))]
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert (config["model_type"], config["image_seq_length"], config["vision_config"]["image_size"]) == \
        ("internvl", 64, [224, 224])
    processor = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 224, "width": 224} and processor["crop_to_patches"] is True


def test_tokenizer_has_qwen_vocabulary_and_image_tokens(tiny_checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [151643, 151644, 151645]
    assert (tokenizer.start_image_token_id, tokenizer.end_image_token_id, tokenizer.context_image_token_id) == \
        (151665, 151666, 151667)
    assert tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]  # Qwen2's ids
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_per_view_layout_turns_tiling_off(tmp_path):
    assert tiny_model_main(["--out", str(tmp_path), "--layout", "per_view", "--tile-size", "224"]) == 0
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["crop_to_patches"] is False
    with pytest.raises(SystemExit):
        tiny_model_main(["--out", str(tmp_path), "--tile-size", "300"])


@pytest.mark.parametrize("name", preset_names())
def test_presets_build_real_size_architectures(name):
    preset = load_preset(name)
    assert preset.sizes.image_seq_length == 256
    with torch.device("meta"):  # shapes only, no memory
        model = InternVLForConditionalGeneration(build_config(name))
    vision_params = sum(p.numel() for p in model.model.vision_tower.parameters())
    assert round(vision_params / 1e6) == 304  # InternViT-300M
    assert model.config.text_config.vocab_size == preset.sizes.vocab_size


def test_preset_errors():
    with pytest.raises(ValueError, match="model preset 'nope' not found"):
        load_preset("nope")
    with pytest.raises(ValueError, match=r"architecture: unknown keys \['hidden'\]"):
        ArchitectureSizes.from_dict({"hidden": 3})
    assert load_preset("mini-internvl2-1b-da-drivelm").layout == "stitched"


def test_domain_tokenizer_is_small_with_chatml_and_image_tokens(tmp_path):
    from drive_mllm_ros.model import DrivingModel
    from drive_mllm_ros.prompt import PromptBuilder
    from drive_mllm_ros.tiny_model import DOMAIN_SPECIAL_TOKENS, build_domain_tokenizer, write_tiny_model

    texts = ["There is a red car to the front of the ego vehicle <c1,CAM_FRONT,812.4,466.0>."] * 20
    tokenizer = build_domain_tokenizer(texts, vocab_size=300)
    assert len(tokenizer) <= 301  # the trained vocabulary + the <video> token InternVL tokenizers declare
    assert tokenizer.convert_tokens_to_ids(list(DOMAIN_SPECIAL_TOKENS)) == list(range(len(DOMAIN_SPECIAL_TOKENS)))
    assert tokenizer.decode(tokenizer.encode("Kangaroo <c2,CAM_BACK,1.5,2.0>")) == "Kangaroo <c2,CAM_BACK,1.5,2.0>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    folder = write_tiny_model(tmp_path / "m", layout="per_view", tile_size=224, tokenizer=tokenizer)
    model = DrivingModel.load(folder, PromptBuilder(layout="per_view"))
    assert model.model.config.text_config.vocab_size == len(tokenizer)
    assert model.model.config.image_token_id == tokenizer.context_image_token_id
