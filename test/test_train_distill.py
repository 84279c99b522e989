"""Distillation losses on tiny models: zero at a perfect match, gradients to the student only, tokenizer checks."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.presets import build_config
from drive_mllm_ros.prompt import PromptBuilder
from drive_mllm_ros.tiny_model import TINY_SIZES, write_tiny_model
from drive_mllm_ros.train.arguments import ConfigError, MethodArguments
from drive_mllm_ros.train.collate import AnswerOnlyCollator, encode_conversation, pack_encoded
from drive_mllm_ros.train.distill import (
    PROJECTION_ATTRIBUTE,
    Distiller,
    TokenizerMismatchError,
    common_vocab_size,
    precompute_teacher_topk,
)
from drive_mllm_ros.train.trainer import check_same_view

BUILDER = PromptBuilder(rig=CameraRig(image_size=(320, 180)), layout="per_view")
QA = [
    ("Is <c1,CAM_FRONT,100.0,50.0> moving?", "No, it is parked."),
    ("Predict the behavior of the ego vehicle.", "The ego vehicle is going straight. The ego vehicle is not moving."),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def student(tiny_checkpoint):
    return AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, dtype=torch.float32)


@pytest.fixture(scope="module")
def wide_teacher_path(tmp_path_factory) -> Path:
    """A different tiny model with a wider vision tower (128 vs 64), so the projection has work to do."""
    sizes = replace(TINY_SIZES, vision_hidden_size=128, vision_intermediate_size=256, vision_heads=4)
    return write_tiny_model(tmp_path_factory.mktemp("teacher"), "per_view", 224, seed=1, sizes=sizes)


@pytest.fixture(scope="module")
def wide_teacher(wide_teacher_path):
    return AutoModelForImageTextToText.from_pretrained(wide_teacher_path, dtype=torch.float32)


def samples(tokenizer) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    features = []
    for index, (question, answer) in enumerate(QA):
        input_ids, labels = encode_conversation(tokenizer, BUILDER.messages(question, answer), [1] * 6, 64)
        pixels = torch.randn(6, 3, 224, 224, generator=generator)
        features.append({"input_ids": input_ids, "labels": labels, "pixel_values": pixels, "sample_ids": [f"s{index}"]})
    return features


def batch(tokenizer) -> dict:
    return AnswerOnlyCollator(tokenizer.pad_token_id)(samples(tokenizer))


class FeatureList(list):
    """Encoded samples standing in for a ConversationDataset: indexable, with `samples` carrying the ids."""

    @property
    def samples(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(sample_id=feature["sample_ids"][0]) for feature in self]

    def single(self, index: int) -> dict:
        return self[index]


def method(**changes) -> MethodArguments:
    return MethodArguments(name="distill", teacher_path="teacher", **changes)


def test_logit_distillation_is_zero_for_an_identical_teacher_and_positive_otherwise(student, wide_teacher, tokenizer):
    inputs = batch(tokenizer)
    same = Distiller(
        method(kl_weight=1.0, ce_weight=0.0), copy.deepcopy(student), student.config.text_config.vocab_size
    )
    loss, parts = same(student, inputs, inputs["sample_ids"])
    assert abs(parts["kl"]) < 1e-5 and abs(loss.item()) < 1e-5
    other = Distiller(method(kl_weight=1.0, ce_weight=0.0), wide_teacher, student.config.text_config.vocab_size)
    loss, parts = other(student, inputs, inputs["sample_ids"])
    assert parts["kl"] > 1e-3


def test_the_teacher_reads_a_frame_pack_with_the_students_mask_and_positions(student, tokenizer):
    features = samples(tokenizer)
    pack = {**pack_encoded([(f["input_ids"], f["labels"]) for f in features]),
            "pixel_values": features[0]["pixel_values"], "sample_ids": [f["sample_ids"][0] for f in features]}
    inputs = AnswerOnlyCollator(tokenizer.pad_token_id)([pack])
    same = Distiller(method(kl_weight=1.0, ce_weight=0.0), copy.deepcopy(student), student.config.text_config.vocab_size)
    assert abs(same(student, inputs, inputs["sample_ids"])[1]["kl"]) < 1e-5  # a plain causal teacher would differ


def test_gradients_reach_the_student_only(tiny_checkpoint, wide_teacher, tokenizer):
    student = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    distiller = Distiller(
        method(kl_weight=0.5, ce_weight=0.5, vision_weight=1.0, vision_layers=2),
        wide_teacher,
        student.config.text_config.vocab_size,
    )
    distiller.enable_vision(student)
    inputs = batch(tokenizer)
    loss, parts = distiller(student.train(), inputs, inputs["sample_ids"])
    loss.backward()
    assert parts["vision"] > 0 and parts["kl"] > 0
    assert all(p.grad is None for p in wide_teacher.parameters())
    assert student.lm_head.weight.grad.abs().sum() > 0
    assert student.model.vision_tower.encoder.layer[-1].mlp.fc2.weight.grad.abs().sum() > 0
    projection = getattr(student, PROJECTION_ATTRIBUTE)
    assert projection[0].weight.shape == (64, 128) and projection[0].weight.grad.abs().sum() > 0


def test_cached_top_k_equals_the_live_teacher(student, wide_teacher, tokenizer, tmp_path):
    features = samples(tokenizer)
    collator = AnswerOnlyCollator(tokenizer.pad_token_id)
    dataset = FeatureList(features)
    vocab = student.config.text_config.vocab_size
    assert precompute_teacher_topk(wide_teacher, dataset, collator, tmp_path, 32, vocab) == 2
    assert precompute_teacher_topk(wide_teacher, dataset, collator, tmp_path, 32, vocab) == 0  # already cached
    inputs = collator(features)
    live = Distiller(method(kl_weight=1.0, ce_weight=0.0, top_k=32), wide_teacher, vocab)
    cached = Distiller(method(kl_weight=1.0, ce_weight=0.0, teacher_cache=str(tmp_path)), None, vocab)
    live_kl = live(student, inputs, inputs["sample_ids"])[1]["kl"]
    cached_kl = cached(student, inputs, inputs["sample_ids"])[1]["kl"]
    assert cached_kl == pytest.approx(live_kl, rel=2e-2)  # the cache stores fp16 logits


def test_a_teacher_with_another_tokenizer_is_refused(tiny_checkpoint, tmp_path, tokenizer):
    folder = tmp_path / "teacher"
    folder.mkdir()
    tokenizer.save_pretrained(folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]  # same size, two ids swapped
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerMismatchError, match="tokenizers differ"):
        common_vocab_size(tokenizer, AutoTokenizer.from_pretrained(folder))


def test_a_common_vocabulary_prefix_is_accepted(tokenizer, tiny_checkpoint):
    longer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    longer.add_tokens(["<extra_teacher_token_0>", "<extra_teacher_token_1>"])
    assert common_vocab_size(tokenizer, longer) == len(tokenizer.get_vocab())


def test_a_teacher_with_other_tiles_is_refused():
    student = build_config(replace(TINY_SIZES, tile_size=224))
    with pytest.raises(ConfigError, match="same prompt and tiles"):
        check_same_view(build_config(replace(TINY_SIZES, tile_size=448)), student)
    check_same_view(build_config(replace(TINY_SIZES, tile_size=224, vision_hidden_size=128)), student)
