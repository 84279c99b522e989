"""`drive-mllm bench model`: per-frame latency of the fast path vs plain per-question `generate`, same process.

Fast path: the frame's images and prompt prefix encoded once, the three questions decoded as one batch from the
cached prefix (DrivingModel.generate_ids). Plain: one full `generate` per question, images included, as
transformers alone would do it. Both decode the same forced token counts (min = max new tokens), so random
weights (`--random-init PRESET`: the exact architecture of a real checkpoint) time like trained ones. Also
reports the CPU path around the model (JPEG decode, tiles, answer parsing, output messages) and, on a GPU with
known peak figures, the fraction of the physical bound. Prints figures; never asserts on time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..answers import ScoredAnswer
from ..fast_decode import synchronize
from ..images import camera_set_to_rgb
from ..memory import keep_freed_memory
from ..model import DrivingModel, quantize_int8_weights, resolve_device, resolve_dtype
from ..paths import share_dir
from ..preprocess import TilingSpec
from ..prompt import PromptBuilder, checkpoint_layout
from .preprocess import jpeg_message, synthetic_camera_image

QUESTIONS = (
    "What are the important objects in the current scene? Those objects will be considered for the future "
    "reasoning and driving decision.",
    "What is the moving status of object <c1,CAM_FRONT,800.0,450.0>? Please select the correct answer from the "
    "following options: A. Going ahead. B. Turn left. C. Stopped. D. Back up.",
    "In this scenario, what are safe actions to take for the ego vehicle?",
)
# Device-name fragment -> (dense bf16 TFLOP/s, memory TB/s) from the vendors' datasheets; first match wins.
PEAK_FIGURES: dict[str, tuple[float, float]] = {
    "H200": (989.0, 4.8),
    "H100 PCIe": (756.0, 2.0),
    "H100": (989.0, 3.35),  # SXM
    "A100-SXM4-80GB": (312.0, 2.039),
    "A100": (312.0, 1.555),
    "L40S": (362.0, 0.864),
    "L4": (121.0, 0.3),
    "RTX 4090": (165.0, 1.008),
}


@dataclass
class PathTimes:
    """Per-frame milliseconds of one path, and the peak GPU memory it needed."""

    name: str
    frame_ms: list[float]
    peak_memory_gb: float | None

    @property
    def median(self) -> float:
        return statistics.median(self.frame_ms)

    @property
    def p95(self) -> float:
        return statistics.quantiles(self.frame_ms, n=20)[-1] if len(self.frame_ms) > 1 else self.frame_ms[0]


def random_init_model(preset_name: str, layout: str | None, device: str, dtype: torch.dtype) -> DrivingModel:
    """A preset's exact architecture with random weights, our Qwen tokenizer and the preset's tiling."""
    from transformers import AutoModelForImageTextToText

    from ..presets import build_config, load_preset
    from ..tiny_model import build_tokenizer

    preset = load_preset(preset_name)
    tokenizer = build_tokenizer()
    # The tokenizer's image-token id and vocabulary (a few rows more than InternVL2's) stand in for the checkpoint's.
    sizes = replace(
        preset.sizes,
        image_token_id=tokenizer.context_image_token_id,
        vocab_size=max(preset.sizes.vocab_size, len(tokenizer)),
    )
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(build_config(sizes), dtype=dtype, attn_implementation="sdpa")
    builder = PromptBuilder(layout=layout or preset.layout)
    spec = TilingSpec(
        tile_size=sizes.tile_size, crop_to_patches=builder.layout == "stitched", max_tiles=preset.max_tiles
    )
    return DrivingModel(model.eval(), tokenizer, spec, builder, model_id=f"{preset.id} (random init)")


def plain_generate_ids(model: DrivingModel, frame: Any, prompt: list[int], tokens: int) -> list[int]:
    """One full generate for one question: vision tower and whole prompt again, as transformers alone does it."""
    input_ids = torch.tensor([prompt], device=model.device)
    with torch.inference_mode():
        output = model.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=frame.pixel_values,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            eos_token_id=model.stop_token_ids,
            pad_token_id=model.tokenizer.pad_token_id,
        )
    return output[0, len(prompt) :].tolist()


def measure_paths(
    paths: dict[str, Callable[[Any], object]], frames: list[Any], args: argparse.Namespace, device: str
) -> list[PathTimes]:
    """Per-frame ms of each path over `args.frames` frames after `args.warmup` untimed ones; the paths take turns
    frame by frame, so on a shared machine both see the same load."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    peaks = dict.fromkeys(paths, 0.0)
    for index in range(args.warmup + args.frames):
        for name, run in paths.items():
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            synchronize(device)
            started = time.perf_counter()
            run(frames[index % len(frames)])
            synchronize(device)
            if index >= args.warmup:
                times[name].append((time.perf_counter() - started) * 1e3)
            if device.startswith("cuda"):
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / 1e9)
    return [PathTimes(name, times[name], peaks[name] if device.startswith("cuda") else None) for name in paths]


