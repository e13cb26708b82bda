"""The engine's own figures: what it made, and per-stage times over its last frames (``AvatarStream.stats``, the
``stream summary`` and ``stream closed`` log lines)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from avatar.stream.frames import StreamFrame
from avatar.stream.timing import STAGES

TIMING_WINDOW = 500  # frames kept for the per-stage percentiles
SUMMARY_KEYS = (
    "ticks",
    "frames_produced",
    "unique_fps",
    "rung",
    "rung_changes",
    *(f"{stage}_ms_{q}" for stage in STAGES for q in ("p50", "p95")),
    "late_ticks",
    "engine_sessions",
    "engine_batched_calls",
)


class FrameStats:
    """Pictures made (their times and when they were ready) over the last ``TIMING_WINDOW`` frames."""

    def __init__(self) -> None:
        self.produced = 0
        self._timings: dict[str, deque[float]] = {stage: deque(maxlen=TIMING_WINDOW) for stage in STAGES}
        self._created: deque[float] = deque(maxlen=TIMING_WINDOW)

    def record(self, frame: StreamFrame) -> None:
        self.produced += 1
        self._created.append(frame.created_at)
        for stage, ms in frame.timings_ms.items():
            self._timings[stage].append(ms)

    def unique_fps(self) -> float:
        """Pictures per second over the window."""
        created = list(self._created)
        if len(created) < 2 or created[-1] <= created[0]:
            return 0.0
        return (len(created) - 1) / (created[-1] - created[0])

    def percentiles(self) -> dict[str, float]:
        """``<stage>_ms_p50`` and ``<stage>_ms_p95`` of every stage timed so far."""
        out: dict[str, float] = {}
        for stage, values in self._timings.items():
            if values:
                p50, p95 = np.percentile(np.asarray(values), [50, 95])
                out[f"{stage}_ms_p50"], out[f"{stage}_ms_p95"] = float(p50), float(p95)
        return out


def summary(stats: dict[str, Any]) -> dict[str, Any]:
    """The figures a log line carries, floats rounded."""
    return {key: round(stats[key], 2) if isinstance(stats.get(key), float) else stats.get(key) for key in SUMMARY_KEYS}
