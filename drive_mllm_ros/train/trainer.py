"""`drive-mllm train`: the Hugging Face Trainer on our data, with distillation, metrics files and the export.

The Trainer brings DDP/FSDP/DeepSpeed (torchrun, accelerate launch), mixed precision, gradient checkpointing,
checkpoints with optimizer state, resume and the tqdm progress bar; this module adds the loss of the
distillation method, CSV metrics, a loss plot and the servable export.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from transformers import InternVLForConditionalGeneration, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..cameras import CameraRig
from ..locations import LocationGrid, location_tokens
from ..model import check_folder, check_tokenizer, load_internvl_config, resolve_dtype
from ..pointing import ImageTokenGrid
from ..preprocess import TilingSpec
from ..presets import build_config, load_preset
from ..prompt import PromptBuilder, checkpoint_locations, checkpoint_multiple_choice, checkpoint_pointer_decoding
from ..tiny_model import build_tokenizer
from .arguments import DISTILL, OBJECTS, ConfigError, TrainConfig
from .collate import AnswerOnlyCollator, answer_cross_entropy, answer_forward, answer_logits
from .data import build_datasets
from .distill import Distiller, common_vocab_size, precompute_teacher_topk, unwrap
from .object_maps import (
    attach_head,
    build_object_maps,
    check_single_tile,
    collate_object_maps,
    held_out_scores,
    object_map_loss,
)
from .pointers import PointerTargets, pointer_loss
from .save import export_model, model_card

EXPORT_FOLDER = "model"  # <output_dir>/model: the servable checkpoint


def load_checkpoint(
    path: str, dtype: str, attn_implementation: str, trust_remote_code: bool, device: str | None = None
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) of a native-layout folder, with the node's load checks."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer, GotOcr2ImageProcessorPil

    folder = Path(path).expanduser()
    check_folder(folder, trust_remote_code)
    config = load_internvl_config(folder, trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    check_tokenizer(tokenizer, config, folder)
    model = AutoModelForImageTextToText.from_pretrained(
        folder,
        config=config,
        dtype=resolve_dtype(dtype, device or "cpu"),
        use_safetensors=True,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    return (model.to(device) if device else model), tokenizer, GotOcr2ImageProcessorPil.from_pretrained(folder)


def load_student(config: TrainConfig) -> tuple[Any, Any, TilingSpec]:
    """The student and its tokenizer and tiling: a checkpoint folder, or random init of a preset's sizes."""
    data = config.data
    attention = "eager" if config.method.pointer_weight else config.model.attn_implementation  # sdpa returns no weights
    if config.model.path:
        model, tokenizer, image_processor = load_checkpoint(
            config.model.path, config.model.dtype, attention, config.model.trust_remote_code
        )
        return model, tokenizer, TilingSpec.from_image_processor(image_processor, data.layout, data.max_tiles)
    sizes = load_preset(config.model.random_init).sizes
    model = InternVLForConditionalGeneration(build_config(sizes)).to(resolve_dtype(config.model.dtype, "cpu"))
    spec = TilingSpec(tile_size=sizes.tile_size, crop_to_patches=data.layout == "stitched", max_tiles=data.max_tiles)
    return model, build_tokenizer(), spec


def location_grid(config: TrainConfig, model: Any, tokenizer: Any) -> LocationGrid | None:
    """The run's location tokens (bins: the config's, else the checkpoint's; over the data's camera pixels), their
    tokens added where missing."""
    saved_grid = checkpoint_locations(config.model.path) if config.model.path else None
    saved = saved_grid.bins if saved_grid else 0
    bins = config.data.location_bins or saved
    if saved and bins != saved:
        raise ConfigError(f"data.location_bins: {config.model.path} writes positions with {saved} bins per axis, "
                          f"got {bins}; leave it 0 to keep the checkpoint's")
    missing = [token for token in location_tokens(bins) if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)
        model.resize_token_embeddings(len(tokenizer))
    if bins and config.method.pointer_weight and config.data.max_tiles != 1:
        raise ConfigError(f"method.pointer_weight: needs one tile per view (data.max_tiles 1), got {config.data.max_tiles}")
    return LocationGrid(bins, *map(float, config.data.camera_image_size)) if bins else None


