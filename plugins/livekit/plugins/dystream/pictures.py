"""What the video generator does with each picture the engine hands out: it becomes a livekit ``rtc.VideoFrame``
(with the diagnostic overlay when that is on), its quality rung is followed (a change is logged and told), and its
frame metrics are recorded: the stage times, the handoff, the listening latency, the engine's queue depths (read
once a second)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from livekit import rtc

from avatar.stream.frames import StreamFrame

from .diagnostics import flash_patch
from .log import logger
from .metrics import FrameMetrics, MetricsRecorder

ENGINE_DEPTHS = ("ticks_waiting", "self_queued_s", "other_pending_ms", "late_ticks")


class Pictures:
    """Turns the engine's pictures into video frames, following their rung and recording their metrics."""

    def __init__(
        self,
        engine_stats: Callable[[], Mapping[str, Any]],
        *,
        fps: float,
        metrics: MetricsRecorder | None = None,
        overlay: bool = False,
        on_rung: Callable[[str], None] | None = None,
    ) -> None:
        self._engine_stats = engine_stats
        self._metrics = metrics
        self._overlay = overlay
        self._on_rung = on_rung  # told the quality rung of the first picture and of every change
        self._stats_every = max(1, round(fps))  # engine queue depths are read once a second
        self._rung: str | None = None
        self._engine_depths: dict[str, float] = {}

    def video_frame(self, frame: StreamFrame) -> rtc.VideoFrame:
        handed_at = time.perf_counter()
        rgb = flash_patch(frame.rgb, frame.tick.audio) if self._overlay else frame.rgb
        height, width = rgb.shape[:2]
        data = memoryview(np.ascontiguousarray(rgb).reshape(-1))
        self._follow_rung(frame)
        self._record(frame, handed_at)
        return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGB24, data)

    def _follow_rung(self, frame: StreamFrame) -> None:
        if frame.rung == self._rung:
            return
        if self._rung is not None:
            logger.info(
                "avatar quality rung changed", extra={"rung": frame.rung, "previous": self._rung, "tick": frame.index}
            )
        self._rung = frame.rung
        if self._on_rung is not None:
            self._on_rung(frame.rung)

    def _record(self, frame: StreamFrame, handed_at: float) -> None:
        if self._metrics is None:
            return
        tick = frame.tick
        if frame.index % self._stats_every == 0:
            stats = self._engine_stats()
            self._engine_depths = {key: stats[key] for key in ENGINE_DEPTHS if key in stats}
        hears_user = tick.other_span[1] > tick.other_span[0]
        # the user's audio trailed the live edge by other_lag_ms when the tick was taken; the picture is ready now
        listening = tick.other_lag_ms + (handed_at - tick.taken_at) * 1000.0 if hears_user else None
        self._metrics.on_frame(
            FrameMetrics(
                index=frame.index,
                timestamp=time.time(),
                speaking=tick.speaking,
                segment_id=tick.segment_id,
                timings_ms=dict(frame.timings_ms),
                handoff_ms=(handed_at - frame.created_at) * 1000.0,
                other_lag_ms=tick.other_lag_ms,
                listening_latency_ms=listening,
                queue_depths=dict(self._engine_depths),
                rung=frame.rung,
            )
        )
