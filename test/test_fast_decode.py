"""The cached-prefix fast path (fast_decode.py) against plain per-question generate, token for token."""

import numpy as np
import pytest
import torch
from test_model import QUESTIONS, plain_generate

from drive_mllm_ros.bench.preprocess import synthetic_camera_image
from drive_mllm_ros.fast_decode import image_prefix_length, right_aligned
from drive_mllm_ros.model import DrivingModel
from drive_mllm_ros.prompt import PromptBuilder
from drive_mllm_ros.scene import SceneAnalyzer, StageQuestions

PER_OBJECT_QUESTIONS = ["Is <c2,CAM_BACK,100.0,200.0> moving?", "What is <c3,CAM_FRONT_LEFT,1500.0,800.0> doing?"]


@pytest.fixture(scope="module")
def views():
    return [synthetic_camera_image(seed, (400, 225)) for seed in range(6)]


@pytest.fixture(scope="module", params=["stitched", "per_view"])
def model(request, tiny_checkpoint) -> DrivingModel:
    return DrivingModel.load(tiny_checkpoint, PromptBuilder(layout=request.param))


def plain_new_ids(model: DrivingModel, views, frame, questions: list[str], budgets: list[int]) -> list[list[int]]:
    return [plain_generate(model, views, frame.pixel_values, q, b) for q, b in zip(questions, budgets, strict=True)]


def fast_new_ids(model: DrivingModel, frame, questions: list[str], budgets: list[int]) -> list[list[int]]:
    return model.generate_ids(frame, [model.prompt_ids(q, frame.tiles_per_image) for q in questions], budgets)


def test_second_call_reuses_the_frame_prefix_and_still_equals_generate(model, views):
    frame = model.prepare(views)
    first = fast_new_ids(model, frame, QUESTIONS, [5, 3, 7])
    prefix = frame.prefix
    assert model.last_timings["vision"] > 0 and model.last_timings["prefill"] > 0
    second = fast_new_ids(model, frame, PER_OBJECT_QUESTIONS, [8, 2])
    assert frame.prefix is prefix and model.last_timings["vision"] == 0.0
    assert first == plain_new_ids(model, views, frame, QUESTIONS, [5, 3, 7])
    assert second == plain_new_ids(model, views, frame, PER_OBJECT_QUESTIONS, [8, 2])


def test_static_cache_decoding_equals_generate_and_warmup_fills_the_pool(model, views):
    static = DrivingModel(model.model, model.tokenizer, model.spec, model.builder, model.model_id, static_cache=True)
    assert static.warmup([1, 2], max_new_tokens=2) > 0
    assert sorted(batch for batch, _ in static.static_caches.caches) == [1, 2]
    frame = static.prepare(views)
    budgets = [4, 1, 6]
    assert fast_new_ids(static, frame, QUESTIONS, budgets) == plain_new_ids(model, views, frame, QUESTIONS, budgets)


def plain_scored(model: DrivingModel, frame, prompt: list[int], budget: int) -> tuple[list[int], list[float]]:
    """Plain generate's tokens and their log-probabilities from its stored scores (compute_transition_scores)."""
    input_ids = torch.tensor([prompt])
    with torch.inference_mode():
        output = model.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=frame.pixel_values,
            max_new_tokens=budget,
            do_sample=False,
            eos_token_id=model.stop_token_ids,
            pad_token_id=model.tokenizer.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        logprobs = model.model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
    return output.sequences[0, len(prompt) :].tolist(), logprobs[0].tolist()


