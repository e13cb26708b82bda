"""What the playground runs besides its page: a LiveKit server on loopback and the workers, started and stopped
together (``Ctrl+C`` leaves nothing running)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from agent.local.processes import WorkerProcess
from agent.local.server import LiveKitServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_NAME = "dystream-playground"
AVATAR_AGENT_NAME = "dystream-playground-avatar"
API_KEY = "playground"
READY_LOG = "registered worker"


@dataclass(frozen=True)
class StackOptions:
    portrait: Path
    mode: str = "in-process"  # or "remote": a separate avatar worker renders the avatar
    random_weights: bool = False
    size: str = "full"
    greeting: Path | None = None
    replies: tuple[Path, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)


class LocalStack:
    """The server and the workers of one playground, their logs in ``workdir``."""

    def __init__(self, workdir: Path, options: StackOptions) -> None:
        self.workdir = Path(workdir)
        self.options = options
        self.server = LiveKitServer(self.workdir / "server", api_key=API_KEY)
        self.workers: list[WorkerProcess] = []

    def worker_env(self) -> dict[str, str]:
        o = self.options
        env = {
            "LIVEKIT_URL": self.server.url,
            "LIVEKIT_API_KEY": self.server.api_key,
            "LIVEKIT_API_SECRET": self.server.api_secret,
            "DYSTREAM_AVATAR__MODE": o.mode,
            "DYSTREAM_AVATAR__PORTRAIT": str(Path(o.portrait).resolve()),
            "DYSTREAM_AVATAR__RANDOM_WEIGHTS": "true" if o.random_weights else "false",
            "DYSTREAM_AVATAR__SIZE": o.size,
            "DYSTREAM_AVATAR__AVATAR_AGENT_NAME": AVATAR_AGENT_NAME,
            "DYSTREAM_AGENT__AGENT_NAME": AGENT_NAME,
            # one user on the page: the worker takes the call whatever else the machine is doing
            "DYSTREAM_AGENT__MAX_JOBS": "1",
            "DYSTREAM_AGENT__IDLE_PROCESSES": "1",
        }
        if o.greeting is not None:
            env["DYSTREAM_AGENT__GREETING_AUDIO"] = str(Path(o.greeting).resolve())
        if o.replies:
            env["DYSTREAM_AGENT__REPLY_CLIPS"] = json.dumps([str(Path(p).resolve()) for p in o.replies])
        env.update(o.extra_env)
        return env

    def _worker(self, name: str, command: str) -> WorkerProcess:
        env = {**self.worker_env(), "DYSTREAM_AGENT__HTTP_PORT": str(free_port())}
        return WorkerProcess(name, ("python", "-m", "agent", command), env, self.workdir, REPO_ROOT)

    def start(self, timeout: float = 300.0) -> None:
        """Start the server, then the workers, and wait until every worker has registered (models loaded)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server.start()
        if self.options.mode == "remote":
            self.workers.append(self._worker("avatar-worker", "avatar-worker"))
        self.workers.append(self._worker("agent", "start"))
        for worker in self.workers:
            worker.start()
        for worker in self.workers:
            worker.wait_for_log(READY_LOG, timeout)

    def failed(self) -> WorkerProcess | None:
        """A worker that exited while the playground runs."""
        return next((worker for worker in self.workers if not worker.running()), None)

    def stop(self) -> None:
        for worker in reversed(self.workers):
            worker.stop()
        self.workers.clear()
        self.server.stop()
