"""Benchmark of serving several avatars on one device: ``python -m bench.serving`` (``python -m bench.gpu`` on CUDA).

Prints JSON and writes it to ``bench/results/serving.json`` (``--out`` to change). Untrained (random) weights on
the dyadic sample; speed does not depend on the weights. Per model size (``--size``):

- ``flops``: floating-point operations of one frame per stage, counted by ``torch.utils.flop_counter`` at full
  quality (5 sampler steps, 4 guidance branches), and the compute floor they set on a GPU at its dense peak
  (``GPU_PEAK_TFLOPS``: no kernel runs faster than that, so a real frame takes longer).
- ``sessions``: for 1, 2, 4 conversations (``--sessions``), one tick of all of them (each one's audio, latent and
  frame) stepped as one batch per stage (``avatar.stream.batch``) and one by one (each ``StreamCore`` alone, as
  the engine does today), alternating tick by tick in one run: per-tick ms (p50), frames per second in total
  (sessions / p50 tick), and ``ratio`` = batched / one by one.
- ``precision``: for fp32, tf32, bf16 (``model.precision``), the per-stage ms (p50) of ``StreamCore.step`` and the
  deviation from fp32: per stage on fp32's own inputs (transformer: its condition c_n; head: the latent from fp32's
  c_n and noise; render: the frame from fp32's latent), and end to end over the frames (each precision stepping
  its own history): latent cosine (the smallest) and relative L2, frame PSNR (dB, of uint8 frames; inf = equal).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from avatar.errors import InputError
from avatar.motion.audio import SAMPLES_PER_FRAME
from avatar.precision import PRECISIONS, Precision
from avatar.renderer import to_uint8
from avatar.sampling.cfg import CfgScales
from avatar.sampling.sampler import sample_latent
from avatar.stream.batch import SessionBatch
from avatar.stream.core import StreamCore
from avatar.stream.ladder import ladder
from avatar.stream.noise import table_noise
from avatar.stream.warm_up import warm_up
from bench.results_file import write_json_atomic
from bench.stream import Models, build, machine, percentiles, read_wav_16k, stage_stats
from config.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
LOOKAHEAD_MS = 60
# dense (no sparsity) peak throughput of an H100 SXM in TFLOP/s, from NVIDIA's H100 datasheet
GPU_PEAK_TFLOPS = {"h100_tf32": 494.7, "h100_bf16": 989.4}
BOTH_SPEAK_S = 2.0  # from here the dyadic sample has speech in both streams


def _core(
    models: Models, session: int, precision: str = "fp32", noise: torch.Tensor | None = None, trace: bool = True
) -> StreamCore:
    """A conversation's engine core; each session gets its own noise seed (or the rows of ``noise``)."""
    return StreamCore(
        models.motion,
        models.renderer,
        models.m0,
        models.f_app,
        lookahead_self_ms=LOOKAHEAD_MS,
        lookahead_other_ms=LOOKAHEAD_MS,
        seed=session,
        noise=table_noise(noise) if noise is not None else None,
        precision=precision,
        trace=trace,
    )


class Conversation:
    """One session's audio: the dyadic sample from its own offset (sessions do not speak in step)."""

    def __init__(self, audio: tuple[np.ndarray, np.ndarray], session: int) -> None:
        start = int((BOTH_SPEAK_S + 0.52 * session) * 16000)
        self.audio = tuple(a[start:] for a in audio)

    def frame(self, tick: int) -> tuple[np.ndarray, ...]:
        """The tick's 40 ms of self and other audio, then each one's lookahead."""
        start, end = tick * SAMPLES_PER_FRAME, (tick + 1) * SAMPLES_PER_FRAME
        ahead = LOOKAHEAD_MS * 16
        return *(a[start:end] for a in self.audio), *(a[end : end + ahead] for a in self.audio)

    def hear(self, core: StreamCore, tick: int) -> None:
        core.hear(*self.frame(tick))


def _ms(fn: Callable[[], Any], device: torch.device) -> float:
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) * 1000


