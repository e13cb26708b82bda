"""The per-frame step of streaming DyStream (docs/architecture.md §9): 40 ms of audio per stream in, one latent and
frame out.

``StreamCore`` is synchronous and unpaced; the real-time engine (``avatar.stream.engine.AvatarStream``) wraps it, and
``StreamCore.run_clip`` drives it over a whole clip (the fidelity check against ``avatar.offline.generate``).
Between frames it keeps everything that does not change or only slides:

- per stream, the audio timeline and the cached encoding of silence (``StreamFeatures``);
- the fused audio tokens of the last 94 frames, per CFG branch (a rolling window; each frame fuses only its own);
- the motion history (94 × 512, starting as 94 copies of m0), the anchor m0, f_app and the flow source;
- the noise generator (``seed``: the same draws as ``offline.generate(seed=...)``).

Per frame: features of the new 40 ms (+ lookahead) → fuse → transformer on the window (``condition``) → flow head
with CFG (``sample_latent``) → roll the history → render ``flow_estimator(source, latent)`` with ``f_app``.
The flow source is the first generated latent, as the official ``app.py`` renders (every frame is rendered after
its latent, so there is never a frame to render before it); ``flow_source="anchor"`` renders from m0 as the
forks do.

Its fixed-shape stages run traced on the CPU or from CUDA graphs (``avatar.stream.stages``), warmed up before a live
frame by ``avatar.stream.warm_up``; its start latents come from ``avatar.stream.noise``.

Timeline: the step for frame j gets the frame's own 40 ms of each stream plus that stream's lookahead (the audio
right after it). Generated frame j conditions on audio frame j (its last transformer token), as offline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from avatar.errors import InputError
from avatar.motion.audio import SAMPLES_PER_FRAME
from avatar.motion.generator import MotionGenerator
from avatar.precision import Precision
from avatar.renderer import Renderer
from avatar.sampling.cfg import ALL_BRANCH, CfgScales, branch_gates
from avatar.sampling.sampler import check_steps
from avatar.stream.audio import StreamFeatures
from avatar.stream.ladder import Rung
from avatar.stream.noise import NoiseFn, seeded_noise
from avatar.stream.stages import StepStages
from avatar.stream.timing import StageTimer


@dataclass
class StepResult:
    index: int  # generated frame number (0 = first frame of the session)
    latent: torch.Tensor  # [F] float32 motion latent
    rgb: np.ndarray | None  # [S, S, 3] uint8 (None when rendering is off)
    timings_ms: dict[str, float] = field(default_factory=dict)


class StreamCore:
    """DyStream, one 40 ms frame at a time. Not thread-safe: one thread steps it."""

    def __init__(
        self,
        motion: MotionGenerator,
        renderer: Renderer | None,
        m0: torch.Tensor | np.ndarray,
        f_app: torch.Tensor | None,
        *,
        lookahead_self_ms: float = 60,
        lookahead_other_ms: float = 60,
        left_context_ms: float = 2000,
        full_context: bool = False,
        steps: int = 5,
        cfg: CfgScales | None = None,
        noise: NoiseFn | None = None,
        seed: int | None = None,
        flow_source: Literal["first", "anchor"] = "first",
        precision: str = "fp32",
        cuda_graphs: bool = True,
        trace: bool = True,
    ) -> None:
        _check_options(lookahead_self_ms, lookahead_other_ms, left_context_ms, full_context, flow_source)
        if renderer is not None and f_app is None:
            raise InputError("f_app is required to render: pass the portrait's appearance volume (encode_portrait)")
        self.motion = motion
        self.renderer = renderer
        self.config = motion.config
        self.device = motion.device
        self.dtype = motion.dtype
        self.steps = check_steps(steps)
        self.cfg = cfg or CfgScales()
        self.full_context = full_context
        self.lookahead_self = round(lookahead_self_ms * 16)
        self.lookahead_other = round(lookahead_other_ms * 16)
        self.flow_source = flow_source
        face = self.config.face_dim
        self.m0 = torch.as_tensor(np.asarray(m0, dtype=np.float32) if isinstance(m0, np.ndarray) else m0)
        self.m0 = self.m0.reshape(1, -1).to(device=self.device, dtype=self.dtype)
        if self.m0.shape[1] != face:
            raise InputError(f"m0 must be one motion latent of {face} values, got shape {tuple(self.m0.shape)}")
        self.f_app = f_app.to(renderer.device, renderer.dtype) if renderer is not None and f_app is not None else None
        self.noise = noise or seeded_noise(seed, face, self.device)

        context, left = self.config.context, int(np.ceil(left_context_ms / 40))
        self.features = {
            name: StreamFeatures(
                encoder,
                prefix_frames=context,
                left_context_frames=left,
                full_context=full_context,
                device=self.device,
                dtype=self.dtype,
                trace=trace and self.device.type == "cpu",
                cuda_graphs=cuda_graphs,
            )
            for name, encoder in (("self", motion.audio_encoder_face), ("other", motion.audio_encoder_face_other))
        }
        self.branches = self.cfg.branches
        self.anchor_gate = branch_gates(self.branches, device=self.device, dtype=self.dtype).anchor
        self.history = self.m0.expand(context, -1).clone()  # [94, F], oldest first
        self.fused: torch.Tensor | None = None  # [B, 94, H], the audio token of each history position
        self.source: torch.Tensor | None = self.m0.clone() if flow_source == "anchor" else None
        self.index = 0
        self.full_rung = Rung("full", self.steps, True, 1, 1)
        self._all_branch = self.branches.index(ALL_BRANCH)
        self._held = 0  # frames since the last generated latent, holding its value in the history
        self._stand_ins = 0  # newest frames whose token is a stand-in (``hear(encode=False)``)

        self.precision = Precision(precision, self.device)
        # every fixed-shape stage traced on the CPU, replayed from a CUDA graph on CUDA (the audio encoders: above)
        self.stages = StepStages(motion, renderer, self.cfg, self.precision, trace=trace, cuda_graphs=cuda_graphs)

    @torch.inference_mode()
    def step(
        self,
        self_audio: np.ndarray,
        other_audio: np.ndarray,
        self_lookahead: np.ndarray | None = None,
        other_lookahead: np.ndarray | None = None,
        *,
        render: bool = True,
        rung: Rung | None = None,
    ) -> StepResult:
        """One frame from the next 640 samples of each stream (float32) and the audio after them.

        A lookahead shorter than configured is zero-padded (unknown future = silence); in full-context mode it is
        the whole rest of the clip. ``rung`` (default: full quality) sets the sampler's steps and guidance.
        """
        timer = StageTimer(self.device)
        self.hear(self_audio, other_audio, self_lookahead, other_lookahead)
        timer.lap("audio")
        latent = self.generate(rung or self.full_rung, timer)
        rgb = self.render(latent) if render and self.renderer is not None else None
        timer.lap("render")
        return StepResult(self.index - 1, latent, rgb, timer.done())

    @torch.inference_mode()
    def hear(
        self,
        self_audio: np.ndarray,
        other_audio: np.ndarray,
        self_lookahead: np.ndarray | None = None,
        other_lookahead: np.ndarray | None = None,
        *,
        encode: bool = True,
    ) -> None:
        """Take the next frame's audio into the window: its fused audio token. ``encode=False`` (a frame that gets
        no latent of its own, or one the engine had no time for): the previous token stands in for it, and its
        samples enter the audio context; the next encoded frame's window then encodes it too (one encoder run for
        both) and its token replaces the stand-in, while still in the window."""
        if self.fused is None:
            self.fused = self._audio_tokens(self_audio, other_audio, self_lookahead, other_lookahead)
            return
        for name, audio in (("self", self_audio), ("other", other_audio)):
            self.features[name].commit(_frame(audio, f"{name} audio"))
        if not encode:
            self._stand_ins += 1
            self.fused = torch.cat([self.fused[:, 1:], self.fused[:, -1:]], dim=1)
            return
        window = self.features["self"].left_context_frames + 1  # the frames one encoder window covers
        count = min(1 + self._stand_ins, window, self.fused.shape[1])
        self._stand_ins = 0
        tokens = self._recent_tokens(count, self_lookahead, other_lookahead)
        self.fused = torch.cat([self.fused[:, 1 : self.fused.shape[1] - count + 1], tokens], dim=1)

    @torch.inference_mode()
    def skip(self) -> None:
        """The frame whose audio was just heard gets no latent of its own: the history holds the last latent there
        until the next generated one replaces it by interpolation (``generate``)."""
        self.noise(self.index)  # its draw, so that later frames get the draws they would have had
        self.history = torch.cat([self.history[1:], self.history[-1:]])
        self._held += 1
        self.index += 1

    @torch.inference_mode()
    def generate(self, rung: Rung, timer: StageTimer | None = None) -> torch.Tensor:
        """The latent [F] of the frame whose audio was just heard (transformer, then the flow head with ``rung``'s
        steps and guidance). Frames skipped since the last latent get the linear interpolation between the two."""
        fused, gate = self.window(rung.guidance)
        with self.precision.autocast():
            c_n = self.stages.condition(self.history, fused, self.m0, gate)
            if timer is not None:
                timer.lap("transformer")
            latent = self.stages.sampler(rung.steps, rung.guidance)(c_n, self.next_noise()).float()
        self.take(latent)
        if timer is not None:
            timer.lap("head")
        return latent

    def window(self, guidance: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused audio tokens [B, 94, H] and anchor gates [B] of the frame whose audio was just heard, for the
        guidance branches (or the ``all`` branch alone)."""
        assert self.fused is not None, "hear() the frame's audio before generating it"
        return self.branches_of(self.fused, guidance)

    def branches_of(self, fused: torch.Tensor, guidance: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused audio tokens [B, 94, H] and anchor gates [B] a rung runs: every guidance branch, or the ``all``
        branch alone."""
        gate = self.anchor_gate
        if not guidance:
            fused, gate = fused[self._all_branch :][:1], gate[self._all_branch :][:1]
        return fused, gate

    def next_noise(self) -> torch.Tensor:
        """The start latent [1, F] of the frame being generated."""
        return self.noise(self.index).reshape(1, -1).to(self.device, torch.float32)

    def take(self, latent: torch.Tensor) -> None:
        """Enter the generated latent [F] into the history (after the frames skipped since the last one, which get
        the interpolation between the two), and move on to the next frame."""
        self.history = torch.cat([self.history[1:], latent[None].to(self.history.dtype)])
        if self._held:
            before = self.history[-self._held - 2]
            weights = torch.arange(1, self._held + 1, device=self.device, dtype=self.history.dtype) / (self._held + 1)
            self.history[-self._held - 1 : -1] = before + weights[:, None] * (self.history[-1] - before)
            self._held = 0
        if self.source is None:
            self.source = latent[None].clone()
        self.index += 1

    @torch.inference_mode()
    def render(self, latent: torch.Tensor, after: torch.cuda.Event | None = None) -> np.ndarray:
        """The frame [S, S, 3] uint8 of a generated latent [F]. Only reads state set by the first ``step``, so it
        may run on another thread than ``step`` (the engine renders frame k while it generates frame k + 1);
        ``after``: the CUDA event the latent is ready at on that thread's stream."""
        source, f_app = self.render_inputs()
        return self.stages.render(source, latent.reshape(1, -1), f_app, after).cpu().numpy()[0]  # on the host: no copy

    def render_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow source [1, F] and the appearance volume [1, …] this session's frames are rendered from."""
        if self.renderer is None or self.f_app is None:
            raise InputError("this StreamCore has no renderer: pass one (and f_app) to render frames")
        if self.source is None:
            raise InputError("render() needs a generated latent first: call step()")
        return self.source, self.f_app

    def _audio_tokens(
        self,
        self_audio: np.ndarray,
        other_audio: np.ndarray,
        self_lookahead: np.ndarray | None,
        other_lookahead: np.ndarray | None,
    ) -> torch.Tensor:
        """Fused tokens [B, 94, H] of the first window (the silent prefix and the first frame)."""
        feats = [
            self.features[name].first(_frame(audio, f"{name} audio"), self._lookahead(ahead, size))
            for name, audio, ahead, size in (
                ("self", self_audio, self_lookahead, self.lookahead_self),
                ("other", other_audio, other_lookahead, self.lookahead_other),
            )
        ]
        return self.motion.fuse(feats[0], feats[1], self.branches)

    def _recent_tokens(
        self, count: int, self_lookahead: np.ndarray | None, other_lookahead: np.ndarray | None
    ) -> torch.Tensor:
        """Fused tokens [B, count, H] of the newest ``count`` committed frames."""
        feats = [
            self.features[name].recent(count, self._lookahead(ahead, size))
            for name, ahead, size in (
                ("self", self_lookahead, self.lookahead_self),
                ("other", other_lookahead, self.lookahead_other),
            )
        ]
        return self.motion.fuse(feats[0], feats[1], self.branches)

    def _lookahead(self, ahead: np.ndarray | None, size: int) -> np.ndarray:
        """The audio after a frame, as the encoder window takes it: ``size`` samples, zero-padded (the whole rest of
        the clip in full-context mode)."""
        ahead = np.zeros(0, np.float32) if ahead is None else np.asarray(ahead, dtype=np.float32).reshape(-1)
        if self.full_context:
            return ahead
        return ahead[:size] if ahead.size >= size else np.pad(ahead, (0, size - ahead.size))

    def run_clip(
        self, audio_self: np.ndarray, audio_other: np.ndarray | None = None, *, render: bool = False
    ) -> Iterator[StepResult]:
        """Step over a whole clip (16 kHz float32), frame by frame, as a live stream would (no pacing).

        Yields floor(N / 640) − 1 frames like ``offline.generate`` (the last 40 ms only serve as lookahead).
        The lookahead given with each frame is the configured one, or the rest of the clip in full-context mode.
        """
        audio_self = np.asarray(audio_self, dtype=np.float32)
        audio_other = np.zeros_like(audio_self) if audio_other is None else np.asarray(audio_other, np.float32)
        n = max(audio_self.size, audio_other.size)
        audio_self, audio_other = (
            np.pad(audio_self, (0, n - audio_self.size)),
            np.pad(audio_other, (0, n - audio_other.size)),
        )
        for j in range(n // SAMPLES_PER_FRAME - 1):
            start, end = j * SAMPLES_PER_FRAME, (j + 1) * SAMPLES_PER_FRAME
            if self.full_context:
                ahead_self, ahead_other = audio_self[end:], audio_other[end:]
            else:
                ahead_self, ahead_other = (
                    audio_self[end : end + self.lookahead_self],
                    audio_other[end : end + self.lookahead_other],
                )
            yield self.step(audio_self[start:end], audio_other[start:end], ahead_self, ahead_other, render=render)


def _check_options(
    lookahead_self_ms: float, lookahead_other_ms: float, left_context_ms: float, full_context: bool, flow_source: str
) -> None:
    for name, value in (("lookahead_self_ms", lookahead_self_ms), ("lookahead_other_ms", lookahead_other_ms)):
        if not 0 <= value <= 200 and not full_context:
            raise InputError(f"{name} must be 0–200 ms, got {value} (DYSTREAM_STREAM__{name.upper()})")
    if left_context_ms < 0:
        raise InputError(f"left_context_ms must be >= 0, got {left_context_ms} (DYSTREAM_STREAM__LEFT_CONTEXT_MS)")
    if flow_source not in ("first", "anchor"):
        raise InputError(f"flow_source must be 'first' or 'anchor', got {flow_source!r}")


def _frame(audio: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if x.size != SAMPLES_PER_FRAME:
        raise InputError(f"{name} must be exactly {SAMPLES_PER_FRAME} samples (40 ms at 16 kHz), got {x.size}")
    return x
