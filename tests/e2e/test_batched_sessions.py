"""Two calls at once on one remote avatar worker with ``stream.batch_sessions``: its jobs run in one process and
their avatars step together on one engine (``avatar.stream.device``); each user still gets the avatar at 25 fps."""

from __future__ import annotations

import asyncio

import pytest

from bench.harness.deployment import Deployment
from bench.harness.scenario import Session, until

ROOMS = 2
FRAMES = 250  # 10 s of video in each room once both avatars run; the last 5 s are judged (a call's start is not)
JUDGED = 125
pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def deployment(livekit_server, clips, samples_dir, e2e_dir):
    env = {
        "DYSTREAM_STREAM__BATCH_SESSIONS": "true",
        "DYSTREAM_AGENT__MAX_JOBS": str(ROOMS),
        "DYSTREAM_AVATAR__MAX_SESSIONS_PER_WORKER": str(ROOMS),
    }
    deployment = Deployment(
        livekit_server, "remote", e2e_dir / "batched", samples_dir, clips, agent_name="e2e-batched", extra_env=env
    )
    deployment.workdir.mkdir(parents=True, exist_ok=True)
    deployment.start()
    yield deployment
    deployment.stop()


async def two_calls(deployment: Deployment) -> list[list[float]]:
    """The arrival times of each room's last ``JUDGED`` video frames, while both avatars run."""
    sessions = [Session(deployment, identity=f"user-{n}") for n in range(ROOMS)]
    await asyncio.gather(*(session.join(timeout=180.0) for session in sessions))
    try:
        both_from = max(session.client.video[0].t for session in sessions)
        counts = [len(session.client.video) for session in sessions]

        def frames_since_both() -> bool:
            return all(len(s.client.video) - n >= FRAMES for s, n in zip(sessions, counts, strict=True))

        await until(frames_since_both, 60.0, f"{FRAMES} frames in each room")
        return [[v.t for v in s.client.video if v.t >= both_from][-JUDGED:] for s in sessions]
    finally:
        await asyncio.gather(*(session.leave() for session in sessions))


def test_two_calls_on_one_batched_avatar_worker_each_get_25_fps(deployment) -> None:
    arrivals = asyncio.run(two_calls(deployment))
    for room, times in enumerate(arrivals):
        fps = (len(times) - 1) / (times[-1] - times[0])
        assert 23.0 <= fps <= 27.0, f"room {room}: {fps:.1f} fps"
    log = deployment.avatar_worker.log_text()
    assert '"engine_sessions": 2' in log, "the second avatar did not join the first one's engine"
