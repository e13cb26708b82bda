"""Two minutes of conversation: the A/V offset does not drift by more than a frame, memory does not grow."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from bench.harness import measure
from bench.harness.scenario import RECEIVER_SETTLE_S as SETTLE_S
from bench.harness.scenario import Session

SOAK_S = 120.0
pytestmark = pytest.mark.timeout(400)


async def soak(deployment):
    session = Session(deployment)
    conversation = await session.join()
    await session.wait_playback_finished(conversation.joined_at)
    rss_start: dict[int, int] = {}
    started = time.time()
    while time.time() - started < SOAK_S:
        await session.wait_quiet()
        turn_started = time.time()
        await session.user_turn()
        await session.wait_playback_started(turn_started)
        await session.wait_playback_finished(turn_started)
        if not rss_start and time.time() - started > 20.0:
            rss_start = deployment.agent.rss_by_process()  # after the first turns: caches and buffers are warm
    rss_end = deployment.agent.rss_by_process()
    await session.leave(wait_closed=True)
    return conversation, started, rss_start, rss_end


def test_two_minutes_without_drift_or_memory_growth(deployments) -> None:
    deployment = deployments("in-process")
    conversation, started, rss_start, rss_end = asyncio.run(soak(deployment))
    problems = []
    # every process alive at both samples (the job's included): resident memory grew less than 5 %
    common = set(rss_start) & set(rss_end)
    growth = {pid: round(rss_end[pid] / rss_start[pid] - 1.0, 4) for pid in common}
    if not common:
        problems.append("no process of the worker lived through the soak")
    elif max(growth.values()) >= 0.05:
        problems.append(f"resident memory grew by {max(growth.values()):.1%} (per process: {growth})")
    times, pcm = conversation.client.audio_timeline()
    flashes = measure.video_flash_onsets(conversation.client.video)
    # from when the receiver's audio jitter buffer has settled (see Conversation.av_offsets_ms)
    pairs = [
        (t, o) for t, o in measure.av_pairs(measure.audio_beep_onsets(times, pcm), flashes) if t >= times[0] + SETTLE_S
    ]
    offsets = [o for _, o in pairs]
    if len(offsets) < 50:
        problems.append(f"only {len(offsets)} beep/flash pairs in {SOAK_S:.0f} s")
    else:
        # drift: the trend of the offset over the soak, by more than a frame. A trend, not the last 30 s against the
        # first: a single flash can come a picture late (a beep's first picture rendered after its slot), and a few
        # of them in one window would read as drift.
        t = np.array([t for t, _ in pairs])
        slope, _ = np.polyfit(t - t[0], np.array(offsets), 1)
        drift = abs(float(slope) * float(t[-1] - t[0]))
        if drift > 40.0:
            rounded = [round(o) for o in offsets]
            problems.append(f"A/V offset drifted by {drift:.0f} ms over {t[-1] - t[0]:.0f} s (offsets: {rounded})")
    fps, _ = measure.video_rate(conversation.client.video, conversation.client.video[-1].t - 30.0, 29.0)
    if not 24.0 <= fps <= 26.0:
        problems.append(f"{fps:.1f} fps over the last 30 s")
    assert not problems, "; ".join(problems)
