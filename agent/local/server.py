"""The official LiveKit server on loopback, with free ports, its own API key and a fresh random secret.

The binary is `github.com/livekit/livekit-server/cmd/server` (``go install`` names it ``server``;
``scripts/install.sh`` builds it). :func:`server_binary` finds it in Go's bin folder and builds it when it is missing;
a machine without Go or without the module proxy gets a :class:`ServerBuildError` that says what to install.
Every room has ``sync_streams`` on, so receivers lip-sync the avatar's audio and video.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .processes import terminate

SERVER_MODULE = "github.com/livekit/livekit-server/cmd/server"
SERVER_VERSION = "v1.13.5"


class ServerBuildError(RuntimeError):
    """The LiveKit server binary is missing and could not be built."""


def _go_bin_dir() -> Path | None:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        return None
    out = subprocess.run([go, "env", "GOBIN", "GOPATH"], capture_output=True, text=True, check=True).stdout
    gobin, gopath = (out.splitlines() + ["", ""])[:2]
    if gobin.strip():
        return Path(gobin.strip())
    return Path(gopath.strip().split(os.pathsep)[0]) / "bin"


def server_binary(*, build: bool = True) -> Path:
    """The `server` binary, built with ``go install ...@v1.13.5`` the first time (about a minute)."""
    bin_dir = _go_bin_dir()
    candidates = [bin_dir / "server"] if bin_dir else []
    candidates.append(Path.home() / "go" / "bin" / "server")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    if shutil.which("livekit-server"):
        return Path(shutil.which("livekit-server"))  # type: ignore[arg-type]
    if not build or bin_dir is None:
        raise ServerBuildError(
            "the LiveKit server binary is missing and Go is not installed: install Go >= 1.26 and run "
            f"`go install {SERVER_MODULE}@{SERVER_VERSION}` (or .ci/run, which does it)"
        )
    go = shutil.which("go") or "/usr/local/go/bin/go"
    result = subprocess.run(
        [go, "install", f"{SERVER_MODULE}@{SERVER_VERSION}"], capture_output=True, text=True, timeout=900
    )
    built = bin_dir / "server"
    if result.returncode != 0 or not built.is_file():
        raise ServerBuildError(
            f"`go install {SERVER_MODULE}@{SERVER_VERSION}` failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}"
        )
    return built


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the OS says is free on 127.0.0.1 now (TCP by default, UDP with ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveKitServer:
    """One `livekit-server` process on 127.0.0.1, with its own ports, API key and a fresh random secret."""

    def __init__(
        self,
        workdir: Path,
        *,
        api_key: str,
        binary: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or server_binary()
        self.port = free_port()
        self.tcp_port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.api_key = api_key
        self.api_secret = secrets.token_urlsafe(36)
        self.log_path = self.workdir / "livekit-server.log"
        self._preexec_fn = preexec_fn
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> dict:
        return {
            "port": self.port,
            "bind_addresses": ["127.0.0.1"],
            "rtc": {
                "tcp_port": self.tcp_port,
                "udp_port": self.udp_port,
                "use_external_ip": False,
                "node_ip": "127.0.0.1",
            },
            "keys": {self.api_key: self.api_secret},
            "logging": {"level": "info"},
            # a room closes (and its agent job ends) 3 s after the last user left; a participant's tracks keep one
            # media stream at the receivers, which lip-sync the avatar's audio and video (sync_streams)
            "room": {"empty_timeout": 10, "departure_timeout": 3, "sync_streams": True},
        }

    def start(self, timeout: float = 30.0) -> None:
        config_path = self.workdir / "livekit.yaml"
        config_path.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        config_path.chmod(0o600)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self._proc = subprocess.Popen(
            [str(self.binary), "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._preexec_fn,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"livekit-server exited with {self._proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.http_url, timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"livekit-server did not answer on {self.http_url} within {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)

    def restart(self) -> None:
        """Stop and start again on the same ports and keys, like a server redeploy."""
        self.stop()
        self.start()

    def __enter__(self) -> LiveKitServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