def parameter_counts(model: Any) -> dict[str, int]:
    parts = model.model
    embeddings = parts.language_model.get_input_embeddings().weight.numel()
    return {
        "vision": sum(p.numel() for p in parts.vision_tower.parameters()),
        "projector": sum(p.numel() for p in parts.multi_modal_projector.parameters()),
        "llm": sum(p.numel() for p in parts.language_model.parameters()) - embeddings,
        "head": model.lm_head.weight.numel(),
    }


def physical_bound_ms(
    model: DrivingModel, frame: Any, prompts: list[list[int]], tokens: int, peak: tuple[float, float]
) -> tuple[float, float, float]:
    """(prefill TFLOP, decode GB per step, bound ms) for the fast path's schedule: one prefill, `tokens` steps.

    FLOPs: 2 per parameter per token plus attention scores and values; bytes: LLM + head weights and the KV cache
    read once per decoding step.
    """
    config = model.model.config
    counts = parameter_counts(model.model)
    vision, text = config.vision_config, config.text_config
    tiles = len(frame.pixel_values)
    patches = (frame.pixel_values.shape[-1] // first(vision.patch_size)) ** 2 + 1  # + the class token
    prefix = len(frame.prefix.ids)
    suffixes = sum(len(p) - prefix for p in prompts)
    vision_flops = tiles * (
        2 * counts["vision"] * patches + 4 * vision.num_hidden_layers * vision.hidden_size * patches**2
    )
    llm_tokens = prefix + suffixes
    llm_flops = (
        2 * counts["projector"] * model.image_seq_length * tiles
        + 2 * counts["llm"] * llm_tokens
        + 2 * text.num_hidden_layers * text.hidden_size * (prefix**2 + 2 * suffixes * prefix)
    )
    itemsize = model.model.dtype.itemsize
    head_dim = text.hidden_size // text.num_attention_heads
    cached_tokens = sum(len(p) for p in prompts) + tokens * len(prompts)  # every row reads its own prefix copy
    kv_bytes = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * itemsize * cached_tokens
    tflop = (vision_flops + llm_flops) / 1e12
    step_gb = ((counts["llm"] + counts["head"]) * itemsize + kv_bytes) / 1e9
    return tflop, step_gb, tflop / peak[0] * 1e3 + tokens * step_gb / peak[1]  # TFLOP/(TFLOP/s), GB/(TB/s) = ms


def first(size: int | list[int]) -> int:
    return size[0] if isinstance(size, list | tuple) else size


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpuinfo = Path("/proc/cpuinfo")
    models = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.is_file()
        else []
    )
    return f"CPU {models[0] if models else platform.machine()} ({os.cpu_count()} cores)"


def peak_figures(name: str) -> tuple[float, float] | None:
    return next((figures for fragment, figures in PEAK_FIGURES.items() if fragment in name), None)


def cpu_path_ms(model: DrivingModel, messages: list[Any], answers: list[str], repeats: int) -> dict[str, float]:
    """Median ms of what the node does around the model: decode, tiles, answer parsing, output messages."""
    from .. import outputs  # ROS message types: imported only here, where they are timed
    from ..scene import SceneAnalyzer, StageQuestions

    class RecordedAnswers:
        """The real preprocessing, with answers already decoded: the analyzer's own cost without the model's."""

        model_id = model.model_id

        def prepare(self, views: list[Any]) -> Any:
            return model.prepare(views)

        def answer_scored(
            self, frame: Any, questions: list[str], max_new_tokens: int | list[int] = 128
        ) -> list[ScoredAnswer]:
            return [ScoredAnswer(text) for text in answers[: len(questions)]]

    names = list(model.builder.rig.names)
    analyzer = SceneAnalyzer(
        RecordedAnswers(), StageQuestions({"perception": list(QUESTIONS)}), tuple(names), model.builder.layout
    )
    samples: dict[str, list[float]] = {"decode": [], "preprocess": [], "parse": [], "publish": []}
    for _ in range(repeats):
        started = time.perf_counter()
        views = camera_set_to_rgb(messages, names, model.view_size)
        decoded = time.perf_counter()
        scene = analyzer.analyze(views, 0, "CAM_FRONT")
        analyzed = time.perf_counter()
        [outputs.stage_text(scene, stage) for stage in ("perception", "prediction", "planning")]
        outputs.scene_json(scene)
        outputs.key_object_markers(scene, {}, model.builder.rig.image_size)
        published = time.perf_counter()
        samples["decode"].append((decoded - started) * 1e3)
        samples["preprocess"].append(scene.latency_ms["preprocess"])
        samples["parse"].append((analyzed - decoded) * 1e3 - scene.latency_ms["preprocess"])
        samples["publish"].append((published - analyzed) * 1e3)
    return {stage: statistics.median(values) for stage, values in samples.items()}


