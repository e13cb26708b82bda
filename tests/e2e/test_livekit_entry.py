"""livekit-agents' own entry point runs our workers: `python -m livekit.agents start agent/app.py` (and
`agent/avatar_app.py`) registers with a real LiveKit server, configured by the environment as `dystream` is."""

from __future__ import annotations

import pytest

from bench.harness.deployment import READY_LOG, REPO_ROOT
from bench.harness.processes import WorkerProcess
from bench.harness.server import free_port

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("module", ["agent/app.py", "agent/avatar_app.py"])
def test_livekits_entry_point_registers_the_worker(livekit_server, e2e_dir, module: str) -> None:
    name = module.removeprefix("agent/").removesuffix(".py").replace("_", "-")
    env = {
        "LIVEKIT_URL": livekit_server.url,
        "LIVEKIT_API_KEY": livekit_server.api_key,
        "LIVEKIT_API_SECRET": livekit_server.api_secret,
        "DYSTREAM_AVATAR__SIZE": "tiny",
        "DYSTREAM_AVATAR__RANDOM_WEIGHTS": "true",
        "DYSTREAM_AGENT__AGENT_NAME": f"e2e-livekit-entry-{name}",
        "DYSTREAM_AVATAR__AVATAR_AGENT_NAME": f"e2e-livekit-entry-{name}",
        "DYSTREAM_AGENT__MAX_JOBS": "1",  # load limits given: no capacity measurement at start
        "DYSTREAM_AVATAR__MAX_SESSIONS_PER_WORKER": "1",
        "DYSTREAM_AGENT__IDLE_PROCESSES": "0",
        "DYSTREAM_AGENT__HTTP_PORT": str(free_port()),
    }
    worker = WorkerProcess(
        f"livekit-entry-{name}", ("python", "-m", "livekit.agents", "start", module), env, e2e_dir, REPO_ROOT
    )
    worker.start()
    try:
        worker.wait_for_log(READY_LOG, timeout=180)
        assert f"e2e-livekit-entry-{name}" in worker.log_text()  # under the agent name the settings gave it
    finally:
        worker.stop()