def pointer_targets(model: Any, tokenizer: Any, spec: TilingSpec, builder: PromptBuilder) -> PointerTargets:
    return PointerTargets(builder, tokenizer,
                          ImageTokenGrid.of_model(unwrap(model), spec.tile_size, builder.locations, builder.rig.names))


def apply_tuning(model: Any, config: TrainConfig) -> Any:
    """Full fine-tune, frozen vision encoder, or LoRA adapters on the language model (merged on export)."""
    method = config.method
    if method.tune == "frozen_vision":
        model.model.vision_tower.requires_grad_(False)
    if method.tune != "lora":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=method.lora_r,
        lora_alpha=method.lora_alpha,
        lora_dropout=method.lora_dropout,
        target_modules=method.lora_target_modules,
    )
    return get_peft_model(model, lora)


def training_arguments(config: TrainConfig) -> TrainingArguments:
    """TrainingArguments from the `training` section; our collator needs every column, TensorBoard when present."""
    options = {
        "report_to": ["tensorboard"] if tensorboard_available() else "none",
        "ddp_find_unused_parameters": False,  # every trainable parameter takes part in each step
        **config.training,
    }
    # YAML 1.1 reads an unquoted `no` as False: `save_strategy: no` means the strategy "no"
    options.update({k: "no" for k, v in options.items() if k.endswith("_strategy") and v is False})
    options.update(remove_unused_columns=False, label_names=["labels"], prediction_loss_only=True)
    return TrainingArguments(**options)


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class CsvMetricsCallback(TrainerCallback):
    """Every logged value as a row `step,epoch,name,value` in metrics.csv (main process only)."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "epoch", "name", "value"])
            for name, value in logs.items():
                if isinstance(value, int | float):
                    writer.writerow([state.global_step, state.epoch, name, value])


class LossPlotCallback(TrainerCallback):
    """loss.png at the end of training: training loss (and its parts) and held-out loss against steps."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(state.log_history, self.path)


