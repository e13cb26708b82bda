"""The user leaves and comes back to the same room: the agent stays, the avatar follows the new connection."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.harness import measure
from bench.harness.scenario import Session

pytestmark = pytest.mark.timeout(300)


async def leave_and_rejoin(deployment):
    first = Session(deployment)
    await first.join()
    await first.wait_playback_finished(first.conversation.joined_at)  # the greeting
    await first.leave()
    await asyncio.sleep(1.0)  # the room stays open 3 s after the last user left

    again = Session(deployment, room=first.room)
    conversation = await again.join(timeout=30.0)
    await again.wait_quiet()
    turn_started = time.time()
    turn = await again.user_turn()
    await again.wait_playback_started(turn_started)
    finished = await again.wait_playback_finished(turn_started)
    await asyncio.sleep(max(0.0, conversation.first_video_at + 6.0 - time.time()))
    await again.leave(wait_closed=True)
    return first, again, conversation, turn, finished


def test_the_avatar_serves_the_user_again_after_they_rejoin(deployments) -> None:
    deployment = deployments("in-process")
    first, again, conversation, turn, finished = asyncio.run(leave_and_rejoin(deployment))
    started = [e for e in again.events() if e["event"] == "session_started"]
    assert len(started) == 1, "the agent started a new session instead of following the user"
    fps, gap = measure.video_rate(conversation.client.video, conversation.first_video_at + 0.5, 5.0)
    assert 24.0 <= fps <= 26.0 and gap <= 80.0, f"after rejoining: {fps:.1f} fps, gap {gap:.0f} ms"
    assert turn.listening_at is not None and turn.listening_at - turn.onset <= 0.3, "the avatar did not listen"
    assert finished["interrupted"] is False
    times, pcm = conversation.client.audio_timeline()
    assert measure.audio_beep_onsets(times, pcm), "the rejoined user did not hear the agent's answer"
