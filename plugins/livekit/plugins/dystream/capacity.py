"""The conversations a worker takes: measured at start on its own device, at the quality ladder's floor rung.

A worker that accepted more conversations than its device holds at the floor would leave every one of them below
real time; LiveKit sends a job only to a worker under its load threshold, so a worker reports itself full at this
many active avatars (``agent.max_jobs`` / ``avatar.max_sessions_per_worker`` override it).
"""

from __future__ import annotations

import os

import torch

from .log import logger
from .models import clear_models, load_models
from .settings import DyStreamSettings


def calibrate_sessions(settings: DyStreamSettings) -> int:
    """Avatars this machine's device serves at ``settings.stream.floor_rung``, from a few ticks measured now."""
    from avatar.stream.capacity import capacity, measure_tick_cost
    from avatar.stream.core import StreamCore
    from avatar.stream.ladder import ladder, rung_index

    models = load_models(settings.model, random_weights=settings.avatar.random_weights, size=settings.avatar.size)
    try:
        size = models.renderer.config.image_size
        with torch.inference_mode():
            m0, f_app = models.renderer.encode_portrait(torch.zeros(1, 3, size, size, device=models.device))
        core = StreamCore(models.motion, models.renderer, m0, f_app, steps=settings.model.steps, seed=0)
        rung = ladder(core.steps)[rung_index(settings.stream.floor_rung)]
        cost = measure_tick_cost(core, rung)
        sessions = capacity(cost, models.device, os.cpu_count())
    finally:
        clear_models()  # the job processes load their own
    logger.info(
        "worker capacity measured",
        extra={
            "sessions": sessions,
            "floor_rung": rung.name,
            "motion_ms_per_tick": round(cost.motion_ms, 2),
            "render_ms_per_tick": round(cost.render_ms, 2),
            "device": str(models.device),
        },
    )
    return sessions
