"""The avatar's metrics as livekit and Prometheus read them: a session summary becomes livekit's ``AvatarMetrics``,
and the recorder counts slots, rungs, interruptions and latencies in Prometheus."""

from __future__ import annotations

from livekit.agents import MetricsCollectedEvent
from livekit.agents.metrics.base import AvatarMetrics
from livekit.plugins.dystream.metrics import DyStreamMetrics, FrameMetrics, MetricsRecorder
from prometheus_client import REGISTRY

SAMPLES = {
    "shown": ("dystream_video_slots_total", {"outcome": "shown"}),
    "repeated": ("dystream_video_slots_total", {"outcome": "repeated"}),
    "dropped": ("dystream_video_slots_total", {"outcome": "dropped"}),
    "third": ("dystream_rung_pictures_total", {"rung": "third"}),
    "interruptions": ("dystream_interruptions_total", {}),
    "frames": ("dystream_frame_seconds_count", {}),
    "frame_seconds": ("dystream_frame_seconds_sum", {}),
    "listening": ("dystream_listening_latency_seconds_count", {}),
    "playback_seconds": ("dystream_playback_latency_seconds_sum", {}),
}


def samples() -> dict[str, float]:
    return {key: REGISTRY.get_sample_value(name, labels) or 0.0 for key, (name, labels) in SAMPLES.items()}


def frame(index: int, *, listening_ms: float | None) -> FrameMetrics:
    return FrameMetrics(
        index=index,
        timestamp=0.0,
        speaking=True,
        segment_id=1,
        timings_ms={"render": 90.0, "total": 120.0},
        handoff_ms=1.0,
        other_lag_ms=60.0,
        listening_latency_ms=listening_ms,
        queue_depths={},
        rung="third",
    )


def test_the_recorder_counts_in_prometheus() -> None:
    before = samples()
    recorder = MetricsRecorder(fps=25)
    recorder.on_frame(frame(0, listening_ms=200.0))
    recorder.on_frame(frame(1, listening_ms=None))  # no user audio in this one: no listening latency
    recorder.on_video_slot(shown=1, repeated=0, dropped=0)
    recorder.on_video_slot(shown=0, repeated=1, dropped=2)
    recorder.on_segment_started(playback_latency_ms=250.0)
    recorder.on_interruption(flush_ms=3.0)
    after = samples()
    delta = {key: round(after[key] - before[key], 6) for key in SAMPLES}
    assert delta == {
        "shown": 1,
        "repeated": 1,
        "dropped": 2,
        "third": 2,
        "interruptions": 1,
        "frames": 2,
        "frame_seconds": 0.24,
        "listening": 1,
        "playback_seconds": 0.25,
    }


def test_a_session_summary_is_livekits_avatar_metrics_with_the_videos_figures() -> None:
    recorder = MetricsRecorder(fps=25)
    for index in range(3):
        recorder.on_frame(frame(index, listening_ms=180.0))
    for shown, repeated, dropped in ((1, 0, 0), (1, 0, 0), (0, 1, 1)):
        recorder.on_video_slot(shown=shown, repeated=repeated, dropped=dropped)
    recorder.on_segment_started(playback_latency_ms=90.0)
    summary = recorder.summary(final=True)
    metrics = DyStreamMetrics.from_summary(summary)
    event = MetricsCollectedEvent(metrics=metrics)  # what the AgentSession's listeners receive
    assert isinstance(event.metrics, AvatarMetrics) and event.metrics is metrics
    assert metrics.metadata is not None and metrics.metadata.model_provider == "dystream"
    got = (metrics.final, metrics.frames, metrics.video_slots, metrics.pictures_shown, metrics.pictures_repeated)
    assert got == (True, 3, 3, 2, 1)
    assert (metrics.pictures_dropped, metrics.rung, metrics.segments) == (1, "third", 1)
    assert (metrics.playback_latency_p50_ms, metrics.listening_latency_p50_ms, metrics.frame_p50_ms) == (90, 180, 120)
    assert metrics.unique_fps == summary.video["unique_fps"]


def test_a_session_whose_pictures_miss_their_slots_is_told_once_what_to_change(caplog) -> None:
    recorder = MetricsRecorder(fps=25)

    def interval(shown: int, dropped: int) -> list:
        recorder.on_video_slot(shown=shown, repeated=0, dropped=dropped)
        with caplog.at_level("WARNING", logger="livekit.plugins.dystream"):
            caplog.clear()
            recorder.summarize()
        return [record for record in caplog.records if "miss their slots" in record.getMessage()]

    assert interval(shown=90, dropped=10) == []  # a few late pictures: the ladder's business
    warned = interval(shown=60, dropped=40)
    assert len(warned) == 1
    assert "avatar.playout_lead_ms" in warned[0].getMessage()
    assert (warned[0].pictures, warned[0].dropped) == (100, 40)  # this interval's, not the session's
    assert interval(shown=50, dropped=50) == []  # once a session
