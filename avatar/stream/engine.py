"""The real-time DyStream engine: one frame every 40 ms from two live audio streams, audio first (README, "Real
time that holds").

``AvatarStream`` runs ``StreamCore`` behind a clock and exposes an asyncio API (no LiveKit here):

- ``push_self`` / ``end_self_segment`` / ``clear_self``: the agent's speech, in segments (``SelfQueue``);
- ``push_other``: the user's live audio (``LiveBuffer``);
- ``async for item in stream``: from ``start()`` on, one ``AudioTick`` every 40 ms (exactly the 40 ms of self audio
  that tick plays, idle ticks included) and, separately, a ``StreamFrame`` (the picture of tick ``index``) as soon as
  it is rendered.

The clock runs on the event loop and owns the timeline: at each tick it takes 40 ms of each stream and hands the
self audio out at once, whatever the model is doing, so the voice keeps real-time rate and never waits for a
picture. The tick then goes to the motion thread, which always works on the newest tick: the audio of every tick
enters the model's window, but when it is behind it generates a latent only for the newest and interpolates the ones
in between. On a rung that skips ticks, the ticks it generates and renders follow the sound onsets of the agent's
voice (``avatar.stream.keyframes``). The render thread always renders the newest latent. A picture that comes too
late for its tick is dropped by the publisher, which repeats the last one. ``QualityGovernor``
(``avatar.stream.ladder``) moves the engine down the quality ladder when a thread cannot keep up and back up with
hysteresis. The two model threads run at a lower CPU priority (``stream.worker_nice``) than the event loop and
LiveKit's media threads, the motion thread lower still (``stream.motion_extra_nice``: a picture has a deadline, the
audio of the ticks between pictures has none), and the process's GIL switch interval is set from
``stream.gil_switch_interval_ms`` (Python's 5 ms by default; shorter lets the loop, which releases the GIL at every
native call, take it back sooner from the model threads).

The model threads are those of a ``DeviceEngine`` (``avatar.stream.device``): the stream's own, or with
``stream.batch_sessions`` the process's, shared with its other conversations and stepping them in batches.

``start()`` first runs every stage once for every rung (``avatar.stream.warm_up``: tracing, CUDA graph capture) off
the loop, so the first frame is on time, then once more to time them: the quality ladder starts at the rung those
costs allow (``QualityGovernor.start_at``). ``clear_self`` (interruption) drops the queued self audio at once, and
turns every tick of that segment not yet handed out into silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import torch

from avatar.motion.generator import MotionGenerator
from avatar.renderer import Renderer
from avatar.sampling.cfg import CfgScales
from avatar.settings import ModelSettings, StreamSettings
from avatar.stream.clock import FrameClock
from avatar.stream.core import StreamCore
from avatar.stream.cuda import MotionStream
from avatar.stream.device import DeviceEngine, Latent, Pending
from avatar.stream.frames import AudioTick, StreamFrame
from avatar.stream.handoff import LatentMailbox, TickInbox
from avatar.stream.keyframes import FORESIGHT, Keyframes
from avatar.stream.ladder import QualityGovernor, Rung, ladder, rung_index
from avatar.stream.outbox import Outbox
from avatar.stream.queues import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    LiveBuffer,
    SelfQueue,
    ms_to_samples,
    to_int16,
)
from avatar.stream.stats import FrameStats, summary
from avatar.stream.threads import TORCH_THREADS, lower_priority
from avatar.stream.timing import StageTimer
from avatar.stream.warm_up import warm_up, warm_up_batch

log = logging.getLogger(__name__)

SUMMARY_EVERY_S = 30.0


class Portrait(Protocol):
    """What the engine reads of a prepared portrait (``avatar.media.portrait.PortraitState``)."""

    m0: Any  # [1, 512]
    f_app: Any  # appearance volume


class AvatarStream:
    """DyStream as a live 25 fps stream. Create, ``await start()``, push audio, iterate ticks and frames,
    ``await aclose()``."""

    def __init__(
        self,
        motion: MotionGenerator,
        renderer: Renderer,
        portrait: Portrait,
        *,
        stream: StreamSettings,
        model: ModelSettings,
        noise_seed: int | None = None,
    ) -> None:
        self.settings = stream
        self.fps = float(stream.fps)
        self.core = StreamCore(
            motion,
            renderer,
            _tensor(portrait.m0),
            _tensor(portrait.f_app),
            lookahead_self_ms=stream.lookahead_self_ms,
            lookahead_other_ms=stream.lookahead_other_ms,
            left_context_ms=stream.left_context_ms,
            steps=model.steps,
            cfg=CfgScales.from_settings(model),
            seed=noise_seed if noise_seed is not None else model.seed,
            precision=model.precision,
            cuda_graphs=stream.cuda_graphs,
        )
        self.governor = QualityGovernor(
            ladder(self.core.steps),
            adaptive=stream.adaptive,
            floor=rung_index(stream.floor_rung),
            pinned=rung_index(stream.pinned_rung) if stream.pinned_rung else None,
        )
        self._self = SelfQueue(
            self.core.lookahead_self,
            int(stream.max_queued_self_s * SAMPLE_RATE),
            prebuffer=ms_to_samples(stream.self_prebuffer_ms),
            foresight=FORESIGHT,
        )
        self._other = LiveBuffer(self.core.lookahead_other, ms_to_samples(stream.max_other_backlog_ms))
        self._stop = threading.Event()
        self._engine: DeviceEngine | None = None  # the model threads: its own, or the process's (batch_sessions)
        self._clock_task: asyncio.Task[None] | None = None
        self._holds_torch_threads = False
        self.inbox = TickInbox()
        self.mailbox = LatentMailbox()
        self._keyframes = Keyframes()
        self._last_summary = time.perf_counter()
        self._outbox = Outbox()
        self._latest_segment: int | None = None  # newest segment the clock took audio of
        self._clock = FrameClock(self.fps)
        self._frames = FrameStats()
        self._ticks = 0
        self._generated = 0
        self._started_segments: set[int] = set()

    # -- lifecycle

    async def start(self) -> None:
        """Warm the model up and start the clock and the worker threads; ticks begin at once (silence until audio
        is pushed)."""
        if self._engine is not None:
            raise RuntimeError("AvatarStream.start() was already called")
        loop = asyncio.get_running_loop()
        self._outbox.open(loop)
        # the loop gives the GIL up at every native call (LiveKit's FFI, the VAD) and waits for it back: with
        # Python's 5 ms switch interval, behind the model threads, that wait piled up to 100-500 ms stalls
        sys.setswitchinterval(self.settings.gil_switch_interval_ms / 1000.0)
        if self.settings.torch_threads is not None:
            TORCH_THREADS.hold(self.settings.torch_threads)
            self._holds_torch_threads = True
        engine = DeviceEngine.for_session(self.core, self.settings, shared=self.settings.batch_sessions)
        # in a thread at the render thread's priority, so that the measured costs are what the model threads get
        with ThreadPoolExecutor(1, "dystream-warm-up", lower_priority, (self.settings.worker_nice,)) as thread:
            await loop.run_in_executor(thread, warm_up, self.core, self.governor.rungs)
            costs = await loop.run_in_executor(thread, warm_up, self.core, self.governor.rungs)
            if engine.sessions:  # a round of all of them, with this one (rounds of fewer: warmed as they joined)
                count = engine.sessions + 1
                await loop.run_in_executor(thread, warm_up_batch, engine.batch, self.core, count, self.governor.rungs)
        self.governor.start_at(costs, 1000.0 / self.fps)
        self._engine = engine.join(self)
        self._clock_task = asyncio.create_task(self._run_clock(), name="dystream-clock")
        log.info(
            "stream started",
            extra={
                "fps": self.fps,
                "lookahead_self_ms": self.settings.lookahead_self_ms,
                "lookahead_other_ms": self.settings.lookahead_other_ms,
                "device": str(self.core.device),
                "rung": self.governor.rung.name,
                "adaptive": self.governor.adaptive,
                "engine_sessions": self._engine.sessions,
            },
        )

    async def aclose(self) -> None:
        """Stop the clock and the workers and end the iterator."""
        self._stop.set()
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_task
            self._clock_task = None
        if self._engine is not None:
            await self._engine.leave(self)
        self._outbox.close()
        if self._holds_torch_threads:
            TORCH_THREADS.release()
            self._holds_torch_threads = False
        log.info("stream closed", extra=summary(self.stats))

    # -- input (called on the event loop; never blocks it)

    def push_self(self, pcm: np.ndarray) -> int:
        """Append agent speech (16 kHz mono int16 or float32) to the current segment, opening one; returns its id."""
        return self._self.push(pcm)

    def end_self_segment(self) -> None:
        """The current segment is complete: it plays out, then its last tick has ``segment_end``."""
        segment = self._self.end_segment()
        if segment is not None:
            log.debug("self segment complete", extra={"segment": segment})

    def clear_self(self) -> int | None:
        """Interruption: drop all queued self audio and turn the ticks of it not yet handed out into silence;
        returns the segment."""
        segment = self._self.clear()
        if segment is None:  # nothing queued: the last segment may still be in ticks not yet consumed
            latest = self._latest_segment
            segment = latest if latest is not None and latest > self._outbox.last_ended else None
        if segment is None or not self._outbox.interrupt(segment):
            return None
        log.info("self segment interrupted", extra={"segment": segment})
        return segment

    def push_other(self, pcm: np.ndarray) -> None:
        """Live user audio (16 kHz mono int16 or float32), pushed as it arrives."""
        self._other.push(pcm)

    # -- output

    def __aiter__(self) -> AsyncIterator[AudioTick | StreamFrame]:
        return self._outbox.items()

    @property
    def stats(self) -> dict[str, Any]:
        """Counts, queue depths, the rung and per-stage p50/p95 (ms) over the last frames."""
        out: dict[str, Any] = {
            "ticks": self._ticks,
            "frames_produced": self._frames.produced,
            "latents_generated": self._generated,
            "latents_not_rendered": self.mailbox.replaced,
            "ticks_waiting": self._outbox.waiting,
            "self_queued_s": self._self.queued / SAMPLE_RATE,
            "other_pending_ms": self._other.pending * 1000 / SAMPLE_RATE,
            "other_inserted_ms": self._other.inserted_total * 1000 / SAMPLE_RATE,
            "other_dropped_ms": self._other.dropped_total * 1000 / SAMPLE_RATE,
            "late_ticks": self._clock.late_ticks,
            "clock_reanchors": self._clock.reanchors,
            "unique_fps": self._frames.unique_fps(),
            "rung": self.governor.rung.name,
            "rung_changes": self.governor.changes,
            "load": dict(self.governor.last_load),
            "engine_sessions": self._engine.sessions if self._engine is not None else 0,
            "engine_batched_calls": self._engine.batched_rounds if self._engine is not None else 0,
        }
        return {**out, **self._frames.percentiles()}

    # -- the clock (on the loop): the timeline, audio first

    async def _run_clock(self) -> None:
        assert self._engine is not None
        self._clock.start(aligned_to=self._engine.epoch if self.settings.batch_sessions else None)
        k = 0
        while not self._stop.is_set():
            delay = self._clock.delay(k)
            if delay > 0:
                await asyncio.sleep(delay)
            self._tick(k)
            k += 1

    def _tick(self, k: int) -> None:
        self_tick, other_tick = self._self.take(), self._other.take()
        if self_tick.segment_id is not None:
            self._latest_segment = self_tick.segment_id
        tick = AudioTick(
            index=k,
            audio=to_int16(self_tick.audio),
            segment_id=self_tick.segment_id,
            segment_end=self_tick.segment_end,
            speaking=self_tick.speaking,
            other_lag_ms=other_tick.lag_ms,
            other_span=other_tick.span,
            taken_at=time.perf_counter(),
        )
        self._ticks += 1
        self._log_segment(tick)
        self._outbox.put(tick)
        self.inbox.put((tick, self_tick, other_tick))

    # -- the model threads' work for this conversation (``avatar.stream.device``): motion (newest tick) → render
    # (newest latent) → the loop

    def open_boxes(self, motion_ready: threading.Condition, render_ready: threading.Condition) -> None:
        """The boxes the engine's threads take this conversation's work from, on their conditions."""
        self.inbox, self.mailbox = TickInbox(motion_ready), LatentMailbox(render_ready)

    def hear_ticks(self, ticks: list[Any], rung: Rung, motion_stream: MotionStream) -> Pending | None:
        """Every tick enters the model's window; the ticks the rung and the sound onsets give a latent get one, the
        newest after the others: it is returned for the engine to generate (with other conversations' newest)."""
        newest = len(ticks) - 1
        for i, (tick, self_tick, other_tick) in enumerate(ticks):
            timer = StageTimer(self.core.device, synchronize=False)  # no wait for the device
            plan = self._keyframes.plan(tick.index, rung, self_tick.audio, self_tick.ahead, behind=newest - i)
            # only a tick that gets a latent encodes its audio, and the ticks since the last one with it
            self.core.hear(
                self_tick.audio, other_tick.audio, self_tick.lookahead, other_tick.lookahead, encode=plan.generate
            )
            timer.lap("audio")
            if not plan.generate:
                self.core.skip()
            elif i == newest:
                return Pending(tick, plan.render, timer)
            else:
                pending = Pending(tick, plan.render, timer)
                self.take_latent(pending, self.core.generate(rung, timer), rung, motion_stream.mark())
        return None

    def take_latent(self, pending: Pending, latent: torch.Tensor, rung: Rung, ready: Any) -> None:
        """A latent generated for ``pending``: for the render thread when it gets a picture."""
        self._generated += 1
        if pending.render:
            replaced = self.mailbox.put((pending.tick, latent, ready, rung, pending.timer.done()))
            self.governor.report("render", 0.0, due=1, missed=int(replaced))

    def show(self, latent: Latent, rgb: np.ndarray, render_s: float) -> None:
        """The picture of ``latent``, rendered in ``render_s``: handed to the consumer."""
        tick, value, _, rung, timings = latent
        timings = {**timings, "render": render_s * 1000, "total": timings["total"] + render_s * 1000}
        frame = StreamFrame(
            index=tick.index,
            rgb=rgb,
            created_at=time.perf_counter(),
            timings_ms=timings,
            rung=rung.name,
            tick=tick,
            latent=value,
        )
        self._frames.record(frame)
        self._outbox.hand_over(frame)
        if frame.created_at - self._last_summary >= SUMMARY_EVERY_S:
            self._last_summary = frame.created_at
            log.info("stream summary", extra=summary(self.stats))

    def fail(self, error: BaseException) -> None:
        """A model thread failed on this conversation: its consumer gets the error, its clock stops."""
        self._stop.set()
        self._outbox.hand_over(error)

    def _log_segment(self, tick: AudioTick) -> None:
        segment = tick.segment_id
        if segment is not None and tick.speaking and segment not in self._started_segments:
            self._started_segments.add(segment)
            log.info("self segment started", extra={"segment": segment, "tick": tick.index})
        if tick.segment_end and segment is not None:
            self._started_segments.discard(segment)
            log.info("self segment ended", extra={"segment": segment, "tick": tick.index})


def _tensor(value: Any) -> torch.Tensor:
    return value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value, dtype=np.float32))


__all__ = ["FRAME_SAMPLES", "AudioTick", "AvatarStream", "StreamFrame"]