def flops(models: Models, audio: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Counted FLOPs of one full-quality frame per stage, and the GPU compute floor they set."""
    core = _core(models, 0, trace=False)  # the counter sees the operators of an eager run
    conversation = Conversation(audio, 0)
    conversation.hear(core, 0)  # the first window (the whole silent prefix): not a live frame
    counters = {stage: FlopCounterMode(display=False) for stage in ("audio", "transformer_and_head", "render")}
    with torch.inference_mode():
        with counters["audio"]:
            conversation.hear(core, 1)
        with counters["transformer_and_head"]:
            latent = core.generate(ladder(core.steps)[0])
        with counters["render"]:
            core.render(latent)
    counted = {stage: int(counter.get_total_flops()) / 1e9 for stage, counter in counters.items()}
    total = sum(counted.values())
    return {
        "gflop_per_frame": {stage: round(value, 3) for stage, value in counted.items()} | {"total": round(total, 3)},
        "gpu_floor_ms_per_frame": {name: round(total / 1e3 / peak * 1e3, 3) for name, peak in GPU_PEAK_TFLOPS.items()},
    }


def sessions_sweep(
    models: Models, audio: tuple[np.ndarray, np.ndarray], counts: list[int], ticks: int, device: torch.device
) -> list[dict[str, Any]]:
    """Per count: one tick of every session, batched vs one by one, alternating tick by tick."""
    rows = []
    for count in counts:
        talks = [Conversation(audio, i) for i in range(count)]
        batched = [_core(models, i) for i in range(count)]
        alone = [_core(models, i) for i in range(count)]
        for core in alone:
            warm_up(core)

        batch = SessionBatch.of(batched[0])
        times: dict[str, list[float]] = {"batched": [], "one_by_one": []}
        for tick in tqdm(range(ticks + 1), desc=f"{count} sessions", unit="tick"):
            steps = {
                "batched": partial(_tick_batched, batch, talks, batched, tick),
                "one_by_one": partial(_tick_one_by_one, talks, alone, tick),
            }
            for name, step in steps.items():
                ms = _ms(step, device)
                if tick:  # the first tick fills the audio windows of every session
                    times[name].append(ms)
        p50 = {name: percentiles(values)["p50"] for name, values in times.items()}
        rows.append(
            {
                "sessions": count,
                "tick_ms_p50": p50,
                "frames_per_s": {name: round(count * 1000 / ms, 2) for name, ms in p50.items()},
                "ratio": round(p50["batched"] / p50["one_by_one"], 3),
                "ticks": ticks,
            }
        )
    return rows


def _tick_batched(batch: SessionBatch, talks: list[Conversation], cores: list[StreamCore], tick: int) -> None:
    """Every session hears its tick, then one batch per stage generates and renders them all."""
    for talk, core in zip(talks, cores, strict=True):
        talk.hear(core, tick)
    batch.render(cores, batch.generate(cores, ladder(5)[0]))


def _tick_one_by_one(talks: list[Conversation], cores: list[StreamCore], tick: int) -> None:
    """Every session hears, generates and renders its tick by itself, as its own engine does."""
    for talk, core in zip(talks, cores, strict=True):
        talk.hear(core, tick)
        core.render(core.generate(ladder(5)[0]))


def _closeness(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Latent rows [N, F]: the smallest cosine and the relative L2 of the whole."""
    cosine = torch.nn.functional.cosine_similarity(reference.float(), other.float(), dim=-1).min()
    relative = (other.float() - reference.float()).norm() / reference.float().norm()
    return {"cosine_min": round(float(cosine), 6), "relative_l2": round(float(relative), 6)}


def _psnr(reference: np.ndarray, other: np.ndarray) -> float:
    mse = float(((reference.astype(np.float64) - other.astype(np.float64)) ** 2).mean())
    return round(10 * math.log10(255**2 / mse), 2) if mse else math.inf


def precision_sweep(models: Models, audio: tuple[np.ndarray, np.ndarray], frames: int) -> dict[str, Any]:
    """Per precision: per-stage ms of ``StreamCore.step`` and the deviation from fp32, per stage and end to end."""
    talk = Conversation(audio, 0)
    noise = torch.randn(frames + 1, models.m0.shape[1], generator=torch.Generator().manual_seed(0))
    runs: dict[str, dict[str, list]] = {}
    for name in PRECISIONS:
        core, run = _core(models, 0, name, noise), {"steps": [], "latents": [], "frames": [], "inputs": []}
        warm_up(core)
        for tick in tqdm(range(frames + 1), desc=name, unit="frame"):
            history = core.history.clone()
            result = core.step(*talk.frame(tick))
            fused, gate = core.window(True)  # generating does not change the window
            run["inputs"].append((history, fused.clone(), gate, noise[tick]))
            if tick:  # the first frame encodes the whole silent prefix: not a live frame
                run["steps"].append(result.timings_ms)
            run["latents"].append(result.latent)
            run["frames"].append(result.rgb)
        runs[name] = run
    reference = runs["fp32"]
    out: dict[str, Any] = {}
    for name, run in runs.items():
        stats = {stage: stat["p50"] for stage, stat in stage_stats(run["steps"]).items()}
        reference_total = stage_stats(reference["steps"])["total"]["p50"]
        out[name] = {
            "step_ms_p50": stats,
            "speedup_vs_fp32": round(reference_total / stats["total"], 3),
            "per_stage_vs_fp32": _stage_deviation(models, reference, Precision(name, models.m0.device)),
            "end_to_end_vs_fp32": {
                "latent": _closeness(torch.stack(reference["latents"]), torch.stack(run["latents"])),
                "frame_psnr_db": _psnr(np.stack(reference["frames"]), np.stack(run["frames"])),
                "frames": frames + 1,
            },
        }
    return out


def _stage_deviation(models: Models, reference: dict[str, list], precision: Precision) -> dict[str, Any]:
    """Each stage at ``precision`` on fp32's own inputs, against fp32's outputs."""
    motion, renderer, cfg = models.motion, models.renderer, CfgScales()
    c_ref, c_got, head_got, frames_ref, frames_got = [], [], [], [], []
    with torch.inference_mode():
        for history, fused, gate, noise in reference["inputs"]:
            c_ref.append(motion.condition(history, fused, models.m0, gate).float())
            with precision.autocast():
                c_got.append(motion.condition(history, fused, models.m0, gate).float())
                head_got.append(sample_latent(motion, c_ref[-1], noise, 5, cfg))
        source = reference["latents"][0][None]
        for latent in reference["latents"]:
            frames_ref.append(to_uint8(renderer.render(source, latent[None], models.f_app))[0])
            with precision.autocast():
                frames_got.append(to_uint8(renderer.render(source, latent[None], models.f_app))[0])
    return {
        "transformer_c_n": _closeness(torch.cat(c_ref), torch.cat(c_got)),
        "head_latent": _closeness(torch.stack(reference["latents"]), torch.stack(head_got)),
        "render_psnr_db": _psnr(np.stack(frames_ref), np.stack(frames_got)),
    }


def main(argv: list[str] | None = None, *, out: Path = RESULTS, prog: str = "python -m bench.serving") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N")
    parser.add_argument("--size", choices=("tiny", "full"), action="append", help="model size (repeatable)")
    parser.add_argument("--sessions", type=int, action="append", help="session counts of the sweep (1, 2, 4)")
    parser.add_argument("--ticks", type=int, default=None, help="ticks timed per count (tiny 40, full 3)")
    parser.add_argument("--frames", type=int, default=None, help="frames of the precision sweep (tiny 40, full 4)")
    parser.add_argument("--out", type=Path, default=out, help=f"the JSON written (default {out})")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA device here; run on a machine with a GPU or use cpu")
    samples = get_settings().samples_dir
    samples = samples if samples.is_absolute() else (REPO_ROOT / samples).resolve()
    audio = (read_wav_16k(samples / "dyadic_self.wav"), read_wav_16k(samples / "dyadic_other.wav"))
    result: dict[str, Any] = {"machine": machine(args.device), "gpu_peak_tflops": GPU_PEAK_TFLOPS}
    for size in args.size or ["tiny", "full"]:
        began = time.perf_counter()
        models = build(size, args.device, samples)
        ticks = args.ticks or (40 if size == "tiny" else 3)
        frames = args.frames or (40 if size == "tiny" else 4)
        result[size] = {
            "flops": flops(models, audio),
            "sessions": sessions_sweep(models, audio, args.sessions or [1, 2, 4], ticks, device),
            "precision": precision_sweep(models, audio, frames),
            "bench_seconds": round(time.perf_counter() - began, 1),
        }
        write_json_atomic(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


def run(argv: list[str] | None = None, **kwargs: Any) -> int:
    """``main``, with bad input reported in one line and exit status 2."""
    try:
        return main(argv, **kwargs)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(run())
