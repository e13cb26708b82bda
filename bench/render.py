"""Renderer speed: median milliseconds per frame of ``Renderer.render`` (flow estimator + face generator).

    python -m bench.render [--device cpu|cuda] [--frames N] [--size full|tiny] [--dtype float32|float16|bfloat16]
                           [--threads N [N ...]]

Without ``--device`` it measures the CPU, and CUDA too when present; without ``--size`` both the full-size
(official, 512x512) and the tiny renderer. Weights are random (speed does not depend on them). One frame per call,
as the streaming engine renders. On a CPU shared with other busy processes, several torch threads can be far
slower than one: measure both with ``--threads 1 2``. Prints JSON and writes it to bench/results/render.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from avatar.precision import Precision
from avatar.renderer import RendererConfig, random_renderer
from avatar.renderer.renderer import DTYPES
from bench.results_file import write_json_atomic
from config.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results" / "render.json"
WARMUP = 2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _portrait(size: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.stack([x, y, x * y])[None] * 0.8


def measure(size: str, device: str, dtype: str, frames: int) -> dict[str, object]:
    """Time ``frames`` single-frame renders after a warm-up; also time one portrait encoding."""
    config = RendererConfig() if size == "full" else RendererConfig.tiny()
    renderer = random_renderer(config, seed=0, device=device, dtype=dtype)
    image = _portrait(config.image_size).to(device)

    _sync(device)
    start = time.perf_counter()
    m0, f_app = renderer.encode_portrait(image)
    _sync(device)
    encode_ms = (time.perf_counter() - start) * 1000

    gen = torch.Generator().manual_seed(0)
    targets = (m0.float().cpu() + 0.3 * torch.randn(frames + WARMUP, config.latent_dim, generator=gen)).to(device)
    times = []
    for i in tqdm(range(frames + WARMUP), desc=f"render {size} {device} {dtype}", leave=False):
        _sync(device)
        start = time.perf_counter()
        renderer.render(m0, targets[i : i + 1], f_app)
        _sync(device)
        if i >= WARMUP:
            times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    return {
        "size": size,
        "image_size": config.image_size,
        "device": device,
        "dtype": dtype,
        "frames": frames,
        "median_ms": round(median, 2),
        "min_ms": round(min(times), 2),
        "max_ms": round(max(times), 2),
        "fps": round(1000 / median, 1),
        "encode_portrait_ms": round(encode_ms, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu, plus cuda when available)")
    parser.add_argument("--frames", type=int, default=10, help="timed frames per configuration (default 10)")
    parser.add_argument("--size", choices=["full", "tiny"], help="renderer size (default: both)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument(
        "--threads", type=int, nargs="+", help="torch CPU thread counts to measure, e.g. 1 2 (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine (use --device cpu)")

    if args.threads and min(args.threads) < 1:
        parser.error("--threads must be at least 1")
    thread_counts = args.threads or [torch.get_num_threads()]
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [args.size] if args.size else ["full", "tiny"]
    precision = get_settings().model.precision
    if torch.cuda.is_available():
        Precision(precision, torch.device("cuda"))

    results = []
    for device in devices:
        for threads in thread_counts if device == "cpu" else [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            results += [{**measure(size, device, args.dtype, args.frames), "cpu_threads": threads} for size in sizes]
    report: dict[str, object] = {
        "benchmark": "render",
        "what": "Renderer.render, one frame per call (flow estimator + face generator), random weights",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "precision": precision,
        "results": results,
    }
    write_json_atomic(report, args.out)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
