"""Warming a session's stages up before its first live frame, and timing them (README, "Real time that holds").

Lazy initialisation, tracing (CPU) and CUDA graph capture happen on the first call of each stage: ``warm_up`` makes
that call on silence, for the sampler of every rung the session may use, without touching the session's state, so
that no live frame pays for it. A second call measures the warm stages; the quality ladder starts from those costs
(``QualityGovernor.start_at``).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from avatar.motion.audio import SAMPLES_PER_FRAME
from avatar.stream.audio import StreamFeatures
from avatar.stream.batch import SessionBatch
from avatar.stream.core import StreamCore
from avatar.stream.ladder import Rung, StageCosts
from avatar.stream.timing import ms_since


@torch.inference_mode()
def warm_up(core: StreamCore, rungs: tuple[Rung, ...] = ()) -> StageCosts:
    """Run every stage of ``core`` once on silence, every sampler of ``rungs`` and of the full rung; returns what
    each stage took."""
    silence = np.zeros(SAMPLES_PER_FRAME, dtype=np.float32)
    fused, scratches = _silent_window(core)
    audio_ms = 0.0
    for scratch, ahead in scratches:
        scratch.commit(silence)
        started = time.perf_counter()
        scratch.recent(1, ahead)  # what a live frame encodes
        audio_ms += ms_since(started, core.device)
    noise = torch.zeros(1, core.config.face_dim, device=core.device)
    latent, sampler_ms = noise[0], {}
    for steps, guidance in _sampler_settings(core, rungs):
        window, gate = core.branches_of(fused, guidance)
        started = time.perf_counter()
        with core.precision.autocast():
            c_n = core.stages.condition(core.history, window, core.m0, gate)
            latent = core.stages.sampler(steps, guidance)(c_n, noise)
        sampler_ms[(steps, guidance)] = ms_since(started, core.device)
    render_ms = 0.0
    if core.stages.can_render and core.f_app is not None:
        target = latent.reshape(1, -1).float()
        started = time.perf_counter()
        core.stages.render(target, target, core.f_app)  # as a live frame: uint8 on the device, then the host copy
        render_ms = ms_since(started, core.device)
    return StageCosts(audio_ms, sampler_ms, render_ms)


@torch.inference_mode()
def warm_up_batch(batch: SessionBatch, core: StreamCore, count: int, rungs: tuple[Rung, ...] = ()) -> None:
    """Run ``batch``'s stages once for ``count`` sessions like ``core`` (the sampler of every rung, the renderer) on
    scratch copies of it, so that a live round of ``count`` conversations does not trace or capture them. ``core``'s
    state is not touched."""
    scratch = copy.copy(core)
    scratch.fused = _silent_window(core)[0]
    scratch.noise = lambda j: torch.zeros(core.config.face_dim, device=core.device)  # not the session's draws
    cores, latents = [scratch], [torch.zeros(core.config.face_dim, device=core.device)]
    for steps, guidance in _sampler_settings(core, rungs):
        cores = [copy.copy(scratch) for _ in range(count)]
        latents = batch.generate(cores, Rung("warm-up", steps, guidance, 1, 1))
    if core.renderer is not None and core.f_app is not None:
        batch.render(cores, latents)


def _silent_window(core: StreamCore) -> tuple[torch.Tensor, list[tuple[StreamFeatures, np.ndarray]]]:
    """The fused audio tokens [B, 94, H] of a first window of silence, from fresh copies of ``core``'s audio streams
    (returned with their lookahead, to go on with)."""
    silence = np.zeros(SAMPLES_PER_FRAME, dtype=np.float32)
    scratches = [
        (core.features[name].fresh(), np.zeros(size, dtype=np.float32))
        for name, size in (("self", core.lookahead_self), ("other", core.lookahead_other))
    ]
    feats = [scratch.first(silence, ahead) for scratch, ahead in scratches]
    return core.motion.fuse(feats[0], feats[1], core.branches), scratches


def _sampler_settings(core: StreamCore, rungs: tuple[Rung, ...]) -> list[tuple[int, bool]]:
    """The (steps, guidance) of the full rung and of ``rungs``, each once."""
    return sorted({(r.steps, r.guidance) for r in (core.full_rung, *rungs)})
