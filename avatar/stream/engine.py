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

``start()`` first runs every stage once for every rung (``StreamCore.warm_up``: tracing, CUDA graph capture) off
the loop, so the first frame is on time, then once more to time them: the quality ladder starts at the rung those
costs allow (``QualityGovernor.start_at``). ``clear_self`` (interruption) drops the queued self audio at once, and
turns every tick of that segment not yet handed out into silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import torch

from avatar.motion.generator import MotionGenerator
from avatar.renderer import Renderer
from avatar.sampling.cfg import CfgScales
from avatar.settings import ModelSettings, StreamSettings
from avatar.stream.clock import FrameClock
from avatar.stream.core import STAGES, StageTimer, StreamCore
from avatar.stream.frames import AudioTick, StreamFrame
from avatar.stream.keyframes import FORESIGHT, Keyframes
from avatar.stream.ladder import QualityGovernor, ladder, rung_index
from avatar.stream.queues import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    LiveBuffer,
    SelfQueue,
    ms_to_samples,
    to_int16,
)

log = logging.getLogger(__name__)

SUMMARY_EVERY_S = 30.0
TIMING_WINDOW = 500  # frames kept for the per-stage percentiles in ``stats``


class Portrait(Protocol):
    """What the engine reads of a prepared portrait (``avatar.media.portrait.PortraitState``)."""

    m0: Any  # [1, 512]
    f_app: Any  # appearance volume


_CLOSED = object()