def load_model(args: argparse.Namespace) -> DrivingModel:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.random_init:
        return random_init_model(args.random_init, args.layout, device, dtype)
    path = args.model or str(share_dir() / "models" / "student")
    builder = PromptBuilder(layout=args.layout or checkpoint_layout(path) or "stitched")
    return DrivingModel.load(path, builder, device=device, dtype=args.dtype)


def run_benchmark(model: DrivingModel, args: argparse.Namespace) -> list[str]:
    """Measure both paths (and int8 when asked); returns the report lines."""
    device = model.device
    camera_sets = [[jpeg_message(synthetic_camera_image(seed + 6 * s)) for seed in range(6)] for s in range(2)]
    names = list(model.builder.rig.names)
    views = [camera_set_to_rgb(messages, names, model.view_size) for messages in camera_sets]
    tokens = args.tokens
    budgets = [tokens] * len(QUESTIONS)
    model.warmup([len(QUESTIONS)], tokens)
    stage_samples: dict[str, list[float]] = {"vision": [], "prefill": [], "decode": []}

    def fast(frame_views: list[Any]) -> list[list[int]]:
        frame = model.prepare(frame_views)
        prompts = [model.prompt_ids(q, frame.tiles_per_image) for q in QUESTIONS]
        new_ids = model.generate_ids(frame, prompts, budgets, min_new_tokens=tokens)
        for stage, values in stage_samples.items():
            values.append(model.last_timings[stage])
        return new_ids

    def plain(frame_views: list[Any]) -> list[list[int]]:
        frame = model.prepare(frame_views)
        return [plain_generate_ids(model, frame, model.prompt_ids(q, frame.tiles_per_image), tokens) for q in QUESTIONS]

    paths = {"fast (cached prefix, batched)": fast, "plain generate per question": plain}
    fast_times, plain_times = measure_paths(paths, views, args, device)
    fast_ids = fast(views[0])
    equal = sum(a == b for a, b in zip(fast_ids, plain(views[0]), strict=True))
    frame = model.prepare(views[0])
    prompts = [model.prompt_ids(q, frame.tiles_per_image) for q in QUESTIONS]
    model.generate_ids(frame, prompts, budgets, min_new_tokens=tokens)
    name = device_name(device)
    total_tokens = tokens * len(QUESTIONS)
    lines = [
        f"device: {name}; model {model.model_id}, {model.builder.layout} layout, {model.model.dtype}, "
        f"{len(frame.pixel_values)} tiles, prompt {len(prompts[0])} tokens (prefix {len(frame.prefix.ids)}), "
        f"{len(QUESTIONS)} questions x {tokens} new tokens; {args.frames} frames after {args.warmup} warm-up",
        "",
        "| path | median ms/frame | p95 ms | tokens/s | peak GPU memory |",
        "|---|---|---|---|---|",
    ]
    for times in (fast_times, plain_times):
        memory = f"{times.peak_memory_gb:.2f} GB" if times.peak_memory_gb is not None else "n/a (CPU)"
        lines.append(
            f"| {times.name} | {times.median:.1f} | {times.p95:.1f} | "
            f"{total_tokens / times.median * 1e3:.1f} | {memory} |"
        )
    stages = ", ".join(f"{stage} {statistics.median(values):.1f}" for stage, values in stage_samples.items())
    lines += [
        "",
        f"speed-up (plain / fast, median): {plain_times.median / fast_times.median:.2f}x; fast path stages "
        f"(median ms): {stages}; answers equal to plain generate: {equal}/{len(QUESTIONS)}",
    ]
    peak = peak_figures(name) if device.startswith("cuda") else None
    if peak:
        tflop, step_gb, bound = physical_bound_ms(model, frame, prompts, tokens, peak)
        lines.append(
            f"physical bound: prefill {tflop:.2f} TFLOP at {peak[0]:.0f} TFLOP/s + {tokens} steps x "
            f"{step_gb:.2f} GB at {peak[1]} TB/s = {bound:.1f} ms; fast path at "
            f"{bound / fast_times.median:.0%} of the bound"
        )
    else:
        lines.append(f"physical bound: no peak figures for '{name}' (known: {', '.join(PEAK_FIGURES)}), not computed")
    around = cpu_path_ms(model, camera_sets[0], ["No objects."] * len(QUESTIONS), max(3, min(args.frames, 20)))
    around_ms = sum(around.values())
    detail = ", ".join(f"{stage} {value:.1f}" for stage, value in around.items())
    lines.append(
        f"CPU path around the model: {around_ms:.1f} ms ({detail}) = {around_ms / fast_times.median:.1%} "
        "of the fast path's model time"
    )
    if args.int8:
        lines += int8_lines(model, fast, fast_ids, views, args, fast_times)
    return lines


