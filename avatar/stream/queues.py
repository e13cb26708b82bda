"""The two audio inputs of the streaming engine, cut into one 40 ms frame per tick (docs/architecture.md §9).

- ``SelfQueue``: the avatar's own voice. TTS delivers it faster than real time, in segments (one per reply). It
  waits here; every tick takes exactly 640 samples of it (or silence), plus a peek at the audio queued after them
  (the self lookahead). A segment starts playing once its first 40 ms + lookahead (+ ``prebuffer``, for speech that
  comes over the network) are queued, or once it has ended.
- ``LiveBuffer``: the user's voice, arriving live. It is a small jitter buffer: every tick takes the 640 samples
  that end ``lookahead`` before the live edge; when the user's audio starves, zeros are inserted (the timeline
  waits for the audio instead of eating into the lookahead); when it bursts past ``max_backlog`` samples beyond
  what a tick needs, the oldest audio is dropped so the delay stays bounded.

Both are plain numpy and thread-safe: the asyncio loop pushes, the engine's worker thread takes.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from avatar.errors import InputError

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 640  # 40 ms at 25 fps


class SelfQueueFull(InputError):
    """More agent speech was pushed than ``stream.max_queued_self_s`` allows to wait for playout."""


def as_float_pcm(pcm: np.ndarray, name: str) -> np.ndarray:
    """16 kHz mono int16 or float PCM → float32 in [-1, 1] (int16 / 32768, as ``librosa.load`` gives)."""
    x = np.asarray(pcm)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise InputError(f"{name} must be 1-D mono 16 kHz PCM, got shape {x.shape}: downmix and resample it first")
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{name} must be int16 or float32 PCM, got dtype {x.dtype}: convert it first")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise InputError(f"{name} contains NaN or infinite samples: check the decoder / resampler output")
    return x


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float32 PCM → int16; int16 input converted by ``as_float_pcm`` round-trips exactly."""
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)


def ms_to_samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000))


class SampleFifo:
    """A FIFO of float32 samples kept as a deque of chunks (pushing is O(chunk), never re-copies the backlog)."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self._offset = 0  # samples already read from the first chunk
        self.size = 0

    def push(self, samples: np.ndarray) -> None:
        if samples.size:
            self._chunks.append(samples)
            self.size += samples.size

    def peek(self, n: int) -> np.ndarray:
        """The first ``min(n, size)`` samples, not removed."""
        return self._collect(n, consume=False)

    def read(self, n: int) -> np.ndarray:
        """Remove and return the first ``min(n, size)`` samples."""
        return self._collect(n, consume=True)

    def drop(self, n: int) -> int:
        return self.read(n).size

    def clear(self) -> None:
        self._chunks.clear()
        self._offset = 0
        self.size = 0

    def _collect(self, n: int, consume: bool) -> np.ndarray:
        n = max(0, min(n, self.size))
        out = np.empty(n, dtype=np.float32)
        filled, offset, index = 0, self._offset, 0
        while filled < n:
            chunk = self._chunks[index]
            take = min(n - filled, chunk.size - offset)
            out[filled : filled + take] = chunk[offset : offset + take]
            filled += take
            offset += take
            if offset == chunk.size:
                index, offset = index + 1, 0
        if consume:
            for _ in range(index):
                self._chunks.popleft()
            self._offset = offset
            self.size -= n
        return out


def _fit(samples: np.ndarray, n: int) -> np.ndarray:
    """``samples`` zero-padded (at the end) to exactly ``n``."""
    if samples.size == n:
        return samples
    out = np.zeros(n, dtype=np.float32)
    out[: samples.size] = samples[:n]
    return out


@dataclass(frozen=True)
class SelfTick:
    """What one tick plays of the agent's voice."""

    audio: np.ndarray  # [640] float32: the frame's own 40 ms (zeros when idle)
    ahead: np.ndarray  # [foresight] float32: what is queued to play right after (zeros where unknown)
    segment_id: int | None  # the segment the tick belongs to (None: idle)
    segment_end: bool  # the last tick of a segment that played to its end
    speaking: bool  # the tick carries segment audio
    lookahead_samples: int  # how much of ``ahead`` the model hears

    @property
    def lookahead(self) -> np.ndarray:
        """[lookahead] float32: the part of ``ahead`` the model hears with this tick."""
        return self.ahead[: self.lookahead_samples]


@dataclass
class _Segment:
    id: int
    fifo: SampleFifo
    ended: bool = False
    started: bool = False
    pushed: int = 0


