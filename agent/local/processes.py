"""Worker subprocesses whose stdout and stderr go to one log file, stopped together with the processes they start."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class WorkerProcess:
    """A ``python -m agent ...`` (or any) subprocess in a process group of its own, logging to ``<workdir>/<name>.log``.

    It stays in the caller's session: nice values rank threads within one scheduling group, and with Linux's
    autogroup every session is a group of its own, which would let a worker's model threads take the CPU from its
    media threads (README, "CPU priority").
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        workdir: Path,
        cwd: Path,
        *,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.command = [sys.executable if command[0] == "python" else command[0], *command[1:]]
        self.env = {**os.environ, **env}
        self.log_path = Path(workdir) / f"{name}.log"
        self.cwd = cwd
        self._preexec_fn = preexec_fn
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int:
        assert self._proc is not None, f"{self.name} is not running"
        return self._proc.pid

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self._proc = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=self._preexec_fn,
        )
        log.close()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, needle: str, timeout: float, *, after: int | None = None) -> None:
        """Wait until ``needle`` appears in the log (after byte ``after``, default: since the last start)."""
        start = self._log_offset if after is None else after
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.tail()}")
            with open(self.log_path, "rb") as log:
                log.seek(start)
                if needle.encode() in log.read():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not log {needle!r} within {timeout:.0f} s:\n{self.tail()}")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout, group=True)  # job processes of a killed worker must not outlive it


def terminate(proc: subprocess.Popen[bytes], timeout: float, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; with ``group``, its whole process group (``process_group``) too."""
    if proc.poll() is not None:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
