"""Knowledge distillation of the student from a frozen teacher.

(a) Logits: KL(teacher || student) at a temperature on the answer tokens, times T^2, mixed with the ground-truth
cross-entropy. Needs a shared tokenizer; when the vocabularies differ only in length (padded embeddings, extra
tokens at the end) the common prefix is compared. The teacher runs live (on its own device if asked) or is read
from a cache of top-k logits written beforehand (`precompute_teacher_topk`).
(b) Vision features: 1 - cosine similarity (the negative cosine, shifted to be zero at a perfect match) between
the student's hidden states of its last K vision layers and the teacher's, through a learned linear projection
from the teacher's width to the student's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from .arguments import MethodArguments
from .collate import answer_cross_entropy, answer_logits, answer_mask, model_inputs

PROJECTION_ATTRIBUTE = "vision_distill_projection"  # lives on the student so DDP syncs it; dropped on export


class TokenizerMismatchError(ValueError):
    """Teacher and student tokenize differently, so their token distributions cannot be compared."""


def common_vocab_size(student_tokenizer: Any, teacher_tokenizer: Any) -> int:
    """Size of the shared vocabulary prefix; raises when a token id means different text in the two."""
    student, teacher = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    size = min(len(student), len(teacher))
    student_by_id = {i: token for token, i in student.items() if i < size}
    teacher_by_id = {i: token for token, i in teacher.items() if i < size}
    differing = sorted(
        i for i in student_by_id.keys() | teacher_by_id.keys() if student_by_id.get(i) != teacher_by_id.get(i)
    )
    if differing:
        i = differing[0]
        raise TokenizerMismatchError(
            f"teacher and student tokenizers differ ({len(differing)} of the first {size} ids; id {i} is "
            f"{student_by_id.get(i)!r} for the student, {teacher_by_id.get(i)!r} for the teacher): logit "
            "distillation needs a shared tokenizer (e.g. InternVL3-1B with an InternVL3-2B/8B/14B teacher); use "
            "method.kl_weight=0 with vision-feature distillation only, or another teacher"
        )
    return size


def topk_kl(
    student_logits: torch.Tensor, teacher_values: torch.Tensor, teacher_indices: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) x T^2, the teacher given as (N, k) logits at (N, k) ids.

    With k = the whole vocabulary this is the full KL; with fewer, the teacher is renormalised over its top k.
    """
    teacher_log_probs = F.log_softmax(teacher_values.float() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, teacher_indices)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return kl.mean() * temperature**2


def full_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) x T^2 over the common vocabulary prefix, mean over positions."""
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    teacher_log_probs = F.log_softmax(teacher_logits[:, :vocab].float() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits[:, :vocab].float() / temperature, dim=-1)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return kl.mean() * temperature**2


class VisionFeatureTap:
    """Forward hooks keeping the outputs of a vision tower's last K layers during the normal forward pass."""

    def __init__(self, model: nn.Module, layers: int):
        encoder_layers = vision_layers(model)
        if not 1 <= layers <= len(encoder_layers):
            raise ValueError(f"method.vision_layers: expected 1..{len(encoder_layers)}, got {layers}")
        self.features: list[torch.Tensor] = []
        self.handles = [layer.register_forward_hook(self._keep) for layer in encoder_layers[-layers:]]

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.features.append(output[0] if isinstance(output, tuple) else output)

    def take(self) -> list[torch.Tensor]:
        """The last K features of the latest forward (gradient checkpointing re-runs layers: keep the last ones)."""
        features, self.features = self.features[-len(self.handles) :], []
        return features