def int8_lines(
    model: DrivingModel,
    fast: Callable[[Any], list[list[int]]],
    reference: list[list[int]],
    views: list[Any],
    args: argparse.Namespace,
    baseline: PathTimes,
) -> list[str]:
    """Quantize the LLM's weights to int8 in place and measure the fast path again."""
    weights_before = sum(p.numel() * p.element_size() for p in model.model.parameters())
    quantize_int8_weights(model.model)
    model.warmup([len(QUESTIONS)], args.tokens)
    (times,) = measure_paths({"fast, int8 weights": fast}, views, args, model.device)
    new_ids = fast(views[0])
    same = sum(
        a == b for row_a, row_b in zip(new_ids, reference, strict=True) for a, b in zip(row_a, row_b, strict=True)
    )
    memory = f"{times.peak_memory_gb:.2f} GB peak (was {baseline.peak_memory_gb:.2f})" if times.peak_memory_gb else ""
    return [
        f"int8 weight-only (torchao): median {times.median:.1f} ms/frame (was {baseline.median:.1f}), p95 "
        f"{times.p95:.1f}; {memory}; weights before {weights_before / 1e9:.2f} GB; tokens equal to the "
        f"unquantized fast path: {same}/{sum(len(r) for r in reference)}"
    ]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: figures from a shared machine mean little without them."""
    loadavg = Path("/proc/loadavg")
    return " ".join(loadavg.read_text().split()[:3]) if loadavg.is_file() else "unknown"


def write_docs(path: Path, lines: list[str], command: str, load_at_start: str) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = f"load average {load_at_start} at the start, {load_average()} at the end"
    section = [f"\n### bench model, {stamp}", "", f"`{command}` ({load})", "", *lines, ""]
    with path.open("a") as file:
        file.write("\n".join(section))
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drive-mllm bench model", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--random-init",
        metavar="PRESET",
        help="a preset's architecture with random weights "
        "(internvl3-1b-hf, internvl3-2b-hf, mini-internvl2-1b-da-drivelm)",
    )
    source.add_argument("--model", help="checkpoint folder (default: the embedded student in models/student)")
    parser.add_argument("--layout", choices=("stitched", "per_view"), help="default: the preset's / checkpoint's")
    parser.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--frames", type=int, default=50, help="timed frames per path (use fewer on CPU)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames per path first")
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per question, forced (3 questions)")
    parser.add_argument("--int8", action="store_true", help="then quantize the LLM to int8 (torchao) and rerun")
    parser.add_argument("--write-docs", action="store_true", help="append the results to --docs")
    parser.add_argument(
        "--docs", type=Path, default=Path("docs/BENCHMARKS.md"), help="the file --write-docs appends to"
    )
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the node does
    load_at_start = load_average()
    if args.frames < 1 or args.tokens < 1:
        parser.error("--frames and --tokens: expected >= 1")
    model = load_model(args)
    lines = run_benchmark(model, args)
    print("\n".join(lines))
    if args.write_docs:
        command = "drive-mllm bench model " + subprocess.list2cmdline(argv)
        print(f"appended to {write_docs(args.docs, lines, command, load_at_start)}")
    return 0
