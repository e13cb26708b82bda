"""``PlayoutSource``: the avatar's ``rtc.AudioSource``, which keeps a lead of audio queued and knows when it leaves.

The native source sends 10 ms of its queue every 10 ms while it holds any; when it runs dry it sends nothing, and the
audio captured next leaves that much later than a continuous stream would have. Two things follow. (Each capture
returns when its audio starts to leave: the runner shows the matching picture then, ``pacer.FrameSlots``.)

- When the queued audio leaves. ``rtc.AudioSource.queued_duration`` assumes the queue never ran dry: after a dry
  spell of ``d`` it reports ``d`` less than is queued, for as long as the audio keeps flowing. The runner schedules
  each video frame by this figure, so every dry spell moved the video ahead of its audio for the rest of the call
  (-40 to -55 ms measured on the remote avatar worker). Here it is the time the queue will be empty,
  ``max(empty_at, now) + duration`` at each capture, which stays right across dry spells; the spells are counted.
- Not running dry. The source keeps about ``lead`` of audio queued: each idle frame (no speech) brings ``frame`` of
  silence, a little more or less while the queue holds less or more than the lead; an interruption empties the
  queue and puts the lead of silence straight back. A frame the engine delivers late then delays nothing the viewer
  sees, as long as the lead covers it, and the stream the receivers get never pauses (a pause made their jitter
  buffers hold the audio longer from then on).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from livekit import rtc

from .log import logger


class PlayoutSource(rtc.AudioSource):
    def __init__(
        self,
        sample_rate: int,
        num_channels: int,
        *,
        lead_s: float,
        frame_s: float,
        now: Callable[[], float] = time.monotonic,
        on_clear: Callable[[], None] | None = None,
    ) -> None:
        # the native queue takes the lead, an idle frame and a few late frames delivered at once without making
        # capture_frame wait (it does while more than queue_size_ms is queued)
        queue_ms = 10 * math.ceil((lead_s + 4 * frame_s) * 100)
        super().__init__(sample_rate, num_channels, queue_size_ms=queue_ms)
        self.lead_s = lead_s
        self.frame_s = frame_s
        self._now = now
        self._on_clear = on_clear
        self._empty_at = 0.0  # when the last queued sample will have left
        self._refills: set[asyncio.Task[Any]] = set()
        self.dry_spells = 0
        self.dry_s = 0.0  # total time the queue ran dry between two captures

    @property
    def queued_duration(self) -> float:
        return max(self._empty_at - self._now(), 0.0)

    async def capture_frame(self, frame: rtc.AudioFrame) -> float:  # type: ignore[override]
        """Queue ``frame``; returns when it starts to leave (the ``now`` clock)."""
        starts_at = self._count(frame)
        await super().capture_frame(frame)
        return starts_at

    def _count(self, frame: rtc.AudioFrame) -> float:
        now = self._now()
        if not frame.samples_per_channel:
            return max(self._empty_at, now)
        if 0.0 < self._empty_at < now:
            self.dry_spells += 1
            self.dry_s += now - self._empty_at
            logger.debug("avatar audio ran dry", extra={"ms": round((now - self._empty_at) * 1000.0, 1)})
        starts_at = max(self._empty_at, now)
        self._empty_at = starts_at + frame.samples_per_channel / self.sample_rate
        return starts_at

    async def capture_idle_frame(self) -> float:
        """An idle frame's silence, 10 ms longer or shorter while the queue holds less or more than the lead.

        The queue moves towards the lead by at most a quarter frame per frame: the runner schedules each video frame
        by what is queued, and a larger step would stretch the video's frame spacing by as much (a visible gap).
        """
        step = self.frame_s / 4
        correction = min(max(self.lead_s - self.queued_duration, -step), step)
        return await self.capture_frame(self._silence(self.frame_s + correction))

    def clear_queue(self) -> None:
        """Drop the queued audio and queue the lead of silence in its place, so the stream does not pause."""
        super().clear_queue()
        self._empty_at = 0.0
        if self._on_clear is not None:
            self._on_clear()
        if self.lead_s > 0:
            silence = self._silence(self.lead_s)
            self._count(silence)  # counted now: a video frame scheduled before the capture below runs sees it
            task = asyncio.get_running_loop().create_task(super().capture_frame(silence))
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)

    async def refilled(self) -> None:
        """Return once the silence that interruptions put back is queued in the native source."""
        await asyncio.gather(*self._refills)

    def _silence(self, seconds: float) -> rtc.AudioFrame:
        samples = self.sample_rate // 100 * round(seconds * 100)  # the native source sends 10 ms at a time
        return rtc.AudioFrame(bytes(2 * samples * self.num_channels), self.sample_rate, self.num_channels, samples)

    async def aclose(self) -> None:
        for task in self._refills:
            task.cancel()
        await super().aclose()
