"""The agent's speech goes to a remote avatar worker at the pace it is heard, a little ahead.

TTS engines produce speech faster than real time, a reply often at once. ``DataStreamAudioOutput`` writes every
frame to the data stream as it comes, so each reply reached the avatar worker as one burst of data packets. While
the worker took a burst in, the audio it sends fell behind: receivers concealed about 100 ms of the avatar's voice
at the start of each reply and raised their audio jitter buffer from 40 ms to 150 ms for the rest of the call, so the
video ran that much ahead of the voice. ``PacedAudioOutput`` sends each segment at most ``lead`` ahead of real time,
counted from its first frame: the worker always holds the lead of speech (plus its own prebuffer) and gets the rest
as it plays. Interruptions and segment ends restart the count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc
from livekit.agents.voice.avatar import DataStreamAudioOutput


class SendPacer:
    """Holds a sender back so that what it has sent of a segment stays at most ``lead_s`` ahead of real time."""

    def __init__(
        self,
        lead_s: float,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.lead_s = lead_s
        self._now = now
        self._sleep = sleep
        self._started_at: float | None = None
        self._sent_s = 0.0

    def restart(self) -> None:
        """A new segment: its first frame starts the count again."""
        self._started_at = None
        self._sent_s = 0.0

    async def sent(self, duration_s: float) -> None:
        """``duration_s`` more of the segment has been sent; returns once the next may be sent."""
        now = self._now()
        if self._started_at is None:
            self._started_at = now
        self._sent_s += duration_s
        ahead = self._sent_s - (now - self._started_at)
        if ahead > self.lead_s:
            await self._sleep(ahead - self.lead_s)


class PacedAudioOutput(DataStreamAudioOutput):
    """``DataStreamAudioOutput`` that sends each segment at most ``lead_s`` ahead of real time (``SendPacer``)."""

    def __init__(self, room: rtc.Room, *, lead_s: float, **kwargs: Any) -> None:
        super().__init__(room, **kwargs)
        self._pacer = SendPacer(lead_s)

    @property
    def send_lead_s(self) -> float:
        """How far ahead of real time each segment is sent at most, in seconds (``lead_s``; ``AvatarSession`` sets
        ``avatar.remote_send_lead_ms``): how much of the speech the avatar worker holds before it plays it."""
        return self._pacer.lead_s

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)  # the first frame waits for the avatar worker: the count starts after it
        await self._pacer.sent(frame.duration)

    def flush(self) -> None:
        super().flush()
        self._pacer.restart()

    def clear_buffer(self) -> None:
        super().clear_buffer()
        self._pacer.restart()
