"""Worker processes for the end-to-end tests: the same commands the Docker images run, with their logs kept."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from agent.local import processes
from agent.local.processes import terminate

from . import priority

__all__ = ["AGENT_COMMAND", "AVATAR_WORKER_COMMAND", "WorkerProcess", "terminate"]

# The commands the images run (docker/Dockerfile.*, docker/compose.yaml); tests/unit/test_docker.py checks they agree.
AGENT_COMMAND = ("python", "-m", "agent", "start")
AVATAR_WORKER_COMMAND = ("python", "-m", "agent", "avatar-worker")


class WorkerProcess(processes.WorkerProcess):
    """A worker at the normal priority, whatever the test process runs at (``priority.py``)."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str], workdir: Path, cwd: Path) -> None:
        super().__init__(name, command, env, workdir, cwd, preexec_fn=priority.normal)

    def healthy(self, port: int) -> bool:
        """The worker's HTTP health endpoint answers OK."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def rss_by_process(self) -> dict[int, int]:
        """Resident memory (bytes) of the worker and of every process it started (job processes), by pid."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return {}
        out = {}
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                out[proc.pid] = proc.memory_info().rss
        return out
