"""Wall-clock pacing of the streaming engine (design.md, "The clock").

Tick k is due at ``t0 + k / fps - run_ahead``: frames are produced at the output rate, at most ``run_ahead``
before their slot, so the frames waiting for the publisher stay few. When a tick starts more than ``max_late``
after it was due (a slow first frame, a stall, a model too slow for real time), the clock is re-anchored so the
next tick is due one period later instead of the engine bursting to catch up: media time (``k / fps``) then runs
behind the wall clock by the stall, which the publisher absorbs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class FrameClock:
    def __init__(
        self,
        fps: float,
        run_ahead_s: float,
        max_late_s: float | None = None,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.period = 1.0 / fps
        self.run_ahead = run_ahead_s
        self.max_late = 2 * self.period if max_late_s is None else max_late_s
        self.now = now
        self.t0 = now()
        self.reanchors = 0
        self.late_ticks = 0

    def start(self) -> None:
        self.t0 = self.now()

    def due(self, k: int) -> float:
        return self.t0 + k * self.period - self.run_ahead

    def wait(self, k: int, stop: threading.Event) -> bool:
        """Sleep until tick ``k`` is due (False when ``stop`` was set meanwhile)."""
        delay = self.due(k) - self.now()
        if delay > 0:
            return not stop.wait(delay)
        if -delay > self.run_ahead + 1e-6:  # started after its slot: the frame will be late
            self.late_ticks += 1
        if -delay > self.max_late:
            self.t0 += -delay  # tick k is due now; later ticks one period apart from here
            self.reanchors += 1
        return not stop.is_set()