def test_token_probabilities_come_out_of_decoding_and_equal_plain_generate(model, views):
    frame = model.prepare(views)
    budgets = [5, 3, 7]
    prompts = [model.prompt_ids(q, frame.tiles_per_image) for q in QUESTIONS]
    scored = model.generate_scored(frame, prompts, budgets)
    for (ids, logprobs), prompt, budget in zip(scored, prompts, budgets, strict=True):
        plain_ids, plain_logprobs = plain_scored(model, frame, prompt, budget)
        assert ids == plain_ids[: len(ids)] and len(logprobs) == len(ids)
        # batched float32 sums differ from a single row's in the last bits: probabilities agree to 0.1 %
        assert np.exp(logprobs) == pytest.approx(np.exp(plain_logprobs[: len(ids)]), rel=1e-3)
    answers = model.answer_scored(frame, QUESTIONS, budgets)
    assert [a.text for a in answers] == model.answer(frame, QUESTIONS, budgets)
    assert all(0.0 < p <= 1.0 for a in answers for p in a.token_probs)
    assert all(0.0 < a.min_prob <= a.confidence <= 1.0 for a in answers)


def test_forced_token_counts_for_benchmarks(model, views):
    frame = model.prepare(views)
    prompts = [model.prompt_ids(q, frame.tiles_per_image) for q in QUESTIONS]
    new_ids = model.generate_ids(frame, prompts, [4, 4, 4], min_new_tokens=4)
    assert [len(ids) for ids in new_ids] == [4, 4, 4]
    assert not any(token in model.stop_token_ids for ids in new_ids for token in ids)


def test_prompt_split_and_alignment(model):
    tokenizer = model.tokenizer
    prompts = [model.prompt_ids(q, [1] * model.builder.image_count) for q in QUESTIONS]
    length = image_prefix_length(prompts[0], tokenizer.end_image_token_id)
    assert prompts[0][length - 1] == tokenizer.end_image_token_id
    assert all(prompt[:length] == prompts[0][:length] for prompt in prompts)
    rows, masks = right_aligned([7, 8], [[1], [1, 2, 3]], pad_id=0)
    assert rows == [[7, 8, 0, 0, 1], [7, 8, 1, 2, 3]] and masks == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    with pytest.raises(ValueError, match="no image end token"):
        image_prefix_length(tokenizer.encode("no images here"), tokenizer.end_image_token_id)


def test_prompts_not_extending_the_prefix_are_refused(model, views):
    frame = model.prepare(views)
    fast_new_ids(model, frame, QUESTIONS[:1], [1])
    with pytest.raises(ValueError, match="must extend the frame's cached prefix"):
        model.generate_ids(frame, [frame.prefix.ids], [1])


def test_scene_latency_has_model_stages_and_batch_sizes_cover_per_object_questions(model, views):
    questions = StageQuestions(
        {"perception": [QUESTIONS[0]], "prediction": ["Is {object} moving?", "Where is {object} going?"]},
        {"perception": 3},
        max_objects=2,
    )
    analyzer = SceneAnalyzer(model, questions, model.builder.rig.names, model.builder.layout)
    assert analyzer.batch_sizes() == [1, 2, 4] and questions.largest_budget() == 96
    scene = analyzer.analyze(views, 0, "CAM_FRONT")
    assert {"preprocess", "vision", "prefill", "decode", "model"} <= set(scene.latency_ms)
    assert scene.latency_ms["vision"] > 0 and scene.latency_ms["decode"] >= 0


def test_set_decode_returns_a_bad_cameras_error_in_its_place():
    from types import SimpleNamespace

    from drive_mllm_ros.bench.preprocess import jpeg_message
    from drive_mllm_ros.images import ImageConversionError, camera_set_to_rgb

    good = jpeg_message(synthetic_camera_image(0, (320, 180)))
    bad = SimpleNamespace(format="jpeg", data=b"\xff\xd8 not a jpeg")
    views = camera_set_to_rgb([good, bad, good], ["a", "b", "c"], return_errors=True)
    assert (
        views[0].shape == (180, 320, 3) and isinstance(views[1], ImageConversionError) and "b: corrupt" in str(views[1])
    )
    with pytest.raises(ImageConversionError, match="b: corrupt"):
        camera_set_to_rgb([good, bad], ["a", "b"])
