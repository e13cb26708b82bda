"""PlayoutSource: how much audio is queued, across dry spells and interruptions, and the lead it keeps."""

from __future__ import annotations

import time

import numpy as np
import pytest
from livekit import rtc
from livekit.plugins.dystream.playout import PlayoutSource

RATE = 16000
FRAME_S = 0.04


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def speech(seconds: float = FRAME_S) -> rtc.AudioFrame:
    samples = int(seconds * RATE)
    pcm = (np.sin(np.arange(samples) * 0.1) * 8000).astype(np.int16)
    return rtc.AudioFrame(pcm.tobytes(), RATE, 1, samples)


def source(clock: Clock, lead_s: float) -> PlayoutSource:
    return PlayoutSource(RATE, 1, lead_s=lead_s, frame_s=FRAME_S, now=clock)


async def test_the_queued_audio_is_counted_right_after_the_queue_ran_dry() -> None:
    clock = Clock()
    playout = source(clock, lead_s=0.0)
    await playout.capture_frame(speech())
    clock.t += 0.1  # a stalled loop: the next frame comes 60 ms after the first one has left
    starts_at = await playout.capture_frame(speech())
    assert starts_at == clock.t  # nothing was queued: it leaves at once
    assert playout.queued_duration == pytest.approx(FRAME_S)
    assert playout.dry_spells == 1 and playout.dry_s == pytest.approx(0.06)
    await playout.aclose()


async def test_the_native_source_counts_a_dry_spell_off_what_is_queued() -> None:
    """Why PlayoutSource counts for itself: after a dry spell ``rtc.AudioSource`` reports less than is queued."""
    plain = rtc.AudioSource(RATE, 1)
    await plain.capture_frame(speech())
    stalled_from = time.monotonic()
    time.sleep(0.1)  # a stalled loop (not a wait for anything): the first frame has left by now
    await plain.capture_frame(speech())
    stall = time.monotonic() - stalled_from
    assert stall >= 0.1
    assert plain.queued_duration < FRAME_S - 0.02  # a frame was just queued, the stall taken off it
    await plain.aclose()


async def test_idle_frames_bring_the_queue_to_the_lead_a_quarter_frame_at_a_time() -> None:
    clock = Clock()
    playout = source(clock, lead_s=0.08)
    after: list[float] = []  # queued right after each idle frame's silence
    for _ in range(10):  # from empty: 10 ms more per frame until the lead is left when the next frame comes
        await playout.capture_idle_frame()
        after.append(playout.queued_duration)
        clock.t += FRAME_S
    assert np.allclose(after, np.minimum(0.05 + 0.01 * np.arange(10), 0.08 + FRAME_S))
    for _ in range(3):  # a burst of late speech frames
        await playout.capture_frame(speech())
    trimmed = []
    for _ in range(10):  # back down to the lead, 10 ms per frame
        clock.t += FRAME_S
        await playout.capture_idle_frame()
        trimmed.append(playout.queued_duration)
    assert np.allclose(trimmed, np.maximum(0.19 - 0.01 * np.arange(10), 0.08 + FRAME_S))
    assert playout.dry_spells == 0
    await playout.aclose()


async def test_an_interruption_drops_the_queue_and_puts_the_lead_of_silence_back() -> None:
    clock = Clock()
    playout = source(clock, lead_s=0.08)
    for _ in range(5):
        await playout.capture_frame(speech())
    playout.clear_queue()
    assert abs(playout.queued_duration - 0.08) < 1e-9  # counted at once, before the refill is captured
    await playout.refilled()
    assert abs(playout.queued_duration - 0.08) < 1e-9
    clock.t += 0.05
    await playout.capture_idle_frame()
    assert playout.dry_spells == 0
    await playout.aclose()


async def test_each_capture_returns_when_its_audio_starts_to_leave_and_a_clear_is_announced() -> None:
    clock = Clock()
    cleared: list[float] = []
    playout = PlayoutSource(RATE, 1, lead_s=0.08, frame_s=FRAME_S, now=clock, on_clear=lambda: cleared.append(clock.t))
    starts = []
    for _ in range(3):
        starts.append(await playout.capture_frame(speech()))
    assert starts == pytest.approx([100.0, 100.04, 100.08])  # queued back to back
    clock.t += 0.2  # the queue ran dry: the next audio leaves at once
    assert await playout.capture_frame(speech()) == pytest.approx(100.2)
    playout.clear_queue()
    assert cleared == [100.2]
    assert await playout.capture_idle_frame() == pytest.approx(100.28)  # behind the lead of silence put back
    await playout.aclose()
