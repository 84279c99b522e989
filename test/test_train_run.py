"""End-to-end training on the synthetic world with a tiny student: loss, resume, export, disk full, torchrun."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from drive_mllm_ros.bench.preprocess import synthetic_camera_image
from drive_mllm_ros.cameras import CameraRig
from drive_mllm_ros.data.synthetic import WorldOptions, generate
from drive_mllm_ros.model import DrivingModel
from drive_mllm_ros.preprocess import TilingSpec
from drive_mllm_ros.prompt import (
    PromptBuilder,
    checkpoint_layout,
    checkpoint_multiple_choice,
    write_checkpoint_multiple_choice,
)
from drive_mllm_ros.tiny_model import TINY_SIZES, write_tiny_model
from drive_mllm_ros.train.arguments import MethodArguments, parse_config
from drive_mllm_ros.train.distill import PROJECTION_ATTRIBUTE
from drive_mllm_ros.train.save import export_model
from drive_mllm_ros.train.trainer import DrivingTrainer, last_complete_checkpoint, load_checkpoint, run

WIDTH, HEIGHT = 320, 180
BUILDER = PromptBuilder(rig=CameraRig(image_size=(WIDTH, HEIGHT)), layout="per_view")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(WorldOptions(out, scenes=3, seed=5, duration=1.5, width=WIDTH, height=HEIGHT, val_fraction=0.34))
    return out


def settings(world: Path, checkpoint: Path, output_dir: Path, held_out: bool = True, **training) -> dict:
    return {
        "model": {"path": str(checkpoint), "dtype": "fp32"},
        "data": {
            "drivelm_json": str(world / "drivelm" / "v1_1_train_nus.json"),
            "eval_json": str(world / "drivelm" / "v1_1_val_nus.json") if held_out else "",
            "eval_max_samples": 8,
            "layout": "per_view",
            "camera_image_size": [WIDTH, HEIGHT],
            "max_tiles": 1,
            "max_length": 1024,
        },
        "training": {
            "output_dir": str(output_dir),
            "per_device_train_batch_size": 2,
            "per_device_eval_batch_size": 4,
            "learning_rate": 2e-3,
            "lr_scheduler_type": "constant",
            "logging_steps": 1,
            "save_strategy": "no",
            "use_cpu": True,
            "seed": 0,
            "disable_tqdm": True,
            "report_to": "none",
            **training,
        },
    }


def config_for(world: Path, checkpoint: Path, output_dir: Path, held_out: bool = True, **training):
    overrides = [
        f"{section}.{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
        for section, values in settings(world, checkpoint, output_dir, held_out, **training).items()
        for key, value in values.items()
    ]
    return parse_config(None, overrides)


def logged(output_dir: Path, name: str) -> list[tuple[int, float]]:
    with (output_dir / "metrics.csv").open() as handle:
        return [(int(row["step"]), float(row["value"])) for row in csv.DictReader(handle) if row["name"] == name]


def logged_names(output_dir: Path) -> set[str]:
    with (output_dir / "metrics.csv").open() as handle:
        return {row["name"] for row in csv.DictReader(handle)}


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_sft_lowers_held_out_loss_and_the_export_answers_in_the_node_backend(world, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    target = run(
        config_for(
            world,
            tiny_checkpoint,
            out,
            max_steps=12,
            learning_rate=3e-3,
            eval_strategy="steps",
            eval_steps=1000,
            eval_on_start=True,
        )
    )  # held-out loss before training (step 0) and after it
    held_out = logged(out, "eval_loss")
    assert [step for step, _ in held_out] == [0, 12]
    assert held_out[-1][1] < held_out[0][1] - 1.0, held_out
    assert (out / "loss.png").stat().st_size > 0
    card = (target / "README.md").read_text()
    assert "12 optimizer steps" in card and "eval_loss" in card
    model = DrivingModel.load(target, BUILDER)
    views = [synthetic_camera_image(seed, (WIDTH, HEIGHT)) for seed in range(6)]
    answers = model.answer(model.prepare(views), ["Predict the behavior of the ego vehicle."], max_new_tokens=12)
    assert len(answers) == 1 and answers[0].strip()


def test_location_tokens_and_pointer_loss_train_and_the_export_answers_in_pixels(world, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    config = config_for(world, tiny_checkpoint, out, held_out=False, max_steps=6)
    config.data.location_bins, config.data.pack_frame_qa, config.method.pointer_weight = 32, True, 1.0
    config.data.question_filter = "^(What are the important objects|What object should the ego vehicle notice first)"
    target = run(config)
    pointer = [value for _, value in logged(out, "pointer_loss")]
    assert len(pointer) == 6 and pointer[-1] < pointer[0] - 1.0, pointer  # attention moves onto the objects
    settings = json.loads((target / "drive_mllm.json").read_text())
    assert settings["location_bins"] == 32 and settings["location_extent"] == [WIDTH, HEIGHT]
    assert settings["pointer_decoding"] is True
    model = DrivingModel.load(target, PromptBuilder(layout="per_view"))  # nuScenes-size rig: the grid decides
    assert model.builder.locations.bins == 32 and "<x0>" in model.tokenizer.get_vocab()
    assert model.pointer is not None
    written = model.tokenizer.encode("Firstly notice that <c1,CAM_FRONT,<x16>,<y18>>.", add_special_tokens=False)
    assert model.answer_texts([written]) == [f"Firstly notice that <c1,CAM_FRONT,{16.5 * WIDTH / 32:.1f},"
                                             f"{18.5 * HEIGHT / 32:.1f}>."]  # served in camera pixels
    views = [synthetic_camera_image(seed, (WIDTH, HEIGHT)) for seed in range(6)]
    frame = model.prepare(views)
    answer = model.answer(frame, ["What are the important objects in the current scene?"], 40)[0]
    assert not re.search(r"<[xy]\d+>", answer), answer
    written = model.tokenizer.encode("Notice <c1,CAM_FRONT,<x16>,<y18>> and <c2,CAM_BACK,<x16>,<y18>>.",
                                     add_special_tokens=False)
    pointed = model.tokenizer.decode(model.point_answer(frame, model.prompt_ids("Which?", [1] * 6), written))
    tags = re.findall(r"<c\d,(CAM_\w+),<x(\d+)>,<y(\d+)>>", pointed)  # re-placed by the attention
    assert len(tags) == 2 and tags[0] != tags[1] and {camera for camera, _, _ in tags} <= set(model.builder.rig.names)
    assert model.model.config._attn_implementation == "sdpa"  # eager only for the pointing pass


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_resume_continues_the_step_count_after_a_save_that_ran_out_of_disk(
    world, tiny_checkpoint, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    run(config_for(world, tiny_checkpoint, out, held_out=False, max_steps=2, save_strategy="steps", save_steps=2))
    resume_to_step_4 = config_for(
        world,
        tiny_checkpoint,
        out,
        held_out=False,
        max_steps=4,
        save_strategy="steps",
        save_steps=4,
        resume_from_checkpoint=True,
    )
    with monkeypatch.context() as patch:  # checkpoint-4's weights are written, then its optimizer state fails
        patch.setattr(DrivingTrainer, "_save_optimizer_and_scheduler", disk_full)
        with pytest.raises(OSError, match="No space left"):
            run(resume_to_step_4)
    assert not (out / "checkpoint-4").exists()
    assert last_complete_checkpoint(out).endswith("checkpoint-2")
    run(resume_to_step_4)
    # first run 1-2, failed run 3-4 from checkpoint-2, resumed run 3-4 from checkpoint-2 again
    assert [step for step, _ in logged(out, "loss")] == [1, 2, 3, 4, 3, 4]
    assert last_complete_checkpoint(out).endswith("checkpoint-4")


def test_export_that_runs_out_of_disk_keeps_the_previous_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    model, tokenizer, image_processor = load_checkpoint(str(tiny_checkpoint), "fp32", "sdpa", False)
    spec = TilingSpec.from_image_processor(image_processor, "per_view")
    target = export_model(model, tokenizer, spec, tmp_path / "model", "first export", "per_view")
    assert checkpoint_layout(target) == "per_view"  # the node serves it with the layout it was trained for
    before = digest(target)
    monkeypatch.setattr(type(tokenizer), "save_pretrained", disk_full)  # the weights are written, then this fails
    with pytest.raises(OSError, match="No space left"):
        export_model(model, tokenizer, spec, target, "second export", "per_view")
    assert digest(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind
    DrivingModel.load(target, BUILDER)


def test_lora_is_merged_on_export(world, tiny_checkpoint, tmp_path):
    source = tmp_path / "ranked"  # a student that ranks multiple choice keeps doing so once fine-tuned
    shutil.copytree(tiny_checkpoint, source)
    write_checkpoint_multiple_choice(source, "rank")
    out = tmp_path / "run"
    config = config_for(world, source, out, held_out=False, max_steps=2)
    config.method.tune, config.method.lora_r = "lora", 4
    target = run(config)
    assert checkpoint_multiple_choice(target) == "rank"
    assert checkpoint_multiple_choice(tiny_checkpoint) == "generate"
    model, _, _ = load_checkpoint(str(target), "fp32", "sdpa", False)
    base, _, _ = load_checkpoint(str(tiny_checkpoint), "fp32", "sdpa", False)
    assert not any("lora" in name for name in model.state_dict())
    q_proj = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not model.state_dict()[q_proj].equal(base.state_dict()[q_proj])


def run_process_group(command: list[str], timeout: float, env: dict) -> subprocess.CompletedProcess:
    """Run a launcher in its own process group, so that a hang kills its workers too, not only the launcher."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s: {stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_under_torchrun_train_and_save_one_checkpoint(world, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            settings(
                world,
                tiny_checkpoint,
                out,
                held_out=False,
                max_steps=3,
                per_device_train_batch_size=1,
                save_strategy="steps",
                save_steps=3,
            )
        )
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "drive_mllm_ros.train",
        "--config",
        str(config),
    ]
    result = run_process_group(command, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-3"]
    samples = int(re.search(r"data: (\d+) samples", result.stdout).group(1))
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(3 / math.ceil(samples / 2))  # two processes: 2 samples per step
    assert result.stdout.count("servable checkpoint in") == 2  # both ranks finish; rank 0 alone wrote it
    DrivingModel.load(out / "model", BUILDER)


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory) -> Path:
    sizes = replace(TINY_SIZES, vision_hidden_size=128, vision_intermediate_size=256, vision_heads=4)
    return write_tiny_model(tmp_path_factory.mktemp("teacher"), "per_view", 224, seed=1, sizes=sizes)


def test_distillation_runs_live_and_from_a_top_k_cache(world, tiny_checkpoint, wide_teacher, tmp_path):
    live = config_for(world, tiny_checkpoint, tmp_path / "live", held_out=False, max_steps=1)
    live.data.max_samples = 6
    live.method = MethodArguments(name="distill", teacher_path=str(wide_teacher), vision_weight=0.1)
    target = run(live)
    assert {"ce_loss", "kl_loss", "vision_loss"} <= logged_names(tmp_path / "live")
    assert not any(PROJECTION_ATTRIBUTE in key for key in load_file(target / "model.safetensors"))
    DrivingModel.load(target, BUILDER)

    cache = tmp_path / "cache"
    cached = config_for(world, tiny_checkpoint, tmp_path / "cached", held_out=False, max_steps=1)
    cached.data.max_samples = 6
    cached.method = MethodArguments(name="distill", teacher_path=str(wide_teacher), teacher_cache=str(cache), top_k=16)
    run(cached)
    assert len(list(cache.glob("*.safetensors"))) == 6  # one per sample, written before training
    assert "kl_loss" in logged_names(tmp_path / "cached")