def unwrap(model: nn.Module) -> nn.Module:
    """The InternVL model inside DDP / peft wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def vision_layers(model: nn.Module) -> nn.ModuleList:
    return unwrap(model).model.vision_tower.encoder.layer


def vision_width(model: nn.Module) -> int:
    return unwrap(model).config.vision_config.hidden_size


def attach_projection(student: nn.Module, teacher: nn.Module, layers: int) -> nn.ModuleList:
    """One learned teacher-width -> student-width projection per matched layer, registered on the student."""
    projection = nn.ModuleList(nn.Linear(vision_width(teacher), vision_width(student)) for _ in range(layers))
    unwrap(student).add_module(PROJECTION_ATTRIBUTE, projection.to(unwrap(student).device))
    return projection


def vision_cosine_loss(
    student_features: list[torch.Tensor], teacher_features: list[torch.Tensor], projection: nn.ModuleList
) -> torch.Tensor:
    losses = [
        1 - F.cosine_similarity(s.float(), p(t.to(s.device, p.weight.dtype)).float(), dim=-1).mean()
        for s, t, p in zip(student_features, teacher_features, projection, strict=True)
    ]
    return torch.stack(losses).mean()


def cache_file(cache_dir: Path, sample_id: str) -> Path:
    return cache_dir / f"{hashlib.sha1(sample_id.encode()).hexdigest()}.safetensors"


class Distiller:
    """The distillation loss of one batch: weighted CE + logit KL + vision-feature term, and its parts."""

    def __init__(self, method: MethodArguments, teacher: nn.Module | None, vocab_size: int):
        self.method = method
        self.teacher = teacher
        self.vocab_size = vocab_size
        self.cache_dir = Path(method.teacher_cache) if method.teacher_cache else None
        self.teacher_device = next(teacher.parameters()).device if teacher is not None else None
        self.student_tap: VisionFeatureTap | None = None
        self.teacher_tap: VisionFeatureTap | None = None
        if teacher is not None:
            teacher.eval().requires_grad_(False)

    def enable_vision(self, student: nn.Module) -> None:
        if self.teacher is None:
            raise ValueError("method.vision_weight: vision-feature distillation needs the teacher model")
        attach_projection(student, self.teacher, self.method.vision_layers)
        self.student_tap = VisionFeatureTap(student, self.method.vision_layers)
        self.teacher_tap = VisionFeatureTap(self.teacher, self.method.vision_layers)

    def teacher_logits(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        device_inputs = model_inputs(inputs, self.teacher.dtype, self.teacher_device)
        with torch.no_grad():
            output = self.teacher(**device_inputs, logits_to_keep=mask.to(self.teacher_device))
        return output.logits.reshape(-1, output.logits.shape[-1])[:, : self.vocab_size]

    def cached_topk(self, sample_ids: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        files = [cache_file(self.cache_dir, sample_id) for sample_id in sample_ids]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"teacher cache: no logits for {len(missing)} samples (e.g. {missing[0]}); "
                "set method.teacher_path to fill the cache before training"
            )
        entries = [load_file(f) for f in files]
        values = torch.cat([e["values"] for e in entries]).to(device)
        return values, torch.cat([e["indices"] for e in entries]).to(device)

    def __call__(self, model: nn.Module, inputs: dict[str, Any], sample_ids: list[str]) -> tuple[torch.Tensor, dict]:
        student_logits, targets, mask = answer_logits(model, inputs)
        terms = {"ce": answer_cross_entropy(student_logits, targets)}
        if self.method.kl_weight:
            terms["kl"] = self.logit_kl(student_logits, inputs, mask, sample_ids)
        if self.method.vision_weight:
            terms["vision"] = self.vision_loss(model, inputs)
        weights = {"ce": self.method.ce_weight, "kl": self.method.kl_weight, "vision": self.method.vision_weight}
        loss = sum(weights[name] * value for name, value in terms.items())
        return loss, {name: value.detach().item() for name, value in terms.items()}

    def logit_kl(
        self, student_logits: torch.Tensor, inputs: dict[str, Any], mask: torch.Tensor, sample_ids: list[str]
    ) -> torch.Tensor:
        temperature = self.method.temperature
        if self.teacher is None:  # precomputed top-k
            values, indices = self.cached_topk(sample_ids, student_logits.device)
            if len(values) != len(student_logits):
                raise ValueError(
                    f"teacher cache: {len(values)} cached positions for {len(student_logits)} answer "
                    "tokens; the data or max_length changed since the cache was written, rebuild it"
                )
            return topk_kl(student_logits[:, : self.vocab_size], values, indices, temperature)
        teacher_logits = self.teacher_logits(inputs, mask).to(student_logits.device)
        if self.method.top_k:
            values, indices = teacher_logits.topk(self.method.top_k, dim=-1)
            return topk_kl(student_logits[:, : self.vocab_size], values, indices, temperature)
        return full_kl(student_logits[:, : self.vocab_size], teacher_logits, temperature)

    def vision_loss(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        student_features = self.student_tap.take()
        if not self.method.kl_weight:  # the teacher has not run on this batch for the logits
            with torch.no_grad():
                pixels = inputs["pixel_values"].to(self.teacher_device, self.teacher.dtype)
                unwrap(self.teacher).model.vision_tower(pixel_values=pixels)
        projection = getattr(unwrap(model), PROJECTION_ATTRIBUTE)
        return vision_cosine_loss(student_features, self.teacher_tap.take(), projection)


def precompute_teacher_topk(
    teacher: nn.Module, dataset: Any, collator: Any, cache_dir: Path, top_k: int, vocab_size: int
) -> int:
    """Write the teacher's top-k answer-token logits of every not yet cached sample; returns how many were written."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    device = next(teacher.parameters()).device
    todo = {s.sample_id: i for i, s in enumerate(dataset.samples) if not cache_file(cache_dir, s.sample_id).is_file()}
    teacher.eval()
    for sample_id, index in tqdm(todo.items(), desc="teacher top-k", unit="sample"):
        batch = collator([dataset.single(index)])
        mask = answer_mask(batch["labels"]).to(device)
        inputs = model_inputs(batch, teacher.dtype, device)
        with torch.no_grad():
            logits = teacher(**inputs, logits_to_keep=mask).logits
        values, indices = logits.reshape(-1, logits.shape[-1])[:, :vocab_size].float().topk(top_k, dim=-1)
        target = cache_file(cache_dir, sample_id)
        save_file(
            {"values": values.half().cpu().contiguous(), "indices": indices.cpu().contiguous()},
            str(target.with_suffix(".tmp")),
        )
        target.with_suffix(".tmp").rename(target)  # a half-written file never looks cached
    return len(todo)
