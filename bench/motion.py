"""Speed of the full-size motion generator (random weights): audio encoding, transformer, flow head, per frame.

    python -m bench.motion [--frames N] [--device cpu|cuda] [--steps 5] [--dtype float32] [--threads N]

Audio encoding is the offline path: both streams of the whole clip (with the 94-frame silent prefix) encoded once,
the time divided by the clip's 25 fps frames. The transformer and the head are timed per generated frame (median),
with the official CFG (4 branches: the anchor branch is skipped at scale 0) and ``--steps`` sampler steps.
Prints JSON and writes it to bench/results/motion.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from avatar.motion.audio import SAMPLES_PER_FRAME, input_values, to_25fps
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.precision import Precision
from avatar.sampling.cfg import CfgScales, branch_gates
from avatar.sampling.sampler import sample_latent
from bench.results_file import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "motion.json"


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000.0, out


@torch.inference_mode()
def run(frames: int, device_name: str, steps: int, dtype_name: str, warmup: int, repeats: int) -> dict:
    device = torch.device(device_name)
    dtype = getattr(torch, dtype_name)
    Precision("tf32", device)  # TF32 matmuls on CUDA; nothing elsewhere
    config = MotionConfig()
    build_ms, model = _timed(lambda: random_motion_generator(config, seed=0, device=device, dtype=dtype), device)
    cfg = CfgScales()
    branches = cfg.branches
    context = config.context

    rng = np.random.default_rng(0)
    n_samples = (frames + warmup + 1) * SAMPLES_PER_FRAME
    streams = [(0.1 * rng.standard_normal(n_samples)).astype(np.float32) for _ in range(2)]
    prefix = np.zeros(context * SAMPLES_PER_FRAME, np.float32)
    values = [torch.from_numpy(input_values(np.concatenate([prefix, s])))[None].to(device, dtype) for s in streams]
    encoders = (model.audio_encoder_face, model.audio_encoder_face_other)

    def encode() -> list[torch.Tensor]:
        return [to_25fps(enc(v))[0] for enc, v in zip(encoders, values, strict=True)]

    encode()  # warm-up
    audio_runs = [_timed(encode, device) for _ in range(repeats)]
    feats = audio_runs[-1][1]
    clip_frames = feats[0].shape[0]
    audio_ms = statistics.median(ms for ms, _ in audio_runs) / clip_frames

    fused = model.fuse(feats[0], feats[1], branches)
    anchor = torch.randn(1, config.face_dim, device=device, dtype=dtype) * 0.35
    gate = branch_gates(branches, device=device, dtype=dtype).anchor
    history = anchor.expand(context, -1).clone()
    gpt_ms, head_ms = [], []
    for j in range(warmup + frames):
        window = fused[:, j + 1 : j + 1 + context]
        t_gpt, c_n = _timed(lambda w=window, h=history: model.condition(h, w, anchor, gate), device)
        noise = torch.randn(1, config.face_dim, device=device)
        t_head, latent = _timed(lambda c=c_n, z=noise: sample_latent(model, c, z, steps, cfg), device)
        history = torch.cat([history[1:], latent[None].to(dtype)])
        if j >= warmup:
            gpt_ms.append(t_gpt)
            head_ms.append(t_head)
    transformer = statistics.median(gpt_ms)
    head = statistics.median(head_ms)
    total = audio_ms + transformer + head
    return {
        "benchmark": "motion",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "dtype": dtype_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_ms": round(build_ms, 1),
        "frames": frames,
        "steps": steps,
        "cfg_branches": len(branches),
        "audio_clip_frames": clip_frames,
        "audio_encode_ms_per_frame": round(audio_ms, 3),
        "transformer_ms_per_frame": round(transformer, 3),
        "head_ms_per_frame": round(head, 3),
        "total_ms_per_frame": round(total, 3),
        "fps": round(1000.0 / total, 2),
        "transformer_ms_all": [round(x, 2) for x in gpt_ms],
        "head_ms_all": [round(x, 2) for x in head_ms],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.motion", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5, help="generated frames timed (after warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="audio encodings timed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.frames, args.device, args.steps, args.dtype, args.warmup, args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    write_json_atomic(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
