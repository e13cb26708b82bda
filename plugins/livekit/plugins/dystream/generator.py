"""``DyStreamVideoGenerator``: livekit-agents' ``VideoGenerator`` on top of the streaming engine (``AvatarStream``).

What ``DyStreamRunner`` gets from ``async for item in generator``, audio first:

- one ``TickAudio`` every 40 ms from the start, when the engine's clock takes the tick: exactly its 40 ms of agent
  speech (one mono 16 kHz ``rtc.AudioFrame``, 640 samples), or ``frame=None`` for an idle tick (the runner sends
  silence then, not counted as playback: the runner counts every audio frame as playback, so silence between
  segments would start segments that do not exist);
- one ``TickVideo`` per rendered picture, whenever the engine has it, with the tick it shows (the runner shows it at
  that tick's slot, or drops it when it comes too late); ``pictures.Pictures`` makes its video frame and records its
  metrics;
- ``AudioSegmentEnd`` right after the last tick of each segment that played to its end.

The speaking state (``dystream.state``) follows the audio ticks: the agent speaks while a reply's ticks play (with
the state's hysteresis), so it matches what is heard whatever the pictures do, pauses inside a reply included. Each
tick is reported when it is heard, ``state_delay_s`` (the runner's playout lead) after the clock took it.

Exactly one ``playback_finished`` per segment. The runner keeps a single "audio playing" flag: it is set when it
reads a segment's first audio frame from the receiver and cleared when our ``AudioSegmentEnd`` comes out (finished)
or by an interruption (it then reports ``interrupted=True`` itself). If the runner read the next segment's audio
before the previous segment's end came out, the flag would be cleared under the new segment, which would then never
be finished. So ``push_audio(AudioSegmentEnd())`` returns only once that end has been handed to the runner (or the
segment was interrupted): the runner reads nothing of the next segment before. After ``clear_buffer`` the
interrupted segment's end is never emitted (the runner has finished it), and a segment with no audio at all gets its
end straight away.

Interruption: ``clear_buffer`` drops the queued speech in the engine (``clear_self``), the speech ticks we still
hold (they become idle ticks), and the audio queued in the runner's audio source with the video slots it had
(``PlayoutSource.clear_queue``); the next tick is silent.

The agent's audio is expected at 16 kHz mono (``QueueAudioOutput(sample_rate=16000)`` and
``DataStreamAudioOutput(sample_rate=16000)`` make the agent resample for us); other rates or channel counts are
downmixed and resampled here all the same. The engine cuts it into 640-sample frames.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from avatar.stream.frames import AudioTick, StreamFrame
from avatar.stream.queues import SelfQueueFull

from .gate import SpeechGate
from .log import logger
from .metrics import MetricsRecorder
from .pcm import SAMPLE_RATE, To16kMono, to_audio_frame
from .pictures import Pictures
from .settings import VadSettings
from .state import ConversationState, HeardSpeech, SpeechHysteresis
from .vad import create_vad


@dataclass(frozen=True)
class TickAudio:
    """The audio of one tick: ``frame`` (640 samples of agent speech) or None (an idle tick)."""

    index: int
    frame: rtc.AudioFrame | None


@dataclass(frozen=True)
class TickVideo:
    """The picture of tick ``index``."""

    index: int
    frame: rtc.VideoFrame
    rung: str  # the quality rung it was made at


Item = TickAudio | TickVideo | AudioSegmentEnd


class SegmentEnd(AudioSegmentEnd):
    """The ``AudioSegmentEnd`` we emit, remembering which engine segment it closes (None: one without audio)."""

    def __init__(self, segment_id: int | None) -> None:
        self.segment_id = segment_id


class Engine(Protocol):
    """The part of ``avatar.stream.engine.AvatarStream`` the generator uses."""

    def push_self(self, pcm: np.ndarray) -> int: ...
    def end_self_segment(self) -> None: ...
    def clear_self(self) -> int | None: ...
    def __aiter__(self) -> AsyncIterator[Any]: ...


class DyStreamVideoGenerator(VideoGenerator):
    """Frames from ``engine`` for ``DyStreamRunner``; see the module docstring for the protocol."""

    def __init__(
        self,
        engine: Engine,
        *,
        fps: float = 25.0,
        state: ConversationState | None = None,
        state_delay_s: float = 0.0,
        vad: VadSettings | None = None,
        metrics: MetricsRecorder | None = None,
        diagnostic_overlay: bool = False,
        on_rung: Callable[[str], None] | None = None,
    ) -> None:
        self._engine = engine
        self._pictures = Pictures(
            lambda: getattr(engine, "stats", {}),
            fps=fps,
            metrics=metrics,
            overlay=diagnostic_overlay,
            on_rung=on_rung,
        )
        self._frame_ms = 1000.0 / fps
        self._frames: AsyncIterator[Any] | None = None
        self._pending: deque[Item] = deque()
        # the agent's speaking state, as heard: ``state_delay_s`` (the runner's playout lead) after each tick is taken
        self._speech = HeardSpeech(state, frame_ms=self._frame_ms, delay_s=state_delay_s) if state is not None else None
        self._metrics = metrics
        self._audio_source: rtc.AudioSource | None = None
        self._to16k = To16kMono()

        # the segment the runner is pushing: opened by its first audio frame, closed by AudioSegmentEnd
        self._receiving = False
        self._segment_id: int | None = None  # the engine's id, once some audio reached the engine
        self._segment_pushed_at: float | None = None
        self._cleared_upto = -1  # engine segments with an id up to this were interrupted
        self._epoch = 0  # counts interruptions: audio pushed across one is dropped
        self._end_waiters: dict[int | None, asyncio.Future[None]] = {}
        self._handed_end: SegmentEnd | None = None  # handed to the runner; its waiter is released on the next call
        self._started_segments: set[int] = set()
        self._closed = False

        vad = vad or VadSettings()
        # push side: optional gate on the agent's audio before the engine (settings.vad.gate_self)
        self._self_gate: SpeechGate | None = None
        if vad.gate_self:
            hysteresis = SpeechHysteresis(vad.start_ms, vad.stop_ms)
            self._self_gate = SpeechGate(create_vad(vad), hysteresis.update, gate=True)

    # -- wiring

    def attach_audio_source(self, source: rtc.AudioSource) -> None:
        """Give the generator the runner's audio source, so an interruption also drops the speech queued there."""
        self._audio_source = source

    # -- input (the runner reads the agent's speech into this)

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if self._closed:
            return
        if isinstance(frame, AudioSegmentEnd):
            await self._end_segment()
            return
        if not self._receiving:
            self._receiving = True
            self._segment_pushed_at = time.perf_counter()
        pcm = self._to16k.push(frame)
        await self._push_engine(self._self_gate.push(pcm) if self._self_gate is not None else [pcm])

    async def _push_engine(self, chunks: list[np.ndarray]) -> None:
        """Queue speech in the engine; when its queue is full (TTS far ahead), wait for room instead of failing."""
        epoch = self._epoch
        for chunk in chunks:
            while len(chunk):
                try:
                    self._segment_id = self._engine.push_self(chunk)
                    break
                except SelfQueueFull:
                    await asyncio.sleep(self._frame_ms / 1000.0)
                    if epoch != self._epoch or self._closed:
                        return  # interrupted while waiting: this audio belongs to the dropped segment

    async def _end_segment(self) -> None:
        if not self._receiving:
            return  # the end of an interrupted (or empty) stream: the runner has nothing playing
        tail = self._to16k.flush()
        if self._self_gate is not None:
            await self._push_engine(self._self_gate.push(tail) + self._self_gate.flush())
        else:
            await self._push_engine([tail])
        if not self._receiving:
            return  # interrupted while the tail was waiting for room
        segment = self._segment_id
        self._receiving = False
        self._segment_id = None
        waiter = asyncio.get_running_loop().create_future()
        self._end_waiters[segment] = waiter
        if segment is None:
            # no sample reached the engine (empty frames only): end it now, there is nothing to play
            self._pending.append(SegmentEnd(None))
        else:
            self._engine.end_self_segment()
        await waiter

    # -- interruption (the runner passes the receiver's clear_buffer on)

    async def clear_buffer(self) -> None:
        started = time.perf_counter()
        self._epoch += 1
        interrupted = self._engine.clear_self()
        for segment in (interrupted, self._segment_id, *[s for s in self._end_waiters if s is not None]):
            if segment is not None:
                self._cleared_upto = max(self._cleared_upto, segment)
        # keep the pictures (the video stays continuous), drop the speech audio and segment ends still held here
        self._pending = deque(
            TickAudio(item.index, None) if isinstance(item, TickAudio) else item
            for item in self._pending
            if not isinstance(item, AudioSegmentEnd)
        )
        self._receiving = False
        self._segment_id = None
        self._to16k.reset()
        if self._self_gate is not None:
            self._self_gate.reset()
        self._release_end_waiters()
        if self._speech is not None:
            self._speech.end()
        if self._audio_source is not None:
            self._audio_source.clear_queue()
        flush_ms = (time.perf_counter() - started) * 1000.0
        if self._metrics is not None:
            self._metrics.on_interruption(flush_ms)
        logger.info("avatar interrupted", extra={"segment": interrupted, "flush_ms": round(flush_ms, 2)})

    def _release_end_waiters(self) -> None:
        for waiter in self._end_waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._end_waiters.clear()

    # -- output (the runner plays and shows this)

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        if self._handed_end is not None:
            # the runner came back for more: it has handled the segment end we gave it last time
            waiter = self._end_waiters.pop(self._handed_end.segment_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            self._handed_end = None
        if self._frames is None:
            self._frames = self._engine.__aiter__()
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            item = await self._frames.__anext__()
            if isinstance(item, StreamFrame):
                self._pending.append(TickVideo(item.index, self._pictures.video_frame(item), item.rung))
            else:
                self._on_tick(item)
        item = self._pending.popleft()
        if isinstance(item, SegmentEnd):
            self._handed_end = item
        return item

    def _on_tick(self, tick: AudioTick) -> None:
        segment = tick.segment_id
        shows_speech = tick.speaking and segment is not None and segment > self._cleared_upto
        self._pending.append(TickAudio(tick.index, to_audio_frame(tick.audio, SAMPLE_RATE) if shows_speech else None))
        if shows_speech and segment not in self._started_segments:
            self._started_segments.add(segment)
            if self._metrics is not None and self._segment_pushed_at is not None:
                self._metrics.on_segment_started((time.perf_counter() - self._segment_pushed_at) * 1000.0)
        if tick.segment_end and segment is not None and segment > self._cleared_upto:
            self._pending.append(SegmentEnd(segment))
            self._started_segments.discard(segment)
        if self._speech is not None:  # speaking while a reply plays, tick by tick (with the state's hysteresis)
            self._speech.tick(shows_speech)

    async def aclose(self) -> None:
        """Stop iterating and release a runner waiting in ``push_audio``."""
        self._closed = True
        if self._speech is not None:
            self._speech.cancel()
        self._release_end_waiters()
