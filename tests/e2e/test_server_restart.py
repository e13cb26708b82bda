"""The LiveKit server restarts: the worker reconnects by itself and serves the next user."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.harness.scenario import Session

pytestmark = pytest.mark.timeout(300)


async def talk_once(deployment):
    session = Session(deployment)
    conversation = await session.join(timeout=60.0)
    await session.wait_playback_finished(conversation.joined_at)
    turn_started = time.time()
    turn = await session.user_turn()
    await session.wait_playback_started(turn_started)
    await session.leave()
    return conversation, turn


def test_the_worker_reconnects_after_a_server_restart_and_serves_again(livekit_server, deployments) -> None:
    deployment = deployments("in-process")
    log_mark = deployment.agent.log_size()
    livekit_server.restart()
    deployment.agent.wait_for_log("registered worker", timeout=60.0, after=log_mark)
    assert deployment.agent.healthy(deployment.agent_http_port)
    conversation, turn = asyncio.run(talk_once(deployment))
    assert conversation.client.video, "no avatar video after the restart"
    seen = [(round(change.t - turn.onset, 3), change.value) for change in conversation.client.states()]
    assert turn.listening_at is not None, f"the avatar did not react to the user after the restart; states seen {seen}"