class _Inbox:
    """Ticks waiting for the motion thread (filled on the loop, emptied whole by the thread)."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def take_all(self) -> list[Any] | None:
        """Everything waiting (blocks until there is something); None once closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._items or self._closed)
            if self._closed:
                return None
            items = list(self._items)
            self._items.clear()
            return items

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class _Mailbox(_Inbox):
    """The newest latent to render: a new one replaces one not yet taken."""

    def __init__(self) -> None:
        super().__init__()
        self.replaced = 0

    def put(self, item: Any) -> bool:  # type: ignore[override]
        """Leave ``item`` for the render thread; True when it replaced one that was never rendered."""
        with self._ready:
            replaced = bool(self._items)
            self._items.clear()
            self._items.append(item)
            self._ready.notify()
        if replaced:
            self.replaced += 1
        return replaced


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
        self._threads: list[threading.Thread] = []
        self._clock_task: asyncio.Task[None] | None = None
        self._holds_torch_threads = False
        self._inbox = _Inbox()
        self._mailbox = _Mailbox()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: asyncio.Queue[Any] | None = None
        self._cleared: set[int] = set()
        self._latest_segment: int | None = None  # newest segment the clock took audio of
        self._last_ended = 0  # newest segment whose last tick the consumer got
        self._clock = FrameClock(self.fps)
        self._timings: dict[str, deque[float]] = {stage: deque(maxlen=TIMING_WINDOW) for stage in STAGES}
        self._created: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._ticks = 0
        self._produced = 0
        self._generated = 0
        self._started_segments: set[int] = set()

    # -- lifecycle

    async def start(self) -> None:
        """Warm the model up and start the clock and the worker threads; ticks begin at once (silence until audio
        is pushed)."""
        if self._threads:
            raise RuntimeError("AvatarStream.start() was already called")
        self._loop = asyncio.get_running_loop()
        self._out = asyncio.Queue()
        # the loop gives the GIL up at every native call (LiveKit's FFI, the VAD) and waits for it back: with
        # Python's 5 ms switch interval, behind the model threads, that wait piled up to 100-500 ms stalls
        sys.setswitchinterval(self.settings.gil_switch_interval_ms / 1000.0)
        if self.settings.torch_threads is not None:
            _TORCH_THREADS.hold(self.settings.torch_threads)
            self._holds_torch_threads = True
        # in a thread at the render thread's priority, so that the measured costs are what the model threads get
        with ThreadPoolExecutor(1, "dystream-warm-up", _lower_priority, (self.settings.worker_nice,)) as warm_up:
            await self._loop.run_in_executor(warm_up, self.core.warm_up, self.governor.rungs)
            costs = await self._loop.run_in_executor(warm_up, self.core.warm_up, self.governor.rungs)
        self.governor.start_at(costs, 1000.0 / self.fps)
        self._threads = [
            threading.Thread(target=self._run_motion, name="dystream-motion", daemon=True),
            threading.Thread(target=self._run_render, name="dystream-render", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
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
        self._inbox.close()
        self._mailbox.close()
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join)
        if self._out is not None:
            self._out.put_nowait(_CLOSED)
        if self._holds_torch_threads:
            _TORCH_THREADS.release()
            self._holds_torch_threads = False
        log.info("stream closed", extra=self._summary())

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
            segment = latest if latest is not None and latest > self._last_ended else None
        if segment is None or segment in self._cleared:
            return None
        self._cleared.add(segment)
        if self._out is not None:
            kept = [self._scrub(self._out.get_nowait()) for _ in range(self._out.qsize())]
            for item in kept:
                self._out.put_nowait(item)
        log.info("self segment interrupted", extra={"segment": segment})
        return segment

    def push_other(self, pcm: np.ndarray) -> None:
        """Live user audio (16 kHz mono int16 or float32), pushed as it arrives."""
        self._other.push(pcm)

    # -- output

    def __aiter__(self) -> AsyncIterator[AudioTick | StreamFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioTick | StreamFrame]:
        if self._out is None:
            raise RuntimeError("call `await stream.start()` before iterating its ticks")
        while True:
            item = await self._out.get()
            if item is _CLOSED:
                self._out.put_nowait(_CLOSED)  # later iterators end too
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, AudioTick) and item.segment_end and item.segment_id is not None:
                self._last_ended = max(self._last_ended, item.segment_id)
            yield item

    @property
    def stats(self) -> dict[str, Any]:
        """Counts, queue depths, the rung and per-stage p50/p95 (ms) over the last frames."""
        out: dict[str, Any] = {
            "ticks": self._ticks,
            "frames_produced": self._produced,
            "latents_generated": self._generated,
            "latents_not_rendered": self._mailbox.replaced,
            "ticks_waiting": self._out.qsize() if self._out is not None else 0,
            "self_queued_s": self._self.queued / SAMPLE_RATE,
            "other_pending_ms": self._other.pending * 1000 / SAMPLE_RATE,
            "other_inserted_ms": self._other.inserted_total * 1000 / SAMPLE_RATE,
            "other_dropped_ms": self._other.dropped_total * 1000 / SAMPLE_RATE,
            "late_ticks": self._clock.late_ticks,
            "clock_reanchors": self._clock.reanchors,
            "unique_fps": self._fps(),
            "rung": self.governor.rung.name,
            "rung_changes": self.governor.changes,
            "load": dict(self.governor.last_load),
        }
        for stage, values in self._timings.items():
            if values:
                p50, p95 = np.percentile(np.asarray(values), [50, 95])
                out[f"{stage}_ms_p50"], out[f"{stage}_ms_p95"] = float(p50), float(p95)
        return out

    # -- the clock (on the loop): the timeline, audio first

    async def _run_clock(self) -> None:
        self._clock.start()
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
        assert self._out is not None
        self._out.put_nowait(self._scrub(tick))
        self._inbox.put((tick, self_tick, other_tick))

    # -- worker threads: motion (newest tick) → render (newest latent) → the loop

    def _run_motion(self) -> None:
        torch.set_grad_enabled(False)
        _lower_priority(self.settings.worker_nice + self.settings.motion_extra_nice)
        keyframes = Keyframes()
        try:
            while (batch := self._inbox.take_all()) is not None:
                started = time.perf_counter()
                rung = self.governor.update()
                newest = len(batch) - 1
                for i, (tick, self_tick, other_tick) in enumerate(batch):
                    timer = StageTimer(self.core.device, synchronize=False)  # no wait for the device
                    plan = keyframes.plan(tick.index, rung, self_tick.audio, self_tick.ahead, behind=newest - i)
                    # only a tick that gets a latent encodes its audio, and the ticks since the last one with it
                    self.core.hear(
                        self_tick.audio,
                        other_tick.audio,
                        self_tick.lookahead,
                        other_tick.lookahead,
                        encode=plan.generate,
                    )
                    timer.lap("audio")
                    if not plan.generate:
                        self.core.skip()
                        continue
                    latent = self.core.generate(rung, timer)
                    self._generated += 1
                    if plan.render:
                        replaced = self._mailbox.put((tick, latent, rung, timer.done()))
                        self.governor.report("render", 0.0, due=1, missed=int(replaced))
                # every tick is due once; the ticks that came while this thread was busy with an earlier one
                # are late, whatever the rung does with them (one it interpolates on time is not a miss)
                busy = time.perf_counter() - started
                self.governor.report("motion", busy, due=len(batch), missed=newest)
        except Exception as exc:
            log.exception("stream motion worker failed")
            self._hand_over(exc)
        self._mailbox.close()

    def _run_render(self) -> None:
        torch.set_grad_enabled(False)
        _lower_priority(self.settings.worker_nice)
        last_summary = time.perf_counter()
        while (items := self._mailbox.take_all()) is not None:
            tick, latent, rung, timings = items[-1]
            try:
                started = time.perf_counter()
                rgb = self.core.render(latent)
                render_s = time.perf_counter() - started
                self.governor.report("render", render_s)
                timings = {**timings, "render": render_s * 1000, "total": timings["total"] + render_s * 1000}
                frame = StreamFrame(
                    index=tick.index,
                    rgb=rgb,
                    created_at=time.perf_counter(),
                    timings_ms=timings,
                    rung=rung.name,
                    tick=tick,
                    latent=latent,
                )
            except Exception as exc:
                log.exception("stream render worker failed")
                self._stop.set()
                self._hand_over(exc)
                return
            self._record(frame)
            self._hand_over(frame)
            if frame.created_at - last_summary >= SUMMARY_EVERY_S:
                last_summary = frame.created_at
                log.info("stream summary", extra=self._summary())

    def _hand_over(self, item: StreamFrame | BaseException) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._deliver, item)

    def _deliver(self, item: StreamFrame | BaseException) -> None:
        assert self._out is not None
        self._out.put_nowait(item)

    def _scrub(self, item: Any) -> Any:
        """A tick of an interrupted segment becomes a silent idle tick."""
        if not isinstance(item, AudioTick) or item.segment_id not in self._cleared:
            return item
        return replace(item, audio=np.zeros_like(item.audio), segment_id=None, segment_end=False, speaking=False)

    def _record(self, frame: StreamFrame) -> None:
        self._produced += 1
        self._created.append(frame.created_at)
        for stage, ms in frame.timings_ms.items():
            self._timings[stage].append(ms)

    def _log_segment(self, tick: AudioTick) -> None:
        segment = tick.segment_id
        if segment is not None and tick.speaking and segment not in self._started_segments:
            self._started_segments.add(segment)
            log.info("self segment started", extra={"segment": segment, "tick": tick.index})
        if tick.segment_end and segment is not None:
            self._started_segments.discard(segment)
            log.info("self segment ended", extra={"segment": segment, "tick": tick.index})

    def _fps(self) -> float:
        created = list(self._created)
        if len(created) < 2 or created[-1] <= created[0]:
            return 0.0
        return (len(created) - 1) / (created[-1] - created[0])

    def _summary(self) -> dict[str, Any]:
        stats = self.stats
        stages = tuple(f"{stage}_ms_{q}" for stage in STAGES for q in ("p50", "p95"))
        keys = ("ticks", "frames_produced", "unique_fps", "rung", "rung_changes", *stages, "late_ticks")
        return {key: round(stats[key], 2) if isinstance(stats.get(key), float) else stats.get(key) for key in keys}


class _TorchThreadsHold:
    """torch's intra-op thread count is process-wide: the first stream that sets it remembers the process's own, the
    last one to close puts it back, whatever order they close in (the latest setting applies meanwhile)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._before = 0

    def hold(self, threads: int) -> None:
        with self._lock:
            if self._holders == 0:
                self._before = torch.get_num_threads()
            self._holders += 1
            torch.set_num_threads(threads)

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                torch.set_num_threads(self._before)


_TORCH_THREADS = _TorchThreadsHold()


def _lower_priority(nice: int) -> None:
    """Run the calling thread ``nice`` steps below the process (Linux: a thread's nice value is its own). The audio
    and the publishing run on the event loop and LiveKit's threads: when the CPU is short, they come first and the
    model takes what is left, which the quality ladder adapts to."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


def _tensor(value: Any) -> torch.Tensor:
    return value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value, dtype=np.float32))


__all__ = ["FRAME_SAMPLES", "AudioTick", "AvatarStream", "StreamFrame"]
