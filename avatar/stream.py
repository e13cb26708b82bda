"""The real-time DyStream engine: one frame every 40 ms from two live audio streams (issue 4; design.md "The clock",
"Threads").

``AvatarStream`` runs ``StreamCore`` on worker threads, paced by the wall clock (``FrameClock``), behind small
bounded queues, and exposes an asyncio API (no LiveKit here):

- ``push_self`` / ``end_self_segment`` / ``clear_self``: the agent's speech, in segments (``SelfQueue``);
- ``push_other``: the user's live audio (``LiveBuffer``);
- ``async for frame in stream``: one ``StreamFrame`` per tick (the rendered frame plus exactly the 40 ms of self
  audio it shows), from ``start()`` on, idle ticks included.

Each tick the motion thread waits until the tick is due (at most ``run_ahead`` before its slot), waits for a free
place in the output queue (``frame_queue`` frames in flight; a slow consumer blocks the worker, never the loop),
takes 640 samples of each stream plus their lookahead and generates the motion latent; the render thread renders
it (on CUDA, on its own stream) while the next latent is generated, and hands the frame to the loop. The loop only
moves audio and frames: pushes are O(chunk) under a short lock. ``start()`` first runs every stage once
(``StreamCore.warm_up``: lazy initialisation, CUDA graph capture) off the loop, so the first frame is on time.

``clear_self`` (interruption) drops the queued self audio at once, and every frame of that segment that is
rendered but not yet consumed, including the one being computed; the next frames are silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from avatar.cfg import CfgScales
from avatar.motion import MotionGenerator
from avatar.renderer import Renderer
from avatar.stream_clock import FrameClock
from avatar.stream_core import STAGES, StreamCore
from avatar.stream_queues import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    LiveBuffer,
    LiveTick,
    SelfQueue,
    SelfTick,
    ms_to_samples,
    to_int16,
)
from config.log import get_logger
from config.settings import ModelSettings, StreamSettings

log = get_logger(__name__)

SUMMARY_EVERY_S = 30.0
TIMING_WINDOW = 500  # frames kept for the per-stage percentiles in ``stats``


class Portrait(Protocol):
    """What the engine reads of a prepared portrait (``avatar.portrait.PortraitState``)."""

    m0: Any  # [1, 512]
    f_app: Any  # appearance volume


@dataclass(frozen=True)
class StreamFrame:
    index: int  # tick number since start(); media time = index / fps
    rgb: np.ndarray  # [H, W, 3] uint8
    audio: np.ndarray  # [640] int16: exactly the 40 ms of SELF audio this frame shows (zeros when idle)
    segment_id: int | None  # the self segment the audio belongs to (None: idle/silence)
    segment_end: bool  # True on the last frame of a segment that played to its end
    speaking: bool  # the frame carries segment audio
    other_lag_ms: float  # how far this frame's "other" audio trails the live edge when generated
    created_at: float  # time.perf_counter() when the frame was ready
    timings_ms: Mapping[str, float]  # per stage: audio, transformer, head, render, total
    # beyond the contract, for measurements
    other_span: tuple[int, int] = (0, 0)  # indices [start, end) of the received user samples in this frame
    latent: np.ndarray | None = field(default=None, repr=False)  # [512] motion latent


_CLOSED = object()


class AvatarStream:
    """DyStream as a live 25 fps stream. Create, ``await start()``, push audio, iterate frames, ``await aclose()``."""

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
            allow_tf32=model.allow_tf32,
            cuda_graphs=stream.cuda_graphs,
        )
        self._self = SelfQueue(self.core.lookahead_self, int(stream.max_queued_self_s * SAMPLE_RATE))
        self._other = LiveBuffer(self.core.lookahead_other, ms_to_samples(stream.max_other_backlog_ms))
        self._slots = threading.Semaphore(stream.frame_queue)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_before: int | None = None  # torch threads to restore on close
        self._to_render: queue.SimpleQueue[Any] = queue.SimpleQueue()  # bounded by the frame slots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frames: asyncio.Queue[Any] | None = None
        self._cleared: set[int] = set()
        self._latest_segment: int | None = None  # newest segment the worker took audio of
        self._last_ended = 0  # newest segment whose last frame the consumer got
        self._clock = FrameClock(self.fps, stream.run_ahead_ms / 1000)
        self._timings: dict[str, deque[float]] = {stage: deque(maxlen=TIMING_WINDOW) for stage in STAGES}
        self._created: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._produced = 0
        self._consumed = 0
        self._dropped = 0
        self._started_segments: set[int] = set()
        self._error: BaseException | None = None

    # -- lifecycle

    async def start(self) -> None:
        """Warm the model up and start the worker threads; frames begin at once (silence until audio is pushed)."""
        if self._threads:
            raise RuntimeError("AvatarStream.start() was already called")
        self._loop = asyncio.get_running_loop()
        self._frames = asyncio.Queue()
        if self.settings.torch_threads is not None:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.settings.torch_threads)
        await asyncio.to_thread(self.core.warm_up)
        self._threads = [
            threading.Thread(target=self._run_motion, name="dystream-motion", daemon=True),
            threading.Thread(target=self._run_render, name="dystream-render", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "stream started",
            fps=self.fps,
            lookahead_self_ms=self.settings.lookahead_self_ms,
            lookahead_other_ms=self.settings.lookahead_other_ms,
            device=str(self.core.device),
        )

    async def aclose(self) -> None:
        """Stop the workers and end the frame iterator."""
        self._stop.set()
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join)
        if self._frames is not None:
            self._frames.put_nowait(_CLOSED)
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        log.info("stream closed", **self._summary())

    # -- input (called on the event loop; never blocks it)

    def push_self(self, pcm: np.ndarray) -> int:
        """Append agent speech (16 kHz mono int16 or float32) to the current segment, opening one; returns its id."""
        return self._self.push(pcm)

    def end_self_segment(self) -> None:
        """The current segment is complete: it plays out, then its last frame has ``segment_end``."""
        segment = self._self.end_segment()
        if segment is not None:
            log.debug("self segment complete", segment=segment)

    def clear_self(self) -> int | None:
        """Interruption: drop all queued self audio and the unconsumed frames that carry it; returns the segment."""
        segment = self._self.clear()
        if segment is None:  # nothing queued: the last segment may still be in frames not yet consumed
            latest = self._latest_segment
            segment = latest if latest is not None and latest > self._last_ended else None
        if segment is None or segment in self._cleared:
            return None
        self._cleared.add(segment)
        if self._frames is not None:
            kept = []
            while not self._frames.empty():
                item = self._scrub(self._frames.get_nowait())
                if item is not None:
                    kept.append(item)
            for item in kept:
                self._frames.put_nowait(item)
        log.info("self segment interrupted", segment=segment)
        return segment

    def push_other(self, pcm: np.ndarray) -> None:
        """Live user audio (16 kHz mono int16 or float32), pushed as it arrives."""
        self._other.push(pcm)

    # -- output

    def __aiter__(self) -> AsyncIterator[StreamFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamFrame]:
        if self._frames is None:
            raise RuntimeError("call `await stream.start()` before iterating its frames")
        while True:
            item = await self._frames.get()
            if item is _CLOSED:
                self._frames.put_nowait(_CLOSED)  # later iterators end too
                return
            if isinstance(item, BaseException):
                raise item
            self._slots.release()
            self._consumed += 1
            if item.segment_end and item.segment_id is not None:
                self._last_ended = max(self._last_ended, item.segment_id)
            yield item

    @property
    def stats(self) -> dict[str, Any]:
        """Queue depths, frame counts and per-stage p50/p95 (ms) over the last frames."""
        out: dict[str, Any] = {
            "frames_produced": self._produced,
            "frames_consumed": self._consumed,
            "frames_dropped": self._dropped,
            "frames_waiting": self._frames.qsize() if self._frames is not None else 0,
            "self_queued_s": self._self.queued / SAMPLE_RATE,
            "other_pending_ms": self._other.pending * 1000 / SAMPLE_RATE,
            "other_inserted_ms": self._other.inserted_total * 1000 / SAMPLE_RATE,
            "other_dropped_ms": self._other.dropped_total * 1000 / SAMPLE_RATE,
            "late_ticks": self._clock.late_ticks,
            "clock_reanchors": self._clock.reanchors,
            "fps": self._fps(),
        }
        for stage, values in self._timings.items():
            if values:
                p50, p95 = np.percentile(np.asarray(values), [50, 95])
                out[f"{stage}_ms_p50"], out[f"{stage}_ms_p95"] = float(p50), float(p95)
        return out

    # -- worker threads: motion (paced) → render → the loop

    def _run_motion(self) -> None:
        """Tick by tick: take 40 ms of each stream, generate the latent, pass it to the render thread."""
        torch.set_grad_enabled(False)
        self._clock.start()
        k = 0
        try:
            while self._clock.wait(k, self._stop) and self._acquire_slot():
                self_tick, other_tick = self._self.take(), self._other.take()
                if self_tick.segment_id is not None:
                    self._latest_segment = self_tick.segment_id
                result = self.core.step(
                    self_tick.audio, other_tick.audio, self_tick.lookahead, other_tick.lookahead, render=False
                )
                self._to_render.put((k, self_tick, other_tick, result))
                k += 1
        except Exception as exc:
            log.exception("stream motion worker failed", frame=k)
            self._to_render.put(exc)
        self._to_render.put(None)

    def _run_render(self) -> None:
        """Render each latent while the next one is generated; hand the frame to the loop."""
        torch.set_grad_enabled(False)
        last_summary = time.perf_counter()
        while (item := self._to_render.get()) is not None:
            try:
                if isinstance(item, BaseException):
                    raise item
                k, self_tick, other_tick, result = item
                started = time.perf_counter()
                rgb = self.core.render(result.latent)
                render_ms = (time.perf_counter() - started) * 1000
                timings = {**result.timings_ms, "render": render_ms, "total": result.timings_ms["total"] + render_ms}
                frame = StreamFrame(
                    index=k,
                    rgb=rgb,
                    audio=to_int16(self_tick.audio),
                    segment_id=self_tick.segment_id,
                    segment_end=self_tick.segment_end,
                    speaking=self_tick.speaking,
                    other_lag_ms=other_tick.lag_ms,
                    created_at=time.perf_counter(),
                    timings_ms=timings,
                    other_span=other_tick.span,
                    latent=result.latent.cpu().numpy(),
                )
            except Exception as exc:
                if not isinstance(item, BaseException):
                    log.exception("stream render worker failed")
                self._error = exc
                self._stop.set()
                self._hand_over(exc)
                continue
            self._record(frame, self_tick, other_tick)
            self._hand_over(frame)
            if frame.created_at - last_summary >= SUMMARY_EVERY_S:
                last_summary = frame.created_at
                log.info("stream summary", **self._summary())

    def _acquire_slot(self) -> bool:
        while not self._stop.is_set():
            if self._slots.acquire(timeout=0.05):
                return True
        return False

    def _hand_over(self, item: StreamFrame | BaseException) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._deliver, item)

    def _deliver(self, item: StreamFrame | BaseException) -> None:
        """On the loop: queue a frame for the consumer, unless its segment was interrupted meanwhile."""
        assert self._frames is not None
        scrubbed = self._scrub(item)
        if scrubbed is not None:
            self._frames.put_nowait(scrubbed)

    def _scrub(self, item: Any) -> Any:
        """A frame of an interrupted segment: dropped if it carries its audio, else kept as a plain idle frame."""
        if not isinstance(item, StreamFrame) or item.segment_id not in self._cleared:
            return item
        if item.speaking:
            self._dropped += 1
            self._slots.release()
            return None
        return replace(item, segment_id=None, segment_end=False)

    def _record(self, frame: StreamFrame, self_tick: SelfTick, other_tick: LiveTick) -> None:
        self._produced += 1
        self._created.append(frame.created_at)
        for stage, ms in frame.timings_ms.items():
            self._timings[stage].append(ms)
        segment = self_tick.segment_id
        if segment is not None and self_tick.speaking and segment not in self._started_segments:
            self._started_segments.add(segment)
            log.info("self segment started", segment=segment, frame=frame.index)
        if self_tick.segment_end:
            self._started_segments.discard(segment)  # type: ignore[arg-type]
            log.info("self segment ended", segment=segment, frame=frame.index)
        if other_tick.dropped:
            log.debug("other audio burst: dropped oldest", ms=other_tick.dropped * 1000 / SAMPLE_RATE)

    def _fps(self) -> float:
        created = list(self._created)
        if len(created) < 2 or created[-1] <= created[0]:
            return 0.0
        return (len(created) - 1) / (created[-1] - created[0])

    def _summary(self) -> dict[str, Any]:
        stats = self.stats
        keys = ("frames_produced", "frames_dropped", "fps", "total_ms_p50", "total_ms_p95", "late_ticks")
        return {key: round(stats[key], 2) if isinstance(stats.get(key), float) else stats.get(key) for key in keys}


def _tensor(value: Any) -> torch.Tensor:
    return value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value, dtype=np.float32))


__all__ = ["FRAME_SAMPLES", "AvatarStream", "StreamFrame"]
