"""Many conversations on one device: the motion step and the render of several ``StreamCore`` sessions as one
batch each (README, "Many avatars on one device").

A session's own step already batches the guidance branches (docs/architecture.md §7). Here the batch dimension
carries sessions × branches: one transformer window call for every session's window, one flow-head call per
sampler step, one renderer call for every session's frame. Each session keeps its own state (audio timeline,
history, anchor, noise, flow source, appearance volume) and gets the latent and frame it would get stepped alone;
sessions join and leave between ticks simply by being in the list or not.

Sessions batched together share the motion generator, the renderer, the guidance scales and the precision, and
are generated at one rung (the sampler's steps and guidance); ``group_by_rung`` splits a tick's sessions into such
batches. ``SessionBatch`` keeps the traces (CPU) and CUDA graphs of the batched stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from avatar.errors import InputError
from avatar.motion.generator import MotionGenerator
from avatar.precision import Precision
from avatar.renderer import Renderer, to_uint8
from avatar.sampling.cfg import CfgScales, NoGuidance
from avatar.sampling.sampler import sample_latents
from avatar.stream.core import StreamCore
from avatar.stream.ladder import Rung
from avatar.stream.stages import fast_call
from avatar.stream.timing import StageTimer


def group_by_rung(requests: Sequence[tuple[StreamCore, Rung]]) -> list[tuple[list[StreamCore], Rung]]:
    """Sessions to generate this tick, grouped into batches of one sampler setting (steps, guidance), in order."""
    groups: dict[tuple[int, bool], tuple[list[StreamCore], Rung]] = {}
    for core, rung in requests:
        groups.setdefault((rung.steps, rung.guidance), ([], rung))[0].append(core)
    return list(groups.values())


class SessionBatch:
    """Steps sessions of one motion generator, renderer, guidance and precision together; each stage traced (CPU)
    or replayed from a CUDA graph per session count (CUDA), as a session's own step is (``StreamCore``)."""

    def __init__(
        self,
        motion: MotionGenerator,
        renderer: Renderer | None,
        cfg: CfgScales,
        precision: str,
        *,
        trace: bool = True,
        cuda_graphs: bool = True,
    ) -> None:
        self.motion = motion
        self.renderer = renderer
        self.cfg = cfg
        self.precision = Precision(precision, motion.device)
        self.trace = trace
        self.cuda_graphs = cuda_graphs
        self._calls: dict[tuple, Callable[..., torch.Tensor]] = {}

    @classmethod
    def of(cls, core: StreamCore) -> SessionBatch:
        """A batch for sessions like ``core`` (its models, guidance and precision)."""
        return cls(core.motion, core.renderer, core.cfg, core.precision.name)

    @torch.inference_mode()
    def generate(
        self, cores: Sequence[StreamCore], rung: Rung, timers: Sequence[StageTimer] = ()
    ) -> list[torch.Tensor]:
        """``core.generate(rung)`` for every session at once: the latent [F] of each one's newest heard frame.
        ``timers``: the sessions' stage timers, each lapped at the transformer and the head as ``generate`` does."""
        self._check(cores)
        windows = [core.window(rung.guidance) for core in cores]
        past = torch.stack([core.history for core in cores])  # [N, 94, F]
        fused = torch.cat([fused for fused, _ in windows])  # [N·B, 94, H], session-major
        gates = torch.cat([gate for _, gate in windows])
        anchors = torch.cat([core.m0 for core in cores])  # [N, F]
        motion, count = self.motion, len(cores)
        cfg = self.cfg if rung.guidance else NoGuidance()

        def sample(c_n: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return sample_latents(motion, c_n, noise, rung.steps, cfg)

        condition = self._call(("transformer", count), motion.condition, [motion], motion.device)
        sampler = self._call(("sampler", rung.steps, rung.guidance, count), sample, [motion], motion.device)
        with self.precision.autocast():
            c_n = condition(past, fused, anchors, gates)
            for timer in timers:
                timer.lap("transformer")
            latents = sampler(c_n, torch.cat([core.next_noise() for core in cores])).float()
        for core, latent in zip(cores, latents, strict=True):
            core.take(latent)
        for timer in timers:
            timer.lap("head")
        return list(latents)

    @torch.inference_mode()
    def frames(self, cores: Sequence[StreamCore], latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each session's frame of its latent [F], rendered in one renderer call: [N, 3, S, S] in [-1, 1]."""
        self._check(cores)
        if len(latents) != len(cores):
            raise InputError(f"got {len(latents)} latents for {len(cores)} sessions: one latent per session")
        inputs = [core.render_inputs() for core in cores]
        renderer = self.renderer
        assert renderer is not None  # render_inputs checked the sessions have it
        render = self._call(("renderer", len(cores)), renderer.render, [renderer], renderer.device)
        sources = torch.cat([source for source, _ in inputs])
        f_apps = torch.cat([f_app for _, f_app in inputs])
        targets = torch.stack([latent.reshape(-1) for latent in latents]).to(renderer.device, renderer.dtype)
        with self.precision.autocast():
            return render(sources, targets, f_apps)

    def render(self, cores: Sequence[StreamCore], latents: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """``core.render(latent)`` for every session at once: [S, S, 3] uint8 frames."""
        return list(to_uint8(self.frames(cores, latents)))

    def _check(self, cores: Sequence[StreamCore]) -> None:
        if not cores:
            raise InputError("a batch needs at least one session")
        for core in cores:
            if core.motion is not self.motion or core.renderer is not self.renderer:
                raise InputError("sessions batched together must share one motion generator and one renderer")
            if core.cfg != self.cfg or core.precision.name != self.precision.name:
                raise InputError("sessions batched together must share the guidance scales and the precision")

    def _call(
        self, key: tuple, fn: Callable[..., torch.Tensor], modules: list[torch.nn.Module], device: torch.device
    ) -> Callable[..., torch.Tensor]:
        """``fn`` as a session's own step runs it (``fast_call``): one CUDA graph per ``key``, session count
        included; on the CPU one trace per input shape, which the session count is part of."""
        stage = key if device.type == "cuda" else key[:-1]
        if stage not in self._calls:
            name = " ".join(map(str, stage))
            self._calls[stage] = fast_call(fn, name, modules, device, trace=self.trace, cuda_graphs=self.cuda_graphs)
        return self._calls[stage]
