"""Stage times of the streaming step, in milliseconds (the benchmarks, the quality ladder, the engine's stats)."""

from __future__ import annotations

import time

import torch

STAGES = ("audio", "transformer", "head", "render", "total")


def ms_since(started: float, device: torch.device) -> float:
    """Milliseconds since ``started`` (``perf_counter``), once the calling thread's CUDA stream is done."""
    if device.type == "cuda":
        torch.cuda.current_stream().synchronize()
    return (time.perf_counter() - started) * 1000


class StageTimer:
    """Per-stage wall times in ms. On CUDA with ``synchronize`` (profiling: ``StreamCore.step``, the benchmarks) the
    calling thread's stream is synchronised at each boundary (not the device: the renderer's stream keeps running),
    so the stages are measured, not just queued. The live engine times without it: its motion thread never waits
    for the device, its laps are the time to queue each stage, and the render, which waits for the finished frame,
    carries the device's time."""

    def __init__(self, device: torch.device, synchronize: bool = True) -> None:
        self.cuda = device.type == "cuda" and synchronize
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        if self.cuda:
            torch.cuda.current_stream().synchronize()
        now = time.perf_counter()
        self.laps[stage] = (now - self.last) * 1000
        self.last = now

    def done(self) -> dict[str, float]:
        self.laps["total"] = (self.last - self.start) * 1000
        return self.laps
