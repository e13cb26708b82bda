"""Wall-clock pacing of the streaming engine's timeline (README, "Real time that holds").

Tick k is due at ``t0 + k / fps``. The clock is asked how long to wait for a tick; a tick asked for after its time
is late, and when it is more than ``max_late`` late (the event loop was blocked) the clock is re-anchored, so the
next tick is due one period later instead of the ticks bursting to catch up: the timeline (and the audio it hands
out) then runs behind the wall clock by the stall, and no audio is squeezed or skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class FrameClock:
    def __init__(
        self,
        fps: float,
        max_late_s: float | None = None,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.period = 1.0 / fps
        self.max_late = 2 * self.period if max_late_s is None else max_late_s
        self.now = now
        self.t0 = now()
        self.reanchors = 0
        self.late_ticks = 0

    def start(self, aligned_to: float | None = None) -> None:
        """Tick 0 is due now, or with ``aligned_to`` (a time on this clock) at the first tick of a timeline that started
        then: conversations stepped together tick in phase (``avatar.stream.device``)."""
        now = self.now()
        if aligned_to is None:
            self.t0 = now
        else:
            self.t0 = aligned_to + math.ceil(max(now - aligned_to, 0.0) / self.period) * self.period

    def due(self, k: int) -> float:
        return self.t0 + k * self.period

    def delay(self, k: int) -> float:
        """Seconds until tick ``k`` is due (<= 0: due now; the clock re-anchors when it is far behind)."""
        delay = self.due(k) - self.now()
        if delay < -self.period / 2:
            self.late_ticks += 1
        if -delay > self.max_late:
            self.t0 += -delay  # tick k is due now; later ticks one period apart from here
            self.reanchors += 1
            return 0.0
        return delay