def plot_losses(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # curves only: `train_loss` is the run's one summary value
    names = sorted({k for entry in log_history for k in entry if k.endswith("loss") and k != "train_loss"})
    figure, axes = plt.subplots(figsize=(7, 4))
    for name in names:
        points = [(entry["step"], entry[name]) for entry in log_history if name in entry]
        axes.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class DrivingTrainer(Trainer):
    """Trainer with the distillation or object-map loss (when set), its parts in the logs, and checkpoints never left
    half-written."""

    loss_is_scaled_for_ga = False  # our losses are batch means; the Trainer divides by accumulation steps

    def __init__(self, *args, distiller: Distiller | None = None, object_maps: bool = False,
                 pointer_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.distiller = distiller
        self.object_maps = object_maps
        self.pointer_weight = pointer_weight
        self.loss_parts: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.object_maps:
            loss, parts = object_map_loss(model, inputs)
            for name, value in parts.items():
                self.loss_parts.setdefault(f"{name}_loss" if name != "detected" else name, []).append(value)
            return (loss, {}) if return_outputs else loss
        sample_ids = inputs.pop("sample_ids", None)
        pointers = inputs.pop("pointer_targets", None)
        if self.pointer_weight and model.training and pointers is not None and len(pointers):
            output, targets, _ = answer_forward(model, inputs, output_attentions=True)
            answer = answer_cross_entropy(output.logits.reshape(-1, output.logits.shape[-1]), targets)
            pointer = pointer_loss(output.attentions[-1], pointers.to(answer.device))
            self.loss_parts.setdefault("answer_loss", []).append(answer.item())
            self.loss_parts.setdefault("pointer_loss", []).append(pointer.item())
            loss = answer + self.pointer_weight * pointer
            return (loss, {}) if return_outputs else loss
        if self.distiller is None or not model.training:  # held-out loss is the plain answer cross-entropy
            logits, targets, _ = answer_logits(model, inputs)
            loss = answer_cross_entropy(logits, targets)
            return (loss, {}) if return_outputs else loss
        loss, parts = self.distiller(model, inputs, sample_ids)
        for name, value in parts.items():
            self.loss_parts.setdefault(f"{name}_loss", []).append(value)
        return (loss, {}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update({name: sum(values) / len(values) for name, values in self.loss_parts.items() if values})
            self.loss_parts = {}
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        try:
            super()._save_checkpoint(model, trial)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)  # resume must never pick a half-written checkpoint
            raise


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint-N that holds its trainer state (written last), so an interrupted save is skipped."""
    complete = [
        p
        for p in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if p.name.split("-")[-1].isdigit() and (p / TRAINER_STATE_NAME).is_file()
    ]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def resume_checkpoint(args: TrainingArguments) -> str | None:
    if args.resume_from_checkpoint in (None, False, "false", "False"):
        return None
    if args.resume_from_checkpoint not in (True, "true", "True", "last"):
        return args.resume_from_checkpoint
    return last_complete_checkpoint(Path(args.output_dir))


def check_same_view(teacher_config: Any, student_config: Any) -> None:
    """The teacher reads the student's input ids and tiles, so tile size and image tokens per tile must agree."""
    teacher_view = (teacher_config.vision_config.image_size, teacher_config.image_seq_length)
    student_view = (student_config.vision_config.image_size, student_config.image_seq_length)
    if teacher_view != student_view:
        raise ConfigError(
            f"method.teacher_path: the teacher takes tiles of {teacher_view[0]} px as {teacher_view[1]} tokens, the "
            f"student {student_view[0]} px as {student_view[1]} tokens; both must see the same prompt and tiles"
        )


def build_distiller(
    config: TrainConfig,
    student: Any,
    tokenizer: Any,
    train_dataset: Any,
    collator: AnswerOnlyCollator,
    args: TrainingArguments,
) -> Distiller:
    """The frozen teacher (live, on its own device if asked) or its top-k logits cached to disk first."""
    method = config.method
    teacher = None
    vocab_size = student.config.text_config.vocab_size
    if method.teacher_path:
        device = method.teacher_device or str(args.device)
        teacher, teacher_tokenizer, _ = load_checkpoint(
            method.teacher_path,
            method.teacher_dtype,
            config.model.attn_implementation,
            config.model.trust_remote_code,
            device,
        )
        vocab_size = min(
            common_vocab_size(tokenizer, teacher_tokenizer), vocab_size, teacher.config.text_config.vocab_size
        )
        check_same_view(teacher.config, student.config)
        if method.teacher_cache:
            with args.main_process_first(desc="teacher top-k cache"):
                if args.process_index == 0:
                    precompute_teacher_topk(
                        teacher, train_dataset, collator, Path(method.teacher_cache), method.top_k or 64, vocab_size
                    )
            if not method.vision_weight:
                teacher = None  # the cache replaces it; free its memory
    return Distiller(method, teacher, vocab_size)


def final_evaluation(trainer: Trainer) -> dict[str, float]:
    """Held-out metrics at the last step: those the Trainer logged there already, else a new evaluation."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if evaluations and evaluations[-1]["step"] == trainer.state.global_step:
        return {name: value for name, value in evaluations[-1].items() if name.startswith("eval_")}
    return trainer.evaluate()


def metric_callbacks(output_dir: Path) -> list[TrainerCallback]:
    return [CsvMetricsCallback(output_dir / "metrics.csv"), LossPlotCallback(output_dir / "loss.png")]


def run_object_maps(config: TrainConfig, args: TrainingArguments, model: Any, tokenizer: Any, spec: TilingSpec,
                    builder: PromptBuilder, callbacks: list[TrainerCallback]) -> Path:
    """Vision pretraining (train/object_maps.py): the language model is frozen and not run; the head is not exported."""
    check_single_tile(spec)
    with args.main_process_first(desc="dataset"):
        train_dataset, held_out, summary = build_object_maps(config.data, spec, builder, model)
    if args.process_index == 0:
        print(f"data: {summary}", flush=True)
    model.model.language_model.requires_grad_(False)
    model.lm_head.requires_grad_(False)
    attach_head(model, len(train_dataset.class_ids))
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = DrivingTrainer(model=model, args=args, train_dataset=train_dataset, data_collator=collate_object_maps,
                             processing_class=tokenizer, object_maps=True,
                             callbacks=[*metric_callbacks(output_dir), *callbacks])
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(args))
    metrics = {"train_loss": result.training_loss}
    if held_out is not None and len(held_out):
        metrics.update(held_out_scores(trainer.model, held_out, args.per_device_eval_batch_size))
    trainer.save_metrics("all", metrics)  # <output_dir>/all_results.json, for a pipeline that checks the run
    target = output_dir / EXPORT_FOLDER
    if trainer.is_world_process_zero():
        export_model(trainer.model, tokenizer, spec, target, model_card(config, summary, trainer.state.global_step,
                                                                        metrics), config.data.layout,
                     checkpoint_multiple_choice(config.model.path), builder.locations)
    trainer.accelerator.wait_for_everyone()
    return target


def run(config: TrainConfig, callbacks: list[TrainerCallback] = ()) -> Path:
    """Train as configured and export the servable checkpoint to <output_dir>/model; returns that folder."""
    args = training_arguments(config)
    output_dir = Path(args.output_dir)
    model, tokenizer, spec = load_student(config)
    rig = CameraRig(image_size=tuple(config.data.camera_image_size))
    builder = PromptBuilder(rig=rig, layout=config.data.layout, locations=location_grid(config, model, tokenizer))
    if config.method.name == OBJECTS:
        return run_object_maps(config, args, model, tokenizer, spec, builder, callbacks)
    with args.main_process_first(desc="dataset"):
        train_dataset, eval_dataset, report = build_datasets(
            config.data, tokenizer, spec, builder, model.config.image_seq_length
        )
    if args.process_index == 0:
        print(f"data: {report.summary()}", flush=True)
    if config.method.pointer_weight:
        train_dataset.pointers = pointer_targets(model, tokenizer, spec, builder)
    collator = AnswerOnlyCollator(tokenizer.pad_token_id)
    distiller = None
    if config.method.name == DISTILL:
        distiller = build_distiller(config, model, tokenizer, train_dataset, collator, args)
    model = apply_tuning(model, config)
    if distiller is not None and config.method.vision_weight:
        distiller.enable_vision(model)  # after LoRA wrapping, which would freeze the new projection
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = DrivingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        distiller=distiller,
        pointer_weight=config.method.pointer_weight,
        callbacks=[*metric_callbacks(output_dir), *callbacks],
    )
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(args))
    metrics = {"train_loss": result.training_loss}
    if eval_dataset is not None:
        metrics.update(final_evaluation(trainer))
    trainer.save_metrics("all", metrics)
    target = output_dir / EXPORT_FOLDER
    if trainer.is_world_process_zero():
        card = model_card(config, report.summary(), trainer.state.global_step, metrics)
        pointed = bool(config.method.pointer_weight) or checkpoint_pointer_decoding(config.model.path)
        export_model(trainer.model, tokenizer, spec, target, card, config.data.layout,  # a fine-tuned student answers
                     checkpoint_multiple_choice(config.model.path), builder.locations, pointed)  # as it did
    trainer.accelerator.wait_for_everyone()
    return target
