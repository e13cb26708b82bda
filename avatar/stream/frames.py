"""What the streaming engine hands out: one ``AudioTick`` every 40 ms (the agent's audio that tick plays) and a
``StreamFrame`` (the picture of a tick) when it is rendered. Plain data, so a consumer (the livekit plugin) reads
them without loading the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class AudioTick:
    """One 40 ms tick of the timeline, handed out when it is due."""

    index: int  # tick number since start(); media time = index / fps
    audio: np.ndarray  # [640] int16: the 40 ms of SELF audio this tick plays (zeros when idle)
    segment_id: int | None  # the self segment the audio belongs to (None: idle/silence)
    segment_end: bool  # True on the last tick of a segment that played to its end
    speaking: bool  # the tick carries segment audio
    other_lag_ms: float  # how far this tick's "other" audio trails the live edge
    other_span: tuple[int, int]  # indices [start, end) of the received user samples in this tick
    taken_at: float  # time.perf_counter() when the clock took it


@dataclass(frozen=True)
class StreamFrame:
    """The picture of one tick."""

    index: int  # the tick it shows
    rgb: np.ndarray  # [H, W, 3] uint8
    created_at: float  # time.perf_counter() when the frame was ready
    timings_ms: Mapping[str, float]  # per stage: audio, transformer, head, render, total
    rung: str  # the quality rung it was made at
    tick: AudioTick  # what the tick played and heard
    latent: torch.Tensor | None = field(default=None, repr=False)  # [512] motion latent, on the model's device
