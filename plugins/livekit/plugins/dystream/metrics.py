"""Avatar metrics: one record per frame, and a per-session summary emitted periodically and at the end.

Per frame (``FrameMetrics``): the engine's stage times, how long the frame waited before the runner took it, the
queue depths (engine and synchronizer), and the estimated listening latency. Per session (``SessionMetrics``):
frames and fps, segments, playback latency (first agent audio pushed -> first frame carrying it handed to the
synchronizer), listening latency, interruptions and how long each flush took, and the A/V offset inside the
synchronizer. Both are delivered through ``emit`` (the avatar session forwards them as ``"metrics_collected"``) and
logged: summaries at info every ``interval_s``, frames at debug.

Definitions:
- listening latency of a frame = how far its "other" audio trailed the live edge when it was generated
  (``other_lag_ms``, lookahead + compute) + the wait until the runner took it + the video frames already queued in
  the synchronizer ahead of it (each 1/fps); only for frames that hold received user audio. Network and client
  playout are not included.
- A/V offset = audio queued in the synchronizer's ``AudioSource`` minus the video queued in its frame queue; positive
  means audio leaves later than the video frame it belongs to. Sampled on speaking frames only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .log import logger


@dataclass(frozen=True)
class FrameMetrics:
    index: int
    timestamp: float  # time.time() when the frame was handed on
    speaking: bool
    segment_id: int | None
    timings_ms: Mapping[str, float]  # engine stages: audio, transformer, head, render, total
    handoff_ms: float  # frame ready -> taken by the runner
    other_lag_ms: float
    listening_latency_ms: float | None  # None: the frame holds no received user audio
    queue_depths: Mapping[str, float]  # engine queues, sync_audio_ms, sync_video_frames
    type: Literal["dystream_frame_metrics"] = "dystream_frame_metrics"


@dataclass(frozen=True)
class SessionMetrics:
    timestamp: float
    duration_s: float
    frames: int
    fps: float
    speaking_frames: int
    segments: int
    interruptions: int
    playback_latency_ms: Mapping[str, float]  # p50, p95, last
    listening_latency_ms: Mapping[str, float]  # p50, p95
    flush_ms: Mapping[str, float]  # p50, max: clear_buffer call -> queues flushed
    av_offset_ms: Mapping[str, float]  # mean, max_abs
    stage_ms: Mapping[str, Mapping[str, float]]  # stage -> p50, p95
    final: bool = False
    type: Literal["dystream_session_metrics"] = "dystream_session_metrics"


def _percentiles(values: deque[float] | list[float], *names: str) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    out: dict[str, float] = {}
    for name in names:
        if name == "last":
            out[name] = float(array[-1])
        elif name == "max":
            out[name] = float(array.max())
        elif name == "mean":
            out[name] = float(array.mean())
        elif name == "max_abs":
            out[name] = float(np.abs(array).max())
        else:
            out[name] = float(np.percentile(array, float(name[1:])))
    return {k: round(v, 3) for k, v in out.items()}


def sync_queue_depths(av_sync: Any) -> tuple[float, int]:
    """(audio ms, video frames) queued in a livekit ``AVSynchronizer`` (0, 0 when it does not expose them)."""
    if av_sync is None:
        return 0.0, 0
    source = getattr(av_sync, "_audio_source", None)
    queue = getattr(av_sync, "_video_queue", None)
    audio_ms = float(getattr(source, "queued_duration", 0.0)) * 1000.0 if source is not None else 0.0
    video = queue.qsize() if queue is not None else 0
    return audio_ms, video


@dataclass
class MetricsRecorder:
    """Collects frame and session metrics; ``emit`` receives every ``FrameMetrics`` and ``SessionMetrics``."""

    fps: float
    emit: Callable[[FrameMetrics | SessionMetrics], None] | None = None
    interval_s: float = 10.0
    window: int = 2000  # frames kept for percentiles

    started_at: float = field(default_factory=time.perf_counter)
    frames: int = 0
    speaking_frames: int = 0
    segments: int = 0
    interruptions: int = 0

    def __post_init__(self) -> None:
        self._stages: dict[str, deque[float]] = {}
        self._listening: deque[float] = deque(maxlen=self.window)
        self._playback: deque[float] = deque(maxlen=200)
        self._flush: deque[float] = deque(maxlen=200)
        self._av_offset: deque[float] = deque(maxlen=self.window)
        self._last_summary = time.perf_counter()

    def on_frame(self, metrics: FrameMetrics, *, av_offset_ms: float | None = None) -> None:
        self.frames += 1
        self.speaking_frames += int(metrics.speaking)
        for stage, ms in metrics.timings_ms.items():
            self._stages.setdefault(stage, deque(maxlen=self.window)).append(float(ms))
        if metrics.listening_latency_ms is not None:
            self._listening.append(metrics.listening_latency_ms)
        if av_offset_ms is not None:
            self._av_offset.append(av_offset_ms)
        logger.debug(
            "avatar frame",
            index=metrics.index,
            speaking=metrics.speaking,
            total_ms=metrics.timings_ms.get("total"),
            handoff_ms=round(metrics.handoff_ms, 2),
            listening_ms=metrics.listening_latency_ms,
        )
        self._send(metrics)
        if time.perf_counter() - self._last_summary >= self.interval_s:
            self.summarize()

    def on_segment_started(self, playback_latency_ms: float) -> None:
        self.segments += 1
        self._playback.append(playback_latency_ms)

    def on_interruption(self, flush_ms: float) -> None:
        self.interruptions += 1
        self._flush.append(flush_ms)

    def summary(self, *, final: bool = False) -> SessionMetrics:
        duration = time.perf_counter() - self.started_at
        return SessionMetrics(
            timestamp=time.time(),
            duration_s=round(duration, 3),
            frames=self.frames,
            fps=round(self.frames / duration, 3) if duration > 0 else 0.0,
            speaking_frames=self.speaking_frames,
            segments=self.segments,
            interruptions=self.interruptions,
            playback_latency_ms=_percentiles(self._playback, "p50", "p95", "last"),
            listening_latency_ms=_percentiles(self._listening, "p50", "p95"),
            flush_ms=_percentiles(self._flush, "p50", "max"),
            av_offset_ms=_percentiles(self._av_offset, "mean", "max_abs"),
            stage_ms={stage: _percentiles(values, "p50", "p95") for stage, values in self._stages.items()},
            final=final,
        )

    def summarize(self, *, final: bool = False) -> SessionMetrics:
        """Build, log (info) and emit the session summary."""
        self._last_summary = time.perf_counter()
        summary = self.summary(final=final)
        logger.info(
            "avatar session metrics",
            final=final,
            frames=summary.frames,
            fps=summary.fps,
            segments=summary.segments,
            interruptions=summary.interruptions,
            playback_latency_ms=dict(summary.playback_latency_ms),
            listening_latency_ms=dict(summary.listening_latency_ms),
            flush_ms=dict(summary.flush_ms),
            av_offset_ms=dict(summary.av_offset_ms),
            total_ms=dict(summary.stage_ms.get("total", {})),
        )
        self._send(summary)
        return summary

    def _send(self, metrics: FrameMetrics | SessionMetrics) -> None:
        if self.emit is None:
            return
        try:
            self.emit(metrics)
        except Exception as error:  # noqa: BLE001 - a listener's bug must not stop the video
            logger.warning("metrics listener failed", error=str(error))
