"""The model backend: a local InternVL-family checkpoint answering driving questions about one camera frame.

Native transformers classes only (no remote code unless asked for explicitly), safetensors weights only.
A frame is preprocessed once (`prepare`); `answer` encodes its images and the shared prompt prefix once per
frame and answers all questions as one greedy batch from that cached prefix (fast_decode.py). Prompts come from
the shared PromptBuilder, answers go back through `builder.from_model_text` so object tags are in camera pixels.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from .answers import ScoredAnswer, split_choices
from .fast_decode import (
    DecodeResult,
    FramePrefix,
    StaticCachePool,
    decode_from_prefix,
    encode_prefix,
    fill_cache,
    image_prefix_length,
)
from .locations import location_tokens
from .pointing import ImageTokenGrid, location_steps, point, repoint_tags
from .preprocess import TilingSpec, layout_images, to_pixel_values, view_target_size
from .prompt import (
    IMAGE_PLACEHOLDER,
    MULTIPLE_CHOICE_MODES,
    PromptBuilder,
    checkpoint_locations,
    checkpoint_multiple_choice,
    checkpoint_pointer_decoding,
)

GET_CHECKPOINT_HINT = ("write a test checkpoint with `drive-mllm tiny-model --out DIR`, or download a real one "
                       "as described in the presets under models/ (e.g. models/internvl3-1b-hf.yaml)")
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


class ModelLoadError(RuntimeError):
    """A checkpoint folder that cannot serve: missing, wrong format, unsafe weights or inconsistent settings."""


@dataclass
class PreparedFrame:
    """One frame's model-ready images: tiles of all layout images concatenated, and the tile count per image."""

    pixel_values: torch.Tensor
    tiles_per_image: list[int]
    prefix: FramePrefix | None = field(default=None, repr=False)  # filled by the first answer about the frame


def parameter_count(checkpoint: Path) -> int:
    """Parameters of a checkpoint folder, read from its safetensors headers (one file or shards) without loading."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(checkpoint).glob("*.safetensors")):
        with safe_open(str(path), "pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118 (safe_open is not iterable)
    return total


def parameter_label(count: int) -> str:
    """A parameter count the way model tables write it: 26B, 1.9M, 429K."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in names:
        raise ValueError(f"dtype: expected 'auto' or one of {sorted(names)}, got '{dtype}'")
    return names[dtype]


def check_folder(path: Path, trust_remote_code: bool) -> None:
    """Refuse what is detectable before transformers runs: missing folder, no config, pickle weights, remote code."""
    if not path.is_dir():
        problem = "is a file, not a folder" if path.exists() else "does not exist"
        raise ModelLoadError(f"model checkpoint folder '{path}' {problem}; {GET_CHECKPOINT_HINT}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"'{path}' is not a transformers checkpoint (no config.json); {GET_CHECKPOINT_HINT}")
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)
        if pickles:
            raise ModelLoadError(f"'{path / pickles[0]}' holds pickle weights, which can run code when loaded; "
                                 "convert the checkpoint to safetensors (model.safetensors) and load that")
        raise ModelLoadError(f"'{path}' has no model.safetensors weights; {GET_CHECKPOINT_HINT}")
    config = json.loads(config_file.read_text())
    if config.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(f"'{config_file}' asks for remote code (auto_map: {sorted(config['auto_map'])}); "
                             "set the node parameter trust_remote_code: true only if you trust that code, or convert the checkpoint "
                             "to the native transformers InternVL (-hf) layout")


def load_internvl_config(path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig, InternVLConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, OSError) as error:
        raise ModelLoadError(f"'{path / 'config.json'}' is not a readable transformers config: {error}") from error
    if not isinstance(config, InternVLConfig):
        raise ModelLoadError(f"'{path / 'config.json'}' is a '{config.model_type}' config, expected an InternVL "
                             "one (model_type 'internvl', the native -hf layout); original InternVL2/Mini-InternVL "
                             "checkpoints must be converted first")
    return config


