"""What the engine hands its consumer, in order: every ``AudioTick`` (put by the clock on the event loop) and every
``StreamFrame`` (handed over from the render thread), through one asyncio queue. An interruption turns the ticks
of its segment still waiting in the queue, and those put after it, into silent idle ticks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np

from avatar.stream.frames import AudioTick, StreamFrame

_CLOSED = object()


class Outbox:
    """The engine's output queue. ``open`` it on the loop before anything is put."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._interrupted: set[int] = set()
        self.last_ended = 0  # newest segment whose last tick the consumer got

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._queue = loop, asyncio.Queue()

    @property
    def waiting(self) -> int:
        """Items put and not yet taken by the consumer."""
        return self._queue.qsize() if self._queue is not None else 0

    def put(self, tick: AudioTick) -> None:
        """A tick, on the loop."""
        assert self._queue is not None, "open() the outbox first"
        self._queue.put_nowait(self._scrub(tick))

    def hand_over(self, item: StreamFrame | BaseException) -> None:
        """A picture, or the error that stopped a model thread, from that thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._put_any, item)

    def interrupt(self, segment: int) -> bool:
        """Silence ``segment``'s ticks from now on, those waiting included; False when it already was."""
        if segment in self._interrupted:
            return False
        self._interrupted.add(segment)
        if self._queue is not None:
            kept = [self._scrub(self._queue.get_nowait()) for _ in range(self._queue.qsize())]
            for item in kept:
                self._queue.put_nowait(item)
        return True

    def close(self) -> None:
        """End every iteration once what is waiting has been taken."""
        if self._queue is not None:
            self._queue.put_nowait(_CLOSED)

    async def items(self) -> AsyncIterator[AudioTick | StreamFrame]:
        if self._queue is None:
            raise RuntimeError("call `await stream.start()` before iterating its ticks")
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)  # later iterators end too
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, AudioTick) and item.segment_end and item.segment_id is not None:
                self.last_ended = max(self.last_ended, item.segment_id)
            yield item

    def _put_any(self, item: Any) -> None:
        assert self._queue is not None
        self._queue.put_nowait(item)

    def _scrub(self, item: Any) -> Any:
        """A tick of an interrupted segment becomes a silent idle tick."""
        if not isinstance(item, AudioTick) or item.segment_id not in self._interrupted:
            return item
        return replace(item, audio=np.zeros_like(item.audio), segment_id=None, segment_end=False, speaking=False)
