"""The avatar's Prometheus metrics, beside livekit-agents' own (``lk_agents_*``) on the worker's ``/metrics``.

livekit-agents serves them when the worker has a ``prometheus_port``; with ``prometheus_multiproc_dir`` (or the
``PROMETHEUS_MULTIPROC_DIR`` variable) the job processes, where the avatars run, write theirs to files there and
the worker's endpoint adds them up. Counters and histograms only, so they sum across processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PICTURE_SLOTS = Counter(
    "dystream_video_slots",
    "Video slots of the published avatar track: shown (its own picture), repeated (the last one again), "
    "dropped (pictures that came after their slot)",
    ["outcome"],
)
RUNG_PICTURES = Counter("dystream_rung_pictures", "Pictures rendered, by the quality rung they were made at", ["rung"])
INTERRUPTIONS = Counter("dystream_interruptions", "Agent speech cleared by an interruption (clear_buffer)")
FRAME_SECONDS = Histogram(
    "dystream_frame_seconds",
    "Engine time per picture (audio encoders, transformer, flow head, renderer)",
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12),
)
LISTENING_SECONDS = Histogram(
    "dystream_listening_latency_seconds",
    "The user's audio to the picture that reacts to it (lookahead and engine; network and playout not included)",
    buckets=(0.04, 0.08, 0.12, 0.16, 0.24, 0.32, 0.48, 0.64, 1.0, 2.0),
)
PLAYBACK_SECONDS = Histogram(
    "dystream_playback_latency_seconds",
    "The agent's first audio of a reply to its first tick handed to the publisher",
    buckets=(0.04, 0.08, 0.12, 0.16, 0.24, 0.32, 0.48, 0.64, 1.0, 2.0),
)
