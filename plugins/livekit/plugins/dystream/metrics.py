"""Avatar metrics: one record per frame, and a per-session summary emitted periodically and at the end.

Per rendered picture (``FrameMetrics``): the engine's stage times, the quality rung, how long the picture waited
before the generator took it, the engine's queue depths, and the estimated listening latency. Per session
(``SessionMetrics``): the published video (slots per second, pictures shown, repeated and dropped, the unique fps),
the rung now and how many pictures each rung made, segments, playback latency (first agent audio pushed -> its first
tick handed to the runner), listening latency, interruptions and how long each flush took. Both are delivered
through ``emit`` (the avatar session forwards them as ``"metrics_collected"``) and logged: summaries at info every
``interval_s``, frames at debug. The avatar session also hands each summary to its ``AgentSession`` as a livekit
metrics event (``DyStreamMetrics``, an ``AvatarMetrics``), and the recorder counts pictures, rungs and latencies in
Prometheus (``prometheus.py``).

Definitions:
- listening latency of a picture = how far its tick's "other" audio trailed the live edge when the tick was taken
  (``other_lag_ms``, the lookahead) + the time from the tick to the picture; only for ticks that hold received user
  audio. The playout lead, the network and client playout are not included.
- unique fps = pictures shown at their own slot per second; repeated = slots that showed the last picture again
  (the engine was late, or renders every other tick on its current rung); dropped = pictures that came after
  their slot.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from livekit.agents.metrics.base import AvatarMetrics, Metadata

from . import prometheus
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
    queue_depths: Mapping[str, float]  # engine queues
    rung: str = "full"  # the quality rung the picture was made at
    type: Literal["dystream_frame_metrics"] = "dystream_frame_metrics"


@dataclass(frozen=True)
class SessionMetrics:
    timestamp: float
    duration_s: float
    frames: int  # pictures rendered
    fps: float
    video: Mapping[str, float]  # slots, shown, repeated, dropped, slot_fps, unique_fps
    rung: str
    rung_frames: Mapping[str, int]  # pictures made at each rung
    speaking_frames: int
    segments: int
    interruptions: int
    playback_latency_ms: Mapping[str, float]  # p50, p95, last
    listening_latency_ms: Mapping[str, float]  # p50, p95
    flush_ms: Mapping[str, float]  # p50, max: clear_buffer call -> queues flushed
    stage_ms: Mapping[str, Mapping[str, float]]  # stage -> p50, p95
    final: bool = False
    type: Literal["dystream_session_metrics"] = "dystream_session_metrics"


class DyStreamMetrics(AvatarMetrics):
    """A ``SessionMetrics`` summary as livekit's ``AvatarMetrics``, for the ``AgentSession``'s ``metrics_collected``
    (and so for livekit's metrics tooling); the full summary stays on the avatar session's own event."""

    final: bool = False
    duration_s: float = 0.0
    frames: int = 0  # pictures rendered
    unique_fps: float = 0.0  # pictures shown at their own slot per second
    video_slots: int = 0
    pictures_shown: int = 0
    pictures_repeated: int = 0
    pictures_dropped: int = 0
    rung: str = "full"  # the quality rung now
    segments: int = 0
    interruptions: int = 0
    playback_latency_p50_ms: float | None = None
    listening_latency_p50_ms: float | None = None
    frame_p50_ms: float | None = None  # engine time per picture

    @classmethod
    def from_summary(cls, summary: SessionMetrics) -> DyStreamMetrics:
        video = summary.video
        return cls(
            timestamp=summary.timestamp,
            metadata=Metadata(model_name="DyStream", model_provider="dystream"),
            final=summary.final,
            duration_s=summary.duration_s,
            frames=summary.frames,
            unique_fps=video.get("unique_fps", 0.0),
            video_slots=int(video.get("slots", 0)),
            pictures_shown=int(video.get("shown", 0)),
            pictures_repeated=int(video.get("repeated", 0)),
            pictures_dropped=int(video.get("dropped", 0)),
            rung=summary.rung,
            segments=summary.segments,
            interruptions=summary.interruptions,
            playback_latency_p50_ms=summary.playback_latency_ms.get("p50"),
            listening_latency_p50_ms=summary.listening_latency_ms.get("p50"),
            frame_p50_ms=summary.stage_ms.get("total", {}).get("p50"),
        )


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


LATE_SHARE = 0.25  # of the pictures of a summary interval that came after their slot: warn
LATE_MIN_PICTURES = 10


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
        self._video = {"slots": 0, "shown": 0, "repeated": 0, "dropped": 0}
        self._video_since: float | None = None  # the first slot
        self._rung_frames: dict[str, int] = {}
        self._rung = "full"
        self._last_summary = time.perf_counter()
        self._video_at_summary = dict(self._video)
        self._warned_late = False

    def on_frame(self, metrics: FrameMetrics) -> None:
        self.frames += 1
        self._rung = metrics.rung
        self._rung_frames[metrics.rung] = self._rung_frames.get(metrics.rung, 0) + 1
        self.speaking_frames += int(metrics.speaking)
        for stage, ms in metrics.timings_ms.items():
            self._stages.setdefault(stage, deque(maxlen=self.window)).append(float(ms))
        if metrics.listening_latency_ms is not None:
            self._listening.append(metrics.listening_latency_ms)
            prometheus.LISTENING_SECONDS.observe(metrics.listening_latency_ms / 1000.0)
        prometheus.RUNG_PICTURES.labels(metrics.rung).inc()
        if "total" in metrics.timings_ms:
            prometheus.FRAME_SECONDS.observe(metrics.timings_ms["total"] / 1000.0)
        logger.debug(
            "avatar frame",
            extra={
                "index": metrics.index,
                "speaking": metrics.speaking,
                "total_ms": metrics.timings_ms.get("total"),
                "handoff_ms": round(metrics.handoff_ms, 2),
                "listening_ms": metrics.listening_latency_ms,
                "rung": metrics.rung,
            },
        )
        self._send(metrics)
        if time.perf_counter() - self._last_summary >= self.interval_s:
            self.summarize()

    def on_video_slot(self, *, shown: int, repeated: int, dropped: int) -> None:
        """One video slot of the published track: its own picture (``shown``) or the last one again; ``dropped``
        pictures came too late."""
        if self._video_since is None:
            self._video_since = time.perf_counter()
        self._video["slots"] += 1
        self._video["shown"] += shown
        self._video["repeated"] += repeated
        self._video["dropped"] += dropped
        for outcome, count in (("shown", shown), ("repeated", repeated), ("dropped", dropped)):
            if count:
                prometheus.PICTURE_SLOTS.labels(outcome).inc(count)

    def on_segment_started(self, playback_latency_ms: float) -> None:
        self.segments += 1
        self._playback.append(playback_latency_ms)
        prometheus.PLAYBACK_SECONDS.observe(playback_latency_ms / 1000.0)

    def on_interruption(self, flush_ms: float) -> None:
        self.interruptions += 1
        self._flush.append(flush_ms)
        prometheus.INTERRUPTIONS.inc()

    def summary(self, *, final: bool = False) -> SessionMetrics:
        now = time.perf_counter()
        duration = now - self.started_at
        video_s = now - self._video_since if self._video_since is not None else 0.0
        return SessionMetrics(
            timestamp=time.time(),
            duration_s=round(duration, 3),
            frames=self.frames,
            fps=round(self.frames / duration, 3) if duration > 0 else 0.0,
            video={
                **self._video,
                "slot_fps": round(self._video["slots"] / video_s, 3) if video_s > 0 else 0.0,
                "unique_fps": round(self._video["shown"] / video_s, 3) if video_s > 0 else 0.0,
            },
            rung=self._rung,
            rung_frames=dict(self._rung_frames),
            speaking_frames=self.speaking_frames,
            segments=self.segments,
            interruptions=self.interruptions,
            playback_latency_ms=_percentiles(self._playback, "p50", "p95", "last"),
            listening_latency_ms=_percentiles(self._listening, "p50", "p95"),
            flush_ms=_percentiles(self._flush, "p50", "max"),
            stage_ms={stage: _percentiles(values, "p50", "p95") for stage, values in self._stages.items()},
            final=final,
        )

    def summarize(self, *, final: bool = False) -> SessionMetrics:
        """Build, log (info) and emit the session summary; warn (once a session) when pictures miss their slots."""
        self._last_summary = time.perf_counter()
        summary = self.summary(final=final)
        self._warn_if_late(summary)
        logger.info(
            "avatar session metrics",
            extra={
                "final": final,
                "frames": summary.frames,
                "fps": summary.fps,
                "segments": summary.segments,
                "interruptions": summary.interruptions,
                "playback_latency_ms": dict(summary.playback_latency_ms),
                "listening_latency_ms": dict(summary.listening_latency_ms),
                "flush_ms": dict(summary.flush_ms),
                "video": dict(summary.video),
                "rung": summary.rung,
                "rung_frames": summary.rung_frames,
                "total_ms": dict(summary.stage_ms.get("total", {})),
            },
        )
        self._send(summary)
        return summary

    def _warn_if_late(self, summary: SessionMetrics) -> None:
        """A machine too slow for the engine's lowest rung: many pictures come after their slot and the video shows
        the last one again instead. Say so once, with what to change."""
        shown, dropped = (self._video[k] - self._video_at_summary[k] for k in ("shown", "dropped"))
        self._video_at_summary = dict(self._video)
        if self._warned_late or shown + dropped < LATE_MIN_PICTURES or dropped < LATE_SHARE * (shown + dropped):
            return
        self._warned_late = True
        logger.warning(
            "avatar pictures miss their slots: the engine needs longer per picture than the playout lead and the "
            "video delay give it; raise avatar.playout_lead_ms (avatar.remote_playout_lead_ms on an avatar worker) "
            "or run the model on a faster device",
            extra={
                "pictures": shown + dropped,
                "dropped": dropped,
                "engine_ms": dict(summary.stage_ms.get("total", {})),
                "rung": summary.rung,
            },
        )

    def _send(self, metrics: FrameMetrics | SessionMetrics) -> None:
        if self.emit is None:
            return
        try:
            self.emit(metrics)
        except Exception as error:  # noqa: BLE001 - a listener's bug must not stop the video
            logger.warning("metrics listener failed", extra={"error": str(error)})
