"""AvatarAudioOutput: the agent's speech and playback reports go to and come from the dispatched avatar only."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.plugins.dystream.testing import FakeRoom
from livekit.plugins.dystream.trusted_output import AvatarAudioOutput, is_dispatched_avatar

AVATAR = "dystream-avatar-5be1c0d2e3f4a5b6c7d8e9f0"
AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
FINISHED = json.dumps({"playback_position": 1.0, "interrupted": False})


async def settle() -> None:
    """Let the callbacks and tasks that are ready run: a count of event-loop turns, not a time (no thread and no
    clock is involved), more than an output that sent at once would need to open its stream."""
    for _ in range(20):
        await asyncio.sleep(0)


def output_for(room: FakeRoom) -> AvatarAudioOutput:
    return AvatarAudioOutput(
        room,
        lead_s=0.5,
        destination_identity=AVATAR,
        sample_rate=16000,
        wait_remote_track=None,
        wait_playback_start=True,
    )


def test_only_an_agent_publishing_for_this_agent_is_the_avatar() -> None:
    room = FakeRoom(local_identity="agent-1")
    genuine = room.join(AVATAR, kind=AGENT_KIND, **{ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"})
    assert is_dispatched_avatar(genuine, "agent-1")
    assert not is_dispatched_avatar(genuine, "agent-2")  # another agent's avatar
    impostor = room.join(AVATAR, **{ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"})  # a user token, claiming it
    assert not is_dispatched_avatar(impostor, "agent-1")
    assert not is_dispatched_avatar(None, "agent-1")


async def test_an_impostor_under_the_avatars_identity_gets_nothing_and_its_reports_are_rejected() -> None:
    room = FakeRoom(local_identity="agent-1")
    output = output_for(room)
    finished: list[object] = []
    output.on("playback_finished", finished.append)
    await settle()
    room.join(AVATAR, **{ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"})  # took the identity with a user token
    speech = rtc.AudioFrame(np.arange(320, dtype=np.int16).tobytes(), 16000, 1, 320)
    capture = asyncio.create_task(output.capture_frame(speech))
    await settle()
    # speech waits for the avatar: nothing is sent while the impostor holds the identity
    assert room.local_participant.byte_streams == [] and not capture.done()
    assert await room.call_rpc("lk.playback_finished", AVATAR, FINISHED) == "reject"
    assert await room.call_rpc("lk.playback_started", AVATAR) == "reject"
    assert finished == []

    room.leave(AVATAR)
    room.join(AVATAR, kind=AGENT_KIND, **{ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"})  # the dispatched avatar
    await asyncio.wait_for(capture, 5.0)  # a deadline, not a pause: the frame is captured once it is written
    [stream] = room.local_participant.byte_streams
    assert stream.destination_identities == [AVATAR] and stream.chunks == [bytes(speech.data)]
    assert await room.call_rpc("lk.playback_started", AVATAR) == "ok"
