"""`drive-mllm bench preprocess`: six 1600x900 JPEGs -> model-ready tensors, ours vs transformers' processor.

Ours: reduced-size JPEG decode (images.py) + OpenCV mosaic, tiling and table-lookup normalisation (preprocess.py).
Processor: full JPEG decode + GotOcr2ImageProcessorPil with the same tiling settings.
Prints median ms per set and the ratio; no assertions on time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from ..cameras import NUSCENES_IMAGE_SIZE
from ..images import camera_set_to_rgb, to_rgb
from ..memory import keep_freed_memory
from ..preprocess import TilingSpec, layout_images, to_pixel_values, view_target_size
from ..prompt import PromptBuilder


def synthetic_camera_image(seed: int, size: tuple[int, int] = NUSCENES_IMAGE_SIZE) -> np.ndarray:
    """A scene-like RGB picture (sky gradient, road, boxes, lane marks, sensor noise) that compresses like a photo."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = np.zeros((height, width, 3), dtype=np.uint8)
    horizon = height * 2 // 5
    sky = np.linspace(235, 140, horizon, dtype=np.float32)[:, None, None] * np.float32([0.75, 0.85, 1.0])
    image[:horizon] = sky.astype(np.uint8)
    image[horizon:] = (90, 90, 95)
    for _ in range(40):  # buildings, cars, signs
        x, y = int(rng.integers(0, width)), int(rng.integers(horizon // 2, height * 19 // 20))
        w, h = int(rng.integers(width // 80, width // 6 + 2)), int(rng.integers(height // 45, height // 4 + 2))
        cv2.rectangle(image, (x, y), (x + w, y + h), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    for offset in (-0.3, 0.0, 0.3):  # lane marks converging at the horizon
        bottom = int(width * (0.5 + offset * 2))
        cv2.line(image, (width // 2, horizon), (bottom, height), (235, 235, 235), 6)
    noise = rng.normal(0, 5, image.shape).astype(np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def jpeg_message(rgb: np.ndarray, quality: int = 85) -> SimpleNamespace:
    """A CompressedImage-shaped object holding a JPEG of the image."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return SimpleNamespace(format="jpeg", data=encoded.tobytes())


def paired_median_ms(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median ms of each function, run alternately so both see the same load on a shared machine."""
    times: tuple[list[float], list[float]] = ([], [])
    first(), second()  # warm-up: first-call allocations and lazy imports
    for _ in range(repeats):
        for function, samples in zip((first, second), times, strict=True):
            start = time.perf_counter()
            function()
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def stage_medians_ms(stages: list[Callable[[object], object]], repeats: int) -> list[float]:
    """Median ms of each stage of a pipeline (each stage takes the previous one's result)."""
    samples: list[list[float]] = [[] for _ in stages]
    for _ in range(repeats):
        value: object = None
        for stage, times in zip(stages, samples, strict=True):
            start = time.perf_counter()
            value = stage(value)
            times.append((time.perf_counter() - start) * 1000)
    return [statistics.median(times) for times in samples]


def bench_layout(layout: str, messages: list[SimpleNamespace], repeats: int) -> None:
    from transformers import GotOcr2ImageProcessorPil

    builder = PromptBuilder(layout=layout)
    names = list(builder.rig.names)
    spec = TilingSpec(crop_to_patches=layout == "stitched")
    processor = GotOcr2ImageProcessorPil(size={"height": spec.tile_size, "width": spec.tile_size},
                                         image_mean=list(spec.mean), image_std=list(spec.std))
    target = view_target_size(builder, spec)
    stages = [lambda _: camera_set_to_rgb(messages, names, target), lambda views: layout_images(views, builder),
              lambda images: to_pixel_values(images, spec)]

    def ours() -> object:
        value: object = None
        for stage in stages:
            value = stage(value)
        return value

    def theirs() -> object:
        # full-size decode; the mosaic is our layout (transformers has none), so both paths build it
        views = [to_rgb(m, name) for m, name in zip(messages, names, strict=True)]
        return processor(layout_images(views, builder), return_tensors="pt", **spec.processor_kwargs())

    ours_ms, theirs_ms = paired_median_ms(ours, theirs, repeats)
    decode_ms, layout_ms, tensor_ms = stage_medians_ms(stages, repeats)
    print(f"{layout:>9}: ours {ours_ms:6.1f} ms/set (decode {decode_ms:.1f}, layout {layout_ms:.1f}, tiles+normalise "
          f"{tensor_ms:.1f})   processor {theirs_ms:6.1f} ms/set   ratio {theirs_ms / ours_ms:4.1f}x   "
          f"tiles {ours()[1]}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drive-mllm bench preprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per path (median reported)")
    parser.add_argument("--layouts", nargs="+", default=["stitched", "per_view"], choices=["stitched", "per_view"])
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's allocator as it is (the node keeps freed frame buffers, memory.py)")
    args = parser.parse_args(argv)
    kept = not args.default_malloc and keep_freed_memory()
    allocator = "freed buffers kept, as in the node" if kept else "glibc defaults"
    messages = [jpeg_message(synthetic_camera_image(seed)) for seed in range(6)]
    sizes_kb = [len(m.data) / 1000 for m in messages]
    print(f"input: 6 synthetic 1600x900 JPEGs, {min(sizes_kb):.0f}-{max(sizes_kb):.0f} kB each; "
          f"torch threads {torch.get_num_threads()}, allocator: {allocator}, median of {args.repeats}")
    for layout in args.layouts:
        bench_layout(layout, messages, args.repeats)
    return 0
