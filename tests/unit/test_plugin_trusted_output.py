"""AvatarAudioOutput: the agent's speech and playback reports go to and come from the dispatched avatar only."""

from __future__ import annotations

import asyncio
import json

from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.plugins.dystream.testing import FakeRoom
from livekit.plugins.dystream.trusted_output import AvatarAudioOutput, is_dispatched_avatar

AVATAR = "dystream-avatar-5be1c0d2e3f4a5b6c7d8e9f0"
AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
FINISHED = json.dumps({"playback_position": 1.0, "interrupted": False})


async def settle() -> None:
    for _ in range(20):  # let the callbacks and tasks that are ready run
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
    await settle()
    assert not output._start_atask.done()  # speech waits for the avatar: nothing is sent while it holds the identity
    assert await room.call_rpc("lk.playback_finished", AVATAR, FINISHED) == "reject"
    assert await room.call_rpc("lk.playback_started", AVATAR) == "reject"
    assert finished == []

    room.leave(AVATAR)
    room.join(AVATAR, kind=AGENT_KIND, **{ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"})  # the dispatched avatar
    await settle()
    assert output._start_atask.done() and output._started
    assert await room.call_rpc("lk.playback_started", AVATAR) == "ok"