class SelfQueue:
    """Segments of agent speech waiting for playout, consumed 640 samples per tick."""

    def __init__(self, lookahead: int, max_queued: int, prebuffer: int = 0, foresight: int = 0) -> None:
        if lookahead < 0 or max_queued < FRAME_SAMPLES or prebuffer < 0:
            raise InputError(
                f"invalid self queue sizes: lookahead {lookahead}, max_queued {max_queued}, prebuffer {prebuffer}"
            )
        self.lookahead = lookahead
        self.foresight = max(foresight, lookahead)  # how far each tick shows what comes next (``SelfTick.ahead``)
        self.max_queued = max_queued
        self.prebuffer = prebuffer  # extra samples a segment waits for before it starts (audio over a network)
        self._segments: deque[_Segment] = deque()
        self._next_id = 1
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        """Samples waiting for playout, over all segments."""
        with self._lock:
            return sum(s.fifo.size for s in self._segments)

    def push(self, pcm: np.ndarray) -> int:
        """Append to the open segment (opening one if none is open); returns its id."""
        samples = as_float_pcm(pcm, "self audio")
        with self._lock:
            queued = sum(s.fifo.size for s in self._segments)
            if queued + samples.size > self.max_queued:
                raise SelfQueueFull(
                    f"self audio queue full: {queued / SAMPLE_RATE:.1f} s waiting + {samples.size / SAMPLE_RATE:.2f} s "
                    f"pushed > stream.max_queued_self_s = {self.max_queued / SAMPLE_RATE:.1f} s; push speech closer "
                    "to real time or raise DYSTREAM_STREAM__MAX_QUEUED_SELF_S"
                )
            if not self._segments or self._segments[-1].ended:
                self._segments.append(_Segment(id=self._next_id, fifo=SampleFifo()))
                self._next_id += 1
            segment = self._segments[-1]
            segment.fifo.push(samples.copy())
            segment.pushed += samples.size
            return segment.id

    def end_segment(self) -> int | None:
        """Close the open segment: it plays out, then ends. Returns its id (None when no segment is open)."""
        with self._lock:
            if self._segments and not self._segments[-1].ended:
                self._segments[-1].ended = True
                return self._segments[-1].id
            return None

    def clear(self) -> int | None:
        """Drop every queued sample now; returns the id of the segment that was playing (or next to play)."""
        with self._lock:
            interrupted = self._segments[0].id if self._segments else None
            self._segments.clear()
            return interrupted

    def take(self) -> SelfTick:
        """The next tick's 40 ms, the segment bookkeeping, and the lookahead behind it."""
        with self._lock:
            head = self._segments[0] if self._segments else None
            if head is not None and not head.started:
                head.started = head.ended or head.fifo.size >= FRAME_SAMPLES + self.lookahead + self.prebuffer
            if head is None or not head.started:
                return self._tick(self._zeros(), None, False, False)
            if head.fifo.size >= FRAME_SAMPLES or head.ended:
                audio = head.fifo.read(FRAME_SAMPLES)
                end = head.ended and head.fifo.size == 0
                if end:
                    self._segments.popleft()
                return self._tick(_fit(audio, FRAME_SAMPLES), head.id, end, audio.size > 0)
            # underrun: the segment is open but TTS has not delivered the next 40 ms yet; wait with silence
            return self._tick(self._zeros(), head.id, False, False)

    def _tick(self, audio: np.ndarray, segment_id: int | None, end: bool, speaking: bool) -> SelfTick:
        return SelfTick(audio, self._peek_after(), segment_id, end, speaking, self.lookahead)

    def _zeros(self) -> np.ndarray:
        return np.zeros(FRAME_SAMPLES, dtype=np.float32)

    def _peek_after(self) -> np.ndarray:
        """The next ``foresight`` samples of the self timeline (ended segments are zero-padded to whole frames)."""
        parts: list[np.ndarray] = []
        want = self.foresight
        for segment in self._segments:
            if want <= 0:
                break
            part = segment.fifo.peek(want)
            parts.append(part)
            want -= part.size
            if not segment.ended:
                break
            pad = min(want, -segment.fifo.size % FRAME_SAMPLES)
            parts.append(np.zeros(pad, dtype=np.float32))
            want -= pad
        return _fit(np.concatenate(parts) if parts else np.zeros(0, np.float32), self.foresight)


@dataclass(frozen=True)
class LiveTick:
    """What one tick takes of the user's live voice."""

    audio: np.ndarray  # [640] float32
    lookahead: np.ndarray  # [lookahead] float32
    span: tuple[int, int]  # received-sample indices [start, end) of the real audio in ``audio``
    lag_ms: float  # how far the frame's end trails the live edge
    inserted: int  # zeros inserted because the audio starved
    dropped: int  # oldest samples dropped because the audio burst


class LiveBuffer:
    """Jitter buffer of live audio: a tick's frame ends ``lookahead`` (+ jitter, bounded) before the live edge."""

    def __init__(self, lookahead: int, max_backlog: int) -> None:
        if lookahead < 0 or max_backlog < 0:
            raise InputError(f"invalid live buffer sizes: lookahead {lookahead}, max_backlog {max_backlog} samples")
        self.lookahead = lookahead
        self.max_backlog = max_backlog
        self._fifo = SampleFifo()
        self._received = 0  # samples ever pushed: index of the live edge
        self._lock = threading.Lock()
        self.inserted_total = 0
        self.dropped_total = 0

    def push(self, pcm: np.ndarray) -> None:
        samples = as_float_pcm(pcm, "other audio")
        with self._lock:
            self._fifo.push(samples.copy())
            self._received += samples.size

    @property
    def pending(self) -> int:
        with self._lock:
            return self._fifo.size

    def take(self) -> LiveTick:
        with self._lock:
            need = FRAME_SAMPLES + self.lookahead
            dropped = 0
            if self._fifo.size - need > self.max_backlog:
                dropped = self._fifo.drop(self._fifo.size - need)
            inserted = min(max(need - self._fifo.size, 0), FRAME_SAMPLES)
            start = self._received - self._fifo.size
            real = self._fifo.read(FRAME_SAMPLES - inserted)
            audio = np.concatenate([np.zeros(inserted, dtype=np.float32), real])
            lookahead = _fit(self._fifo.peek(self.lookahead), self.lookahead)
            lag_ms = self._fifo.size * 1000 / SAMPLE_RATE
            self.inserted_total += inserted
            self.dropped_total += dropped
            return LiveTick(audio, lookahead, (start, start + real.size), lag_ms, inserted, dropped)
