"""Only the dispatched avatar can be the avatar: an impostor in a real room, checked from both sides.

The user talks with the remote-mode agent; once the greeting has played, a participant joins under the avatar's
identity with a user token (as a misconfigured token server would mint one). LiveKit disconnects the real avatar
worker, the impostor holds the identity: it must get none of the agent's speech, and its playback reports must be
rejected.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from livekit import rtc

from bench.harness.client import user_token
from bench.harness.scenario import Session, until

pytestmark = pytest.mark.timeout(300)
MODE = "remote"  # an avatar of its own exists in remote mode only (in-process, the agent publishes the avatar)

AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
REFUSED_LOG = "is not the dispatched avatar"


async def impostor_visit(deployment) -> dict:
    session = Session(deployment)
    conversation = await session.join()
    try:
        await session.wait_playback_finished(conversation.joined_at, timeout=30.0)  # the greeting, from the avatar
        user_room = session.client.room
        agents = [p for p in user_room.remote_participants.values() if p.kind == AGENT_KIND]
        avatar = next(p for p in agents if p.identity.startswith("dystream-avatar"))
        agent = next(p for p in agents if p is not avatar)

        server = deployment.server
        impostor = rtc.Room()
        speech_streams: list[str] = []
        impostor.register_byte_stream_handler("lk.audio_stream", lambda reader, sender: speech_streams.append(sender))
        await impostor.connect(
            server.url, user_token(server.api_key, server.api_secret, session.room, avatar.identity, None)
        )
        try:
            replaced = await until(
                lambda: (
                    avatar.identity in user_room.remote_participants
                    and user_room.remote_participants[avatar.identity].kind != AGENT_KIND
                ),
                10.0,
                "the impostor to hold the avatar's identity",
            )
            reports = {}
            for method, payload in (
                ("lk.playback_started", ""),
                ("lk.playback_finished", json.dumps({"playback_position": 3.0, "interrupted": False})),
            ):
                reports[method] = await impostor.local_participant.perform_rpc(
                    destination_identity=agent.identity, method=method, payload=payload
                )
            # the user talks; the agent answers, and its output refuses to send the answer to the impostor
            turn_started = time.time()
            await session.user_turn()
            await until(lambda: session.events_after("speech_created", turn_started), 20.0, "the agent's answer")
            await until(lambda: REFUSED_LOG in agent_log_now(deployment), 20.0, "the agent to refuse the impostor")
            return {
                "avatar_identity": avatar.identity,
                "replaced": replaced,
                "reports": reports,
                "speech_streams": list(speech_streams),
                "finished_events": session.events_after("playback_finished", turn_started),
            }
        finally:
            await impostor.disconnect()
    finally:
        await session.leave()


def agent_log_now(deployment) -> str:
    return next(text for name, text in deployment.logs().items() if name.startswith("agent-"))


def test_an_impostor_under_the_avatars_identity_gets_no_speech_and_is_not_believed(deployments) -> None:
    visit = asyncio.run(impostor_visit(deployments("remote")))
    # the identity was made for this dispatch: the configured prefix and 96 random bits
    prefix, _, secret = visit["avatar_identity"].rpartition("-")
    assert prefix == "dystream-avatar" and len(secret) == 24, visit["avatar_identity"]
    assert visit["reports"] == {"lk.playback_started": "reject", "lk.playback_finished": "reject"}
    assert visit["speech_streams"] == [], "the agent's speech reached the impostor"
    assert visit["finished_events"] == [], "the impostor's playback report reached the agent session"
