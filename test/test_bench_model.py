"""`drive-mllm bench model` on the tiny checkpoint: both paths run, answers agree, figures reach the docs file."""

import pytest

from drive_mllm_ros.bench.model import PEAK_FIGURES, QUESTIONS, main, parameter_counts, peak_figures, physical_bound_ms
from drive_mllm_ros.bench.preprocess import synthetic_camera_image
from drive_mllm_ros.model import DrivingModel
from drive_mllm_ros.prompt import PromptBuilder


def test_bench_model_on_a_tiny_checkpoint_appends_to_the_docs(tiny_checkpoint, tmp_path, capsys):
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n")
    argv = ["--model", str(tiny_checkpoint), "--layout", "per_view", "--frames", "2", "--warmup", "0", "--tokens", "3"]
    assert main([*argv, "--write-docs", "--docs", str(docs)]) == 0
    out = capsys.readouterr().out
    assert "answers equal to plain generate: 3/3" in out and "3 questions x 3 new tokens" in out
    assert "physical bound: no peak figures for 'CPU" in out and "CPU path around the model" in out
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n") and "`drive-mllm bench model --model" in text
    assert "| fast (cached prefix, batched) |" in text and "| plain generate per question |" in text


def test_physical_bound_and_peak_figures(tiny_checkpoint):
    model = DrivingModel.load(tiny_checkpoint, PromptBuilder(layout="per_view"))
    frame = model.prepare([synthetic_camera_image(seed, (400, 225)) for seed in range(6)])
    prompts = [model.prompt_ids(q, frame.tiles_per_image) for q in QUESTIONS]
    model.generate_ids(frame, prompts, [1, 1, 1])
    tflop, step_gb, bound_ms = physical_bound_ms(model, frame, prompts, 10, PEAK_FIGURES["H100"])
    counts = parameter_counts(model.model)
    assert tflop * 1e12 > 2 * counts["vision"] * 6 * 257  # six 224-px tiles of 16x16 patches + class token
    assert step_gb * 1e9 > (counts["llm"] + counts["head"]) * 4
    assert bound_ms == pytest.approx(tflop / 989 * 1e3 + 10 * step_gb / 3.35)
    assert peak_figures("NVIDIA H100 80GB HBM3") == (989.0, 3.35) and peak_figures("NVIDIA H100 PCIe") == (756.0, 2.0)
    assert peak_figures("NVIDIA H200") == (989.0, 4.8) and peak_figures("AMD EPYC") is None
