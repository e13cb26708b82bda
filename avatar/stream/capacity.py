"""How many live avatars one device serves: the cost of a tick at a quality rung, measured, and what it allows.

Each conversation runs its own engine (``AvatarStream``: a motion and a render thread). At a rung, a tick costs the
motion step every ``motion_every`` ticks and a render every ``render_every``. On the CPU the engines of all
conversations share the cores; on a GPU they share the device. A worker that keeps ``UTILISATION`` of that for its
conversations serves ``capacity`` of them at the rung; the quality ladder's floor is the rung a worker must still be
able to hold for every conversation it accepted (README, "Real time that holds").
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from avatar.stream.core import StreamCore
from avatar.stream.ladder import Rung
from avatar.stream.warm_up import warm_up

UTILISATION = 0.8  # of the cores or the device, leaving room for LiveKit, the VADs and bursts
TICK_MS = 40.0


@dataclass(frozen=True)
class TickCost:
    motion_ms: float  # per tick, at the rung (its motion step every motion_every ticks)
    render_ms: float  # per tick, at the rung (a render every render_every ticks)

    @property
    def total_ms(self) -> float:
        return self.motion_ms + self.render_ms


def measure_tick_cost(core: StreamCore, rung: Rung, ticks: int = 24) -> TickCost:
    """Run ``core`` at ``rung`` for ``ticks`` ticks of speech-like noise (after a warm-up) and time it."""
    warm_up(core, (rung,))
    rng = np.random.default_rng(0)
    motion_s = render_s = 0.0
    latent = None
    for j in range(ticks + rung.motion_every):
        audio = rng.normal(0.0, 0.1, 640 * 2).astype(np.float32)
        started = time.perf_counter()
        core.hear(audio[:640], audio[640:], audio[640:], audio[640:])
        if j % rung.motion_every == 0:
            latent = core.generate(rung)
        else:
            core.skip()
        if core.device.type == "cuda":
            torch.cuda.synchronize(core.device)
        if j >= rung.motion_every:  # the first generation warms the caches
            motion_s += time.perf_counter() - started
        if j % rung.render_every == 0 and latent is not None and core.renderer is not None:
            started = time.perf_counter()
            core.render(latent)
            if j >= rung.motion_every:
                render_s += time.perf_counter() - started
    return TickCost(motion_s * 1000 / ticks, render_s * 1000 / ticks)


def capacity(cost: TickCost, device: torch.device, cores: int | None = None) -> int:
    """Conversations a device keeps at the rung ``cost`` was measured at (at least 1)."""
    shared = 1 if device.type == "cuda" else cores or os.cpu_count() or 1  # one device in time, or the cores
    budget = UTILISATION * TICK_MS * shared
    return max(1, math.floor(budget / max(cost.total_ms, 1e-3)))
