"""Rooms get their agent whatever happens to the worker: three users arriving at once on a worker allowed three
jobs get three agents, and after the worker is killed (SIGKILL) and started again, the rooms it served get an agent
again (``agent.dispatch_keeper``), with the users still in them."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from agent.events import read_events
from bench.harness.deployment import Deployment
from bench.harness.scenario import Session, until

ROOMS = 3
REDISPATCH_AFTER_S = 10.0
pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def deployment(livekit_server, clips, samples_dir, e2e_dir):
    """An in-process agent worker of its own, allowed three jobs, looking for orphaned rooms every second."""
    env = {
        "DYSTREAM_AGENT__MAX_JOBS": str(ROOMS),
        "DYSTREAM_AGENT__IDLE_PROCESSES": "1",
        "DYSTREAM_AGENT__REDISPATCH_EVERY_S": "1",
        "DYSTREAM_AGENT__REDISPATCH_AFTER_S": str(REDISPATCH_AFTER_S),
    }
    deployment = Deployment(
        livekit_server, "in-process", e2e_dir / "recovery", samples_dir, clips, agent_name="e2e-recovery", extra_env=env
    )
    deployment.workdir.mkdir(parents=True, exist_ok=True)
    deployment.start()
    yield deployment
    deployment.stop()


def sessions_started(deployment: Deployment, room: str, after: float) -> list[dict]:
    events = read_events(deployment.events_file, room=room)
    return [e for e in events if e["event"] == "session_started" and e["t"] > after]


async def rooms_survive_their_worker(deployment: Deployment) -> dict[str, float]:
    sessions = [Session(deployment, identity=f"user-{n}") for n in range(ROOMS)]
    await asyncio.gather(*(session.join(timeout=120.0) for session in sessions))
    try:
        killed_at = time.time()
        os.killpg(deployment.agent.pid, signal.SIGKILL)  # the worker and its job processes, no goodbye
        deployment.agent.stop()
        deployment.start()

        def video_again(session: Session) -> bool:
            return any(sample.t > killed_at for sample in session.client.video[-5:])

        back: dict[str, float] = {}
        for session in sessions:
            await until(lambda s=session: sessions_started(deployment, s.room, killed_at), 120.0, "an agent again")
            await until(lambda s=session: video_again(s), 60.0, f"avatar video in {session.room} again")
            back[session.room] = sessions_started(deployment, session.room, killed_at)[0]["t"] - killed_at
        return back
    finally:
        await asyncio.gather(*(session.leave() for session in sessions))


def test_three_rooms_at_once_get_three_agents_and_get_them_back_after_the_worker_dies(deployment) -> None:
    back = asyncio.run(rooms_survive_their_worker(deployment))
    assert len(back) == ROOMS
    # the killed agents' departure, noticed by the server, then the keeper's wait and its sweep period
    assert max(back.values()) <= 90.0, f"seconds from the kill to each room's new agent: {back}"
    log = deployment.agent.log_text()
    assert log.count("room had no agent: dispatched again") >= ROOMS, "the rooms came back without the keeper?"
