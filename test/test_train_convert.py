"""convert-checkpoint on a tiny original-format (InternVLChatModel) checkpoint written here with the documented names."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, InternVLForConditionalGeneration

from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.model import DrivingModel
from drive_mllm_ros.prompt import PromptBuilder
from drive_mllm_ros.train.convert_checkpoint import main as convert_main
from drive_mllm_ros.train.convert_checkpoint import native_key

# native (saved) name -> original InternVL2 name, per vision layer and for the other parts
VISION_LAYER = {
    "attention.projection_layer": "attn.proj",
    "lambda_1": "ls1",
    "lambda_2": "ls2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
OTHERS = {
    "vision_tower.embeddings.cls_token": "vision_model.embeddings.class_embedding",
    "vision_tower.embeddings.position_embeddings": "vision_model.embeddings.position_embedding",
    "vision_tower.embeddings.patch_embeddings.projection": "vision_model.embeddings.patch_embedding",
    "multi_modal_projector.layer_norm": "mlp1.0",
    "multi_modal_projector.linear_1": "mlp1.1",
    "multi_modal_projector.linear_2": "mlp1.3",
}


def original_name(native: str) -> str:
    if native.startswith("language_model."):
        return native
    for new, old in OTHERS.items():
        if native.startswith(new):
            return old + native[len(new) :]
    prefix, rest = native.split(".encoder.layer.")
    index, part = rest.split(".", 1)
    for new, old in VISION_LAYER.items():
        if part.startswith(new):
            return f"vision_model.encoder.layers.{index}.{old}{part[len(new) :]}"
    raise AssertionError(f"unmapped native weight {native}")


def write_original(native_dir: Path, out: Path) -> Path:
    """What an InternVL2 remote-code checkpoint holds: fused vision qkv, original names and config layout."""
    out.mkdir()
    native = load_file(native_dir / "model.safetensors")
    original = {}
    for key, tensor in native.items():
        if ".attention.q_proj." in key:
            parts = [native[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            layer, kind = key.split(".encoder.layer.")[1].split(".attention.q_proj.")
            original[f"vision_model.encoder.layers.{layer}.attn.qkv.{kind}"] = torch.cat(parts)
        elif ".attention.k_proj." not in key and ".attention.v_proj." not in key:
            original[original_name(key)] = tensor
    save_file(original, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((native_dir / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    (out / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["InternVLChatModel"],
                "model_type": "internvl_chat",
                "template": "Hermes-2",
                "auto_map": {"AutoModel": "modeling_internvl_chat.InternVLChatModel"},
                "downsample_ratio": 0.5,
                "force_image_size": 224,
                "max_dynamic_patch": 12,
                "ps_version": "v2",
                "select_layer": -1,
                "llm_config": {
                    "architectures": ["Qwen2ForCausalLM"],
                    "model_type": "qwen2",
                    "hidden_size": text["hidden_size"],
                    "num_hidden_layers": text["num_hidden_layers"],
                    "num_attention_heads": text["num_attention_heads"],
                    "num_key_value_heads": text["num_key_value_heads"],
                    "intermediate_size": text["intermediate_size"],
                    "vocab_size": text["vocab_size"],
                    "rope_theta": 1000000.0,
                    "tie_word_embeddings": False,
                    "max_position_embeddings": 32768,
                    "rms_norm_eps": 1e-06,
                },
                "vision_config": {
                    "architectures": ["InternVisionModel"],
                    "model_type": "intern_vit_6b",
                    "hidden_size": vision["hidden_size"],
                    "num_hidden_layers": vision["num_hidden_layers"],
                    "num_attention_heads": vision["num_attention_heads"],
                    "intermediate_size": vision["intermediate_size"],
                    "image_size": 224,
                    "patch_size": 14,
                    "qkv_bias": True,
                    "qk_normalization": False,
                    "norm_type": "layer_norm",
                    "layer_norm_eps": 1e-06,
                    "use_flash_attn": True,
                },
            }
        )
    )
    AutoTokenizer.from_pretrained(native_dir).save_pretrained(out)
    return out


def test_original_checkpoint_converts_to_the_same_native_model(tiny_checkpoint, tmp_path):
    source = write_original(tiny_checkpoint, tmp_path / "original")
    assert "vision_model.encoder.layers.0.attn.qkv.weight" in load_file(source / "model.safetensors")
    out = tmp_path / "native"
    assert convert_main(["--src", str(source), "--out", str(out), "--layout", "per_view"]) == 0
    converted = InternVLForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    reference = InternVLForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    expected = reference.state_dict()
    assert converted.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in converted.state_dict().items())
    assert "auto_map" not in json.loads((out / "config.json").read_text())
    model = DrivingModel.load(out, PromptBuilder(rig=CameraRig(image_size=(320, 180)), layout="per_view"))
    views = [torch.randint(0, 255, (180, 320, 3), dtype=torch.uint8).numpy() for _ in range(6)]
    assert len(model.answer(model.prepare(views), ["What should the ego vehicle do?"], max_new_tokens=4)) == 1


def test_an_internlm2_llm_or_other_sizes_than_the_preset_are_refused(tiny_checkpoint, tmp_path, capsys):
    source = write_original(tiny_checkpoint, tmp_path / "original")
    arguments = ["--src", str(source), "--out", str(tmp_path / "native"), "--preset", "mini-internvl2-1b-da-drivelm"]
    assert convert_main(arguments) == 2
    assert "does not have the sizes of preset" in capsys.readouterr().err
    config = json.loads((source / "config.json").read_text())
    config["llm_config"]["architectures"] = ["InternLM2ForCausalLM"]
    (source / "config.json").write_text(json.dumps(config))
    assert convert_main(arguments[:4]) == 2
    assert "only Qwen2 LLMs" in capsys.readouterr().err
    assert not (tmp_path / "native").exists()


def test_documented_names_map_as_transformers_does():
    assert (
        native_key("vision_model.encoder.layers.3.attn.qkv.bias") == "vision_tower.encoder.layer.3.attention.qkv.bias"
    )
    assert native_key("vision_model.embeddings.patch_embedding.weight") == (
        "vision_tower.embeddings.patch_embeddings.projection.weight"
    )
    assert native_key("vision_model.encoder.layers.0.ls1") == "vision_tower.encoder.layer.0.lambda_1"
    assert native_key("mlp1.3.weight") == "multi_modal_projector.linear_2.weight"
    assert native_key("language_model.lm_head.weight") == "language_model.lm_head.weight"