def check_image_tokens(config: Any, spec: TilingSpec, builder: PromptBuilder, path: Path) -> None:
    """The checkpoint's vision tower, image-token count and context must agree with the processor and layout."""
    vision = config.vision_config
    tower_size = vision.image_size[0] if isinstance(vision.image_size, list | tuple) else vision.image_size
    patch = vision.patch_size[0] if isinstance(vision.patch_size, list | tuple) else vision.patch_size
    if tower_size != spec.tile_size:
        raise ModelLoadError(f"'{path}': the vision tower takes {tower_size}-px tiles but preprocessor_config.json "
                             f"resizes to {spec.tile_size}-px tiles; fix 'size' in preprocessor_config.json")
    tokens_per_tile = int((tower_size // patch) ** 2 * config.downsample_ratio**2)
    if config.image_seq_length != tokens_per_tile:
        raise ModelLoadError(f"'{path}': config image_seq_length is {config.image_seq_length} but a {tower_size}-px "
                             f"tile with {patch}-px patches and downsample {config.downsample_ratio} gives "
                             f"{tokens_per_tile} image tokens; the prompt would not match the image features")
    width, height = builder.rig.mosaic_size if builder.layout == "stitched" else builder.rig.image_size
    visual_tokens = builder.image_count * spec.tile_count(width, height) * tokens_per_tile
    context = config.text_config.max_position_embeddings
    if visual_tokens >= context:
        raise ModelLoadError(f"'{path}': the {builder.layout} layout shows {builder.image_count} image(s) = "
                             f"{visual_tokens} image tokens, more than the model's context of {context} tokens; "
                             "use fewer cameras or tiles (max tiles) or the other layout")


def check_tokenizer(tokenizer: Any, config: Any, path: Path) -> None:
    names = ("start_image_token", "end_image_token", "context_image_token")
    missing = [name for name in names if not getattr(tokenizer, name, None)]
    if missing:
        raise ModelLoadError(f"'{path}': the tokenizer lacks InternVL's image tokens ({', '.join(missing)} in "
                             "tokenizer_config.json)")
    if tokenizer.context_image_token_id != config.image_token_id:
        raise ModelLoadError(f"'{path}': tokenizer id of {tokenizer.context_image_token} is "
                             f"{tokenizer.context_image_token_id} but config image_token_id is {config.image_token_id}")
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(f"'{path}': the tokenizer has no chat template; add chat_template.jinja to the folder")


def with_checkpoint_locations(builder: PromptBuilder, tokenizer: Any, path: Path) -> PromptBuilder:
    """The builder writing positions as the checkpoint learned them (location tokens when its drive_mllm.json says)."""
    try:
        grid = checkpoint_locations(path)
        missing = [token for token in location_tokens(grid.bins) if token not in tokenizer.get_vocab()] if grid else []
        if missing:
            raise ValueError(f"drive_mllm.json sets location_bins {grid.bins} but the tokenizer lacks {missing[0]} "
                             f"(and {len(missing) - 1} more); retrain or remove the setting")
        return replace(builder, locations=grid)
    except ValueError as error:
        raise ModelLoadError(f"'{path}': {error}") from None


def quantize_int8_weights(model: Any) -> None:
    """Weight-only int8 for the LLM's linear layers (torchao): about half the bf16 weight bytes read per token."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise ModelLoadError("int8 weights need torchao, an optional dependency: pip install torchao") from error
    quantize_(model.model.language_model, Int8WeightOnlyConfig())


def image_token_ids(tokenizer: Any, image_seq_length: int, tiles: int) -> list[int]:
    """`<img>` + `<IMG_CONTEXT>` x (image_seq_length x tiles) + `</img>`, as InternVLProcessor expands it."""
    context = [tokenizer.context_image_token_id] * (image_seq_length * tiles)
    return [tokenizer.start_image_token_id, *context, tokenizer.end_image_token_id]


def encode_with_images(tokenizer: Any, text: str, tiles_per_image: list[int], image_seq_length: int) -> list[int]:
    """Token ids of chat text with each `<image>` expanded to its image tokens (serving and training share it)."""
    pieces = text.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 != len(tiles_per_image):
        raise ValueError(f"prompt: {len(pieces) - 1} image placeholders for {len(tiles_per_image)} images")
    ids = tokenizer.encode(pieces[0], add_special_tokens=False)
    for tiles, piece in zip(tiles_per_image, pieces[1:], strict=True):
        ids += image_token_ids(tokenizer, image_seq_length, tiles) + tokenizer.encode(piece, add_special_tokens=False)
    return ids


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Eager attention for a forward pass that returns its attention weights (sdpa returns none)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def pointer_grid(model: Any, spec: TilingSpec, builder: PromptBuilder) -> ImageTokenGrid:
    """The image-token geometry pointer decoding reads positions with; needs location tokens, per_view, one tile."""
    if builder.locations is None or builder.layout != "per_view" or spec.max_tiles != 1:
        raise ValueError("pointer_decoding: needs location tokens (location_bins), the per_view layout and one tile "
                         f"per view; got location_bins {builder.locations and builder.locations.bins}, layout "
                         f"{builder.layout}, max tiles {spec.max_tiles}")
    return ImageTokenGrid.of_model(model, spec.tile_size, builder.locations, builder.rig.names)


class DrivingModel:
    """A loaded checkpoint plus its tokenizer, tiling settings and the layout's prompt builder."""

    def __init__(self, model: Any, tokenizer: Any, spec: TilingSpec, builder: PromptBuilder, model_id: str,
                 static_cache: bool | None = None, multiple_choice: str = "generate", pointer_decoding: bool = False):
        """static_cache (default: on CUDA) decodes into reusable StaticCaches, which makes generate compile;
        multiple_choice "rank" answers multiple-choice questions by ranking their options (prompt.py);
        pointer_decoding re-reads each written position from the attention (pointing.py)."""
        if multiple_choice not in MULTIPLE_CHOICE_MODES:
            raise ValueError(f"multiple_choice: expected one of {MULTIPLE_CHOICE_MODES}, got '{multiple_choice}'")
        self.multiple_choice = multiple_choice
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.builder = builder
        self.model_id = model_id
        self.device = str(model.device)
        self.dtype = model.dtype
        self.image_seq_length: int = model.config.image_seq_length
        stop = {tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(list(STOP_TOKENS))}
        self.stop_token_ids = sorted(i for i in stop if i is not None and i != tokenizer.unk_token_id)
        static_cache = self.device.startswith("cuda") if static_cache is None else static_cache
        self.static_caches = StaticCachePool(model.config) if static_cache else None
        self.last_timings: dict[str, float] = {}  # ms per stage of the last answer call (vision, prefill, decode)
        self.pointer = pointer_grid(model, spec, builder) if pointer_decoding else None
        bins = range(builder.locations.bins if builder.locations else 0)
        self.location_ids = tuple({tokenizer.convert_tokens_to_ids(f"<{axis}{i}>") for i in bins} for axis in "xy")

    @classmethod
    def load(cls, path: str | Path, builder: PromptBuilder, device: str = "auto", dtype: str = "auto",
             trust_remote_code: bool = False, max_tiles: int | None = None, int8: bool = False) -> DrivingModel:
        """Load a local checkpoint folder (native InternVL layout, safetensors) for the builder's layout.

        device "auto": cuda when available, else cpu; dtype "auto": bf16 on GPU, fp32 on CPU.
        max_tiles overrides the image processor's max_patches (dynamic tiling bound); int8: weight-only int8 LLM.
        """
        from transformers import AutoModelForImageTextToText, AutoTokenizer, GotOcr2ImageProcessorPil

        path = Path(path).expanduser()
        check_folder(path, trust_remote_code)
        config = load_internvl_config(path, trust_remote_code)
        if not (path / "preprocessor_config.json").is_file():
            raise ModelLoadError(f"'{path}' has no preprocessor_config.json (tile size, normalisation)")
        spec = TilingSpec.from_image_processor(GotOcr2ImageProcessorPil.from_pretrained(path), builder.layout,
                                               max_tiles)
        check_image_tokens(config, spec, builder, path)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        check_tokenizer(tokenizer, config, path)
        builder = with_checkpoint_locations(builder, tokenizer, path)
        device = resolve_device(device)
        model = AutoModelForImageTextToText.from_pretrained(
            path, config=config, dtype=resolve_dtype(dtype, device), use_safetensors=True,
            trust_remote_code=trust_remote_code, attn_implementation="sdpa",
        )
        model = model.to(device).eval()
        if int8:
            quantize_int8_weights(model)
        multiple_choice, pointer_decoding = checkpoint_multiple_choice(path), checkpoint_pointer_decoding(path)
        try:
            return cls(model, tokenizer, spec, builder, model_id=path.name, multiple_choice=multiple_choice,
                       pointer_decoding=pointer_decoding)
        except ValueError as error:
            raise ModelLoadError(f"'{path}': {error}") from None

    @property
    def view_size(self) -> tuple[int, int] | None:
        """The smallest (width, height) a camera image must be decoded at (None: full size); see images.py."""
        return view_target_size(self.builder, self.spec)

    def prepare(self, views: list[np.ndarray]) -> PreparedFrame:
        """Views in rig order (RGB uint8) -> the layout's tiles on the model's device and dtype."""
        images = layout_images(views, self.builder)
        return PreparedFrame(*to_pixel_values(images, self.spec, self.device, self.dtype))

    def image_token_ids(self, tiles: int) -> list[int]:
        """`<img>` + `<IMG_CONTEXT>` x (image_seq_length x tiles) + `</img>`, as InternVLProcessor expands it."""
        return image_token_ids(self.tokenizer, self.image_seq_length, tiles)

    def prompt_ids(self, question: str, tiles_per_image: list[int], answer: str | None = None) -> list[int]:
        """Token ids of the chat-templated prompt with each `<image>` expanded to its image tokens."""
        text = self.builder.render(self.tokenizer, question, answer)
        return encode_with_images(self.tokenizer, text, tiles_per_image, self.image_seq_length)

    def frame_prefix(self, frame: PreparedFrame, prompt: list[int]) -> tuple[FramePrefix, bool]:
        """The frame's cached prefix (prompt head through the last image), encoded now if new; True when new."""
        if frame.prefix is not None:
            return frame.prefix, False
        length = image_prefix_length(prompt, self.tokenizer.end_image_token_id)
        frame.prefix = encode_prefix(self.model, prompt[:length], frame.pixel_values)
        return frame.prefix, True

    def decode(self, frame: PreparedFrame, prompts: list[list[int]], max_new_tokens: list[int],
               min_new_tokens: int = 0, logprobs: bool = False) -> DecodeResult:
        """Greedy continuations of prompts about one frame, batched from its cached prefix; sets last_timings.

        Rows run to their budget; each row equals generate for that prompt alone up to its first stop token.
        """
        prefix, new = self.frame_prefix(frame, prompts[0])
        result = decode_from_prefix(self.model, prefix, prompts, max_new_tokens, self.stop_token_ids,
                                    self.tokenizer.pad_token_id, self.static_caches, min_new_tokens, logprobs)
        self.last_timings = {"vision": prefix.vision_ms if new else 0.0,
                             "prefill": result.prefill_ms + (prefix.prefill_ms if new else 0.0),
                             "decode": result.decode_ms}
        return result

    def generate_ids(self, frame: PreparedFrame, prompts: list[list[int]], max_new_tokens: list[int],
                     min_new_tokens: int = 0) -> list[list[int]]:
        """Each row's tokens up to and including its stop token (<|im_end|> / end of text) or its budget."""
        result = self.decode(frame, prompts, max_new_tokens, min_new_tokens)
        return [ids[:self.stop_length(ids)] for ids in result.new_ids]

    def generate_scored(self, frame: PreparedFrame, prompts: list[list[int]],
                        max_new_tokens: list[int]) -> list[tuple[list[int], list[float]]]:
        """generate_ids with each token's log-probability (as compute_transition_scores gives plain generate)."""
        result = self.decode(frame, prompts, max_new_tokens, logprobs=True)
        lengths = [self.stop_length(ids) for ids in result.new_ids]
        return [(ids[:n], logprobs[:n]) for ids, logprobs, n in zip(result.new_ids, result.new_logprobs, lengths,
                                                                    strict=True)]

    def warmup(self, batch_sizes: list[int], max_new_tokens: int) -> float:
        """Compile and capture the decode step for these batch sizes before the first frame; seconds spent.

        Only with static caches (CUDA): dynamic ones are not compiled, so there is nothing to warm up.
        """
        if self.static_caches is None:
            return 0.0
        started = time.perf_counter()
        width, height = self.builder.rig.image_size
        frame = self.prepare([np.zeros((height, width, 3), np.uint8)] * len(self.builder.rig.names))
        prompt = self.prompt_ids("Warm-up.", frame.tiles_per_image)
        runs = 3 if self.device.startswith("cuda") else 1  # compile, then CUDA-graph warm-up and recording runs
        for batch in sorted(set(batch_sizes)):
            for _ in range(runs):
                self.generate_ids(frame, [prompt] * batch, [max_new_tokens] * batch, min_new_tokens=max_new_tokens)
        return time.perf_counter() - started

    def pointed(self, frame: PreparedFrame, prompts: list[list[int]], rows: list[list[int]]) -> list[list[int]]:
        """With pointer decoding, each answer's tags re-placed where its attention points; otherwise as they are."""
        if self.pointer is None:
            return rows
        return [self.point_answer(frame, prompt, row) for prompt, row in zip(prompts, rows, strict=True)]

    def point_answer(self, frame: PreparedFrame, prompt: list[int], answer: list[int]) -> list[int]:
        """One answer with its tags' cameras and bins read off the attention (one eager pass over the question and
        answer, from the frame's cached prefix)."""
        steps = location_steps(answer, self.tokenizer, *self.location_ids, self.pointer.cameras, partial=True)
        if not steps:
            return answer
        prefix, _ = self.frame_prefix(frame, prompt)  # images and prompt head: cached, only the rest runs again
        rest = prompt[len(prefix.ids):] + answer
        cache = fill_cache(DynamicCache(config=self.model.config), prefix, 1)
        with eager_attention(self.model), torch.no_grad():  # the logits are not needed: only the attention
            output = self.model(input_ids=torch.tensor([rest], device=self.device), cache=cache,
                                output_attentions=True, logits_to_keep=1)
        images = [index for index, token in enumerate(prefix.ids) if token == self.tokenizer.context_image_token_id]
        placed = point(output.attentions[-1][0], images, len(prompt) - len(prefix.ids), steps, self.pointer)
        text = repoint_tags(self.tokenizer.decode(answer, skip_special_tokens=True), placed, self.pointer.cameras)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def stop_length(self, ids: list[int]) -> int:
        """How many tokens up to and including the first stop token."""
        return next((index + 1 for index, token in enumerate(ids) if token in self.stop_token_ids), len(ids))

    def question_prompts(self, frame: PreparedFrame, questions: list[str], max_new_tokens: int | list[int],
                         asked: list[int] | None = None) -> tuple[list[list[int]], list[int]]:
        """Prompt ids and token budgets, one per question (of those at the `asked` indices, when given)."""
        budgets = [max_new_tokens] * len(questions) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(budgets) != len(questions):
            raise ValueError(f"max_new_tokens: expected {len(questions)} values (one per question), got {len(budgets)}")
        asked = range(len(questions)) if asked is None else asked
        return [self.prompt_ids(questions[i], frame.tiles_per_image) for i in asked], [budgets[i] for i in asked]

    def answer_texts(self, rows: list[list[int]]) -> list[str]:
        """Generated ids -> answer texts with object tags in camera pixels."""
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [self.builder.from_model_text(text.strip()) for text in texts]

    def answer_losses(self, frame: PreparedFrame, question: str, answers: list[str]) -> list[float]:
        """Mean cross-entropy of each answer's tokens (and end of turn) after the question, tokenized as training
        tokenizes them; one batched forward pass."""
        from .train.collate import IGNORE_INDEX, encode_conversation  # train.collate imports this module

        rows = [encode_conversation(self.tokenizer, self.builder.messages(question, answer), frame.tiles_per_image,
                                    self.image_seq_length) for answer in answers]
        length = max(len(ids) for ids, _ in rows)
        padded = lambda values, fill: [row + [fill] * (length - len(row)) for row in values]  # noqa: E731
        ids = torch.tensor(padded([ids for ids, _ in rows], self.tokenizer.pad_token_id), device=self.device)
        labels = torch.tensor(padded([labels for _, labels in rows], IGNORE_INDEX), device=self.device)
        mask = torch.tensor(padded([[1] * len(ids) for ids, _ in rows], 0), device=self.device)
        pixels = frame.pixel_values.repeat(len(rows), *([1] * (frame.pixel_values.dim() - 1)))
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits[:, :-1].float()
        targets = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                                   reduction="none")
        return (losses.sum(1) / (targets != IGNORE_INDEX).sum(1)).tolist()

    def ranked_choices(self, frame: PreparedFrame, questions: list[str]) -> dict[int, ScoredAnswer]:
        """With multiple_choice "rank": the multiple-choice questions' answers ("B."), by question index, each with
        its option's share of the options' probability as confidence. Empty otherwise."""
        ranked = {}
        for index, question in enumerate(questions if self.multiple_choice == "rank" else []):
            choices = split_choices(question)
            if choices is None:
                continue
            stem, options = choices
            shares = torch.softmax(-torch.tensor(self.answer_losses(frame, stem, list(options.values()))), 0)
            best = int(shares.argmax())
            ranked[index] = ScoredAnswer(f"{list(options)[best]}.", (float(shares[best]),))
        return ranked

    def answer(self, frame: PreparedFrame, questions: list[str], max_new_tokens: int | list[int] = 128) -> list[str]:
        """Answers to several questions about one frame (images and prompt prefix encoded once per frame, questions
        decoded as one batch); object tags come back in camera pixels."""
        ranked = self.ranked_choices(frame, questions)
        asked = [index for index in range(len(questions)) if index not in ranked]
        prompts, budgets = self.question_prompts(frame, questions, max_new_tokens, asked)
        texts = iter(self.answer_texts(self.pointed(frame, prompts, self.generate_ids(frame, prompts, budgets)))
                     if asked else [])
        return [ranked[index].text if index in ranked else next(texts) for index in range(len(questions))]

    def answer_scored(self, frame: PreparedFrame, questions: list[str],
                      max_new_tokens: int | list[int] = 128) -> list[ScoredAnswer]:
        """`answer` with the probability of each generated token (for confidence)."""
        ranked = self.ranked_choices(frame, questions)
        asked = [index for index in range(len(questions)) if index not in ranked]
        prompts, budgets = self.question_prompts(frame, questions, max_new_tokens, asked)
        rows = self.generate_scored(frame, prompts, budgets) if asked else []
        texts = self.answer_texts(self.pointed(frame, prompts, [ids for ids, _ in rows]))  # confidence: as written
        generated = iter(ScoredAnswer.from_logprobs(text, logprobs) for text, (_, logprobs) in zip(texts, rows,
                                                                                                   strict=True))
        return [ranked[index] if index in ranked else next(generated) for index in range(len(questions))]
