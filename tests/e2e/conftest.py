"""End-to-end fixtures: one real LiveKit server for the session, and each plugin mode deployed once against it.

The server binary is built with ``go install`` the first time (cached in Go's bin folder); if it cannot be built
the tests fail, loudly. Workers run as subprocesses with the tiny random-weight model. Conversations are run once
per mode and shared by the tests that check different things about them.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from bench.harness import priority
from bench.harness.deployment import Deployment, make_clips
from bench.harness.scenario import Conversation, converse
from bench.harness.server import LiveKitServer, ServerBuildError, server_binary
from config.settings import get_settings

MODES = ["remote", "in-process"]  # the order the modes are tested in: the files after them use in-process
# the order the files run in; those of both modes run one mode after the other (its deployment alone on the machine),
# remote first; the server restart disturbs every deployment, the secret scan reads every log
FILE_ORDER = [
    "test_conversation.py",
    "test_trust.py",
    "test_linked_user.py",
    "test_held_engine.py",
    "test_rejoin.py",
    "test_dispatch_recovery.py",
    "test_soak.py",
    "test_livekit_entry.py",
    "test_server_restart.py",
    "test_secrets.py",
    "test_browser.py",
]
BOTH_MODES = {"test_conversation.py", "test_trust.py", "test_linked_user.py"}
# real-time bounds on a shared 2-core machine: a test that fails runs again on a fresh conversation of its own (each
# attempt must meet every bound on its own; see `conversations`)
RERUN = {
    "test_conversation.py": 3,
    "test_held_engine.py": 2,
    "test_linked_user.py": 2,
    "test_rejoin.py": 2,
    "test_soak.py": 1,
    "test_browser.py": 2,
    "test_batched_sessions.py": 2,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> tuple[int, int]:
        name = Path(str(item.fspath)).name
        params = getattr(item, "callspec", None)
        mode = params.params.get("mode") if params is not None else None
        mode = mode or getattr(item.module, "MODE", "in-process")
        group = MODES.index(mode) if name in BOTH_MODES else len(MODES)
        return (group, FILE_ORDER.index(name) if name in FILE_ORDER else len(FILE_ORDER))

    e2e = [item for item in items if "tests/e2e/" in str(item.fspath)]
    others = [item for item in items if item not in e2e]
    for item in e2e:
        item.add_marker(pytest.mark.e2e)
        if Path(str(item.fspath)).name in RERUN:
            item.add_marker(pytest.mark.flaky(reruns=RERUN[Path(str(item.fspath)).name]))
    items[:] = others + sorted(e2e, key=rank)


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session", autouse=True)
def measuring_client_priority() -> None:
    """The user's client (this process) runs on its own machine in a deployment: here it gets priority over the
    workers, so a busy machine delays what the workers send, not how this process reads it (harness/priority.py)."""
    priority.favour_this_process()
    # The unit tests ran in this process before: their leftovers (models, tensors, parsed files) leave the collector's
    # full passes, which would otherwise walk all of them, at this favoured priority, while the client reads the media.
    gc.freeze()


@pytest.fixture(scope="session")
def livekit_server(e2e_dir: Path):
    try:
        binary = server_binary(build=True)
    except ServerBuildError as exc:
        pytest.fail(f"cannot run the end-to-end tests without a LiveKit server: {exc}", pytrace=False)
    server = LiveKitServer(e2e_dir / "server", binary=binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    path = get_settings().samples_dir
    if not Path(path).is_dir():
        pytest.fail(f"samples folder {path} is missing: set DYSTREAM_SAMPLES_DIR", pytrace=False)
    return Path(path)


@pytest.fixture(scope="session")
def expected_size() -> tuple[int, int]:
    """(width, height) of the tiny model's frames, which the workers run."""
    from avatar.renderer.config import RendererConfig

    size = RendererConfig.tiny().image_size
    return size, size


@pytest.fixture(scope="session")
def clips(samples_dir: Path, e2e_dir: Path):
    return make_clips(samples_dir, e2e_dir / "clips")


@pytest.fixture(scope="session")
def deployments(livekit_server: LiveKitServer, clips, samples_dir: Path, e2e_dir: Path):
    """The deployment of a plugin mode, started on first use. One runs at a time, as the tests take one mode after
    the other: asking for another mode stops the running one (and starts its own again if it had run before)."""
    made: dict[str, Deployment] = {}
    running: list[Deployment] = []

    def get(mode: str) -> Deployment:
        deployment = made.get(mode)
        if deployment is None:
            deployment = made[mode] = Deployment(livekit_server, mode, e2e_dir / mode, samples_dir, clips)
            deployment.workdir.mkdir(parents=True, exist_ok=True)
        if deployment not in running:
            for other in running:
                other.stop()
            running[:] = [deployment]
            deployment.start()
        return deployment

    def stop_all() -> None:
        for deployment in running:
            deployment.stop()
        running.clear()

    get.stop_all = stop_all  # type: ignore[attr-defined] - for tests that need the machine to themselves
    yield get
    for deployment in running:
        deployment.stop()


@pytest.fixture(scope="session")
def conversation_runs(deployments):
    """Conversations per (mode, attempt), each run once (greeting, a turn, a barge-in, the answer)."""
    done: dict[tuple[str, int], Conversation] = {}

    def get(mode: str, attempt: int) -> Conversation:
        if (mode, attempt) not in done:
            done[mode, attempt] = asyncio.run(converse(deployments(mode)))
        return done[mode, attempt]

    return get


@pytest.fixture
def conversations(conversation_runs, request: pytest.FixtureRequest):
    """The conversation of a mode, shared by the tests that check different things about it.

    Real-time thresholds on a shared 2-core machine are at the mercy of a scheduling hiccup, so a conversation test
    that fails is run again (``flaky`` reruns) on a fresh conversation, never on the one it failed on: each attempt
    must meet every bound on its own.
    """
    attempt = getattr(request.node, "execution_count", 1)
    return lambda mode: conversation_runs(mode, attempt)
