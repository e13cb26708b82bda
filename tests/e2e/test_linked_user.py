"""The avatar listens to whom the agent listens to: two users in a real room, and the agent's user reconnecting.

Alice joins (which dispatches the agent: its session links her) and hears the greeting; Bob joins the same room.
Bob talks, then Alice: the avatar must show listening for Alice, and not before she talks. Alice then drops for two
seconds and comes back under the same identity (the session links her again): the same once more.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.harness import measure
from bench.harness.client import UserClient, user_token
from bench.harness.scenario import USER_STATES, Session, until

MODES = ["remote", "in-process"]
pytestmark = pytest.mark.timeout(300)
AWAY_S = 2.0
SHOWN_WITHIN_S = 1.5  # the listening latency bound of the conversation tests, with room for a reconnect


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


async def bob_then_alice(session: Session, alice: UserClient, bob: UserClient) -> dict[str, float | None]:
    """Bob says the utterance, then Alice: when each began, and when the avatar (seen by Alice) first showed
    listening after Bob began."""
    clip = session.deployment.clips.utterance
    bob_says = bob.speak(clip)
    bob_onset = await asyncio.wait_for(bob_says.onset, 10.0)
    await asyncio.wait_for(bob_says.ended, 10.0)
    alice_says = alice.speak(clip)
    alice_onset = await asyncio.wait_for(alice_says.onset, 10.0)
    shown = await until(
        lambda: measure.first_state_after(alice.states(), bob_onset - 0.05, USER_STATES),
        alice_onset - bob_onset + SHOWN_WITHIN_S + 5.0,
        "the avatar to show listening",
    )
    await asyncio.wait_for(alice_says.ended, 10.0)
    await session.wait_playback_started(alice_onset)  # the agent answers Alice ...
    await session.wait_playback_finished(alice_onset)  # ... in full
    return {"bob_onset": bob_onset, "alice_onset": alice_onset, "listening_shown": shown}


async def two_users(deployment) -> list[dict[str, float | None]]:
    server = deployment.server
    session = Session(deployment, identity="alice")
    conversation = await session.join()
    bob = UserClient(server.url, user_token(server.api_key, server.api_secret, session.room, "bob", None))
    await bob.connect()
    rounds = []
    try:
        await session.wait_playback_finished(conversation.joined_at, timeout=30.0)  # the greeting
        await session.wait_quiet()
        rounds.append(await bob_then_alice(session, conversation.client, bob))
        await conversation.client.leave()  # Alice drops ...
        await asyncio.sleep(AWAY_S)  # (the length of her absence, part of the scenario)
        token = user_token(server.api_key, server.api_secret, session.room, "alice", None)
        alice = UserClient(server.url, token)  # ... and comes back
        await alice.connect()
        conversation.client = alice
        rounds.append(await bob_then_alice(session, alice, bob))
    finally:
        await bob.leave()
        await session.leave(wait_closed=True)
    return rounds


def test_the_avatar_listens_to_the_agents_user_not_to_another_one(deployments, mode: str) -> None:
    rounds = asyncio.run(two_users(deployments(mode)))
    for number, r in enumerate(rounds):
        when = "after Alice came back" if number else "with both in the room"
        # nothing for Bob: the first listening after Bob began comes once Alice talks, and soon after
        assert r["listening_shown"] >= r["alice_onset"], f"{mode}: the avatar listened to Bob {when}: {r}"
        assert r["listening_shown"] - r["alice_onset"] <= SHOWN_WITHIN_S, f"{mode}: Alice not heard {when}: {r}"
