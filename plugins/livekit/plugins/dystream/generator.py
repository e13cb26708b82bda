"""``DyStreamVideoGenerator``: livekit-agents' ``VideoGenerator`` on top of the streaming engine (``AvatarStream``).

What ``AvatarRunner`` gets from ``async for item in generator``:

- one ``rtc.VideoFrame`` every 1/fps (40 ms) from the start, idle frames included, so the runner publishes at once
  (the remote agent waits for our video track before it sends any audio: idle frames break that circle);
- right after a video frame that shows agent speech, exactly its 40 ms of that speech (one mono 16 kHz
  ``rtc.AudioFrame``, 640 samples). Idle frames carry no audio frame: the runner counts every audio frame as
  playback (``notify_playback_started`` on the first, the position on all), so silence between segments would
  start segments that do not exist and shift every playback position;
- ``AudioSegmentEnd`` right after the last frame of each segment that played to its end.

Exactly one ``playback_finished`` per segment. The runner keeps a single "audio playing" flag: it is set when it
reads a segment's first audio frame from the receiver and cleared when our ``AudioSegmentEnd`` comes out (finished)
or by an interruption (it then reports ``interrupted=True`` itself). If the runner read the next segment's audio
before the previous segment's end came out, the flag would be cleared under the new segment, which would then never
be finished. So ``push_audio(AudioSegmentEnd())`` returns only once that end has been handed to the runner (or the
segment was interrupted): the runner reads nothing of the next segment before. After ``clear_buffer`` the
interrupted segment's end is never emitted (the runner has finished it), and a segment with no audio at all gets its
end straight away.

Interruption: ``clear_buffer`` drops the queued speech in the engine (``clear_self``), the speech audio we still
hold, and the synchronizer's queues (``av_sync.clear_queue()``: the ~100 ms of audio inside ``AudioSource`` and the
queued video frames); the next frame is silent.

The agent's audio is expected at 16 kHz mono (``QueueAudioOutput(sample_rate=16000)`` and
``DataStreamAudioOutput(sample_rate=16000)`` make the agent resample for us); other rates or channel counts are
downmixed and resampled here all the same. The engine cuts it into 640-sample frames.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from avatar.stream_queues import SelfQueueFull
from config.settings import VadSettings

from .diagnostics import flash_patch
from .gate import SpeechGate
from .log import logger
from .metrics import FrameMetrics, MetricsRecorder, sync_queue_depths
from .pcm import SAMPLE_RATE, To16kMono, to_audio_frame
from .state import ConversationState, SpeechHysteresis
from .vad import create_vad

Item = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd
ENGINE_DEPTHS = ("frames_waiting", "self_queued_s", "other_pending_ms", "frames_dropped", "late_ticks")


class SegmentEnd(AudioSegmentEnd):
    """The ``AudioSegmentEnd`` we emit, remembering which engine segment it closes (None: one without audio)."""

    def __init__(self, segment_id: int | None) -> None:
        self.segment_id = segment_id


class Engine(Protocol):
    """The part of ``avatar.stream.AvatarStream`` the generator uses."""

    def push_self(self, pcm: np.ndarray) -> int: ...
    def end_self_segment(self) -> None: ...
    def clear_self(self) -> int | None: ...
    def __aiter__(self) -> AsyncIterator[Any]: ...


class DyStreamVideoGenerator(VideoGenerator):
    """Frames from ``engine`` for ``AvatarRunner``; see the module docstring for the protocol."""

    def __init__(
        self,
        engine: Engine,
        *,
        fps: float = 25.0,
        state: ConversationState | None = None,
        vad: VadSettings | None = None,
        metrics: MetricsRecorder | None = None,
        diagnostic_overlay: bool = False,
    ) -> None:
        self._engine = engine
        self._fps = fps
        self._frame_ms = 1000.0 / fps
        self._frames: AsyncIterator[Any] | None = None
        self._pending: deque[Item] = deque()
        self._state = state
        self._metrics = metrics
        self._overlay = diagnostic_overlay
        self._av_sync: rtc.AVSynchronizer | None = None
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
        # play side: the agent's speaking state, from the audio as it is shown
        self._self_vad: SpeechGate | None = None
        if state is not None:
            self._self_vad = SpeechGate(create_vad(vad), lambda s, ms: state.update("self", s, ms), gate=False)
        self._stats_every = max(1, round(fps))  # engine queue depths are read once a second
        self._engine_depths: dict[str, float] = {}

    # -- wiring

    def attach_av_sync(self, av_sync: rtc.AVSynchronizer) -> None:
        """Give the generator the runner's synchronizer, so an interruption also flushes its queues."""
        self._av_sync = av_sync

    # -- input (AvatarRunner._read_audio)

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

    # -- interruption (AvatarRunner._on_clear_buffer)

    async def clear_buffer(self) -> None:
        started = time.perf_counter()
        self._epoch += 1
        interrupted = self._engine.clear_self()
        for segment in (interrupted, self._segment_id, *[s for s in self._end_waiters if s is not None]):
            if segment is not None:
                self._cleared_upto = max(self._cleared_upto, segment)
        # keep the video (it must stay continuous), drop the speech audio and segment ends still held here
        self._pending = deque(item for item in self._pending if isinstance(item, rtc.VideoFrame))
        self._receiving = False
        self._segment_id = None
        self._to16k.reset()
        if self._self_gate is not None:
            self._self_gate.reset()
        self._release_end_waiters()
        if self._state is not None:
            if self._self_vad is not None:
                self._self_vad.reset()
            self._state.end("self")
        if self._av_sync is not None:
            await self._av_sync.clear_queue()
        flush_ms = (time.perf_counter() - started) * 1000.0
        if self._metrics is not None:
            self._metrics.on_interruption(flush_ms)
        logger.info("avatar interrupted", segment=interrupted, flush_ms=round(flush_ms, 2))

    def _release_end_waiters(self) -> None:
        for waiter in self._end_waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._end_waiters.clear()

    # -- output (AvatarRunner._forward_video)

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
            frame = await self._frames.__anext__()
            self._on_frame(frame)
        item = self._pending.popleft()
        if isinstance(item, SegmentEnd):
            self._handed_end = item
        return item

    def _on_frame(self, frame: Any) -> None:
        handed_at = time.perf_counter()
        segment = frame.segment_id
        shows_speech = frame.speaking and segment is not None and segment > self._cleared_upto
        rgb = flash_patch(frame.rgb, frame.audio) if self._overlay else frame.rgb
        height, width = rgb.shape[:2]
        data = memoryview(np.ascontiguousarray(rgb).reshape(-1))
        self._pending.append(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGB24, data))
        if shows_speech:
            self._pending.append(to_audio_frame(frame.audio, SAMPLE_RATE))
            if segment not in self._started_segments:
                self._started_segments.add(segment)
                if self._metrics is not None and self._segment_pushed_at is not None:
                    self._metrics.on_segment_started((handed_at - self._segment_pushed_at) * 1000.0)
        if frame.segment_end and segment is not None and segment > self._cleared_upto:
            self._pending.append(SegmentEnd(segment))
            self._started_segments.discard(segment)
        self._observe_state(frame, shows_speech)
        self._record(frame, handed_at, shows_speech)

    def _observe_state(self, frame: Any, shows_speech: bool) -> None:
        if self._self_vad is None or self._state is None:
            return
        if shows_speech:
            self._self_vad.push(frame.audio)
        else:
            self._state.update("self", False, self._frame_ms)

    def _record(self, frame: Any, handed_at: float, shows_speech: bool) -> None:
        if self._metrics is None:
            return
        audio_ms, video_frames = sync_queue_depths(self._av_sync)
        handoff_ms = (handed_at - frame.created_at) * 1000.0
        if frame.index % self._stats_every == 0:
            stats = getattr(self._engine, "stats", {})
            self._engine_depths = {key: stats[key] for key in ENGINE_DEPTHS if key in stats}
        depths = {**self._engine_depths, "sync_audio_ms": round(audio_ms, 2), "sync_video_frames": video_frames}
        span = getattr(frame, "other_span", (0, 1))  # received user samples in this frame (engine extra)
        hears_user = span[1] > span[0]
        listening = frame.other_lag_ms + handoff_ms + video_frames * self._frame_ms if hears_user else None
        self._metrics.on_frame(
            FrameMetrics(
                index=frame.index,
                timestamp=time.time(),
                speaking=shows_speech,
                segment_id=frame.segment_id,
                timings_ms=dict(frame.timings_ms),
                handoff_ms=handoff_ms,
                other_lag_ms=frame.other_lag_ms,
                listening_latency_ms=listening,
                queue_depths=depths,
            ),
            av_offset_ms=(audio_ms - video_frames * self._frame_ms) if shows_speech else None,
        )

    async def aclose(self) -> None:
        """Stop iterating and release a runner waiting in ``push_audio``."""
        self._closed = True
        self._release_end_waiters()
