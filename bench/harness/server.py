"""The LiveKit server of the end-to-end tests and benchmarks (``agent/local/server.py``), at a favoured priority.

The server runs on another machine in a deployment: here it gets priority over the workers (``priority.py``).
"""

from __future__ import annotations

from pathlib import Path

from agent.local import server
from agent.local.server import SERVER_VERSION, ServerBuildError, free_port, server_binary

from . import priority

__all__ = ["API_KEY", "SERVER_VERSION", "LiveKitServer", "ServerBuildError", "free_port", "server_binary"]

API_KEY = "e2e-key"


class LiveKitServer(server.LiveKitServer):
    def __init__(self, workdir: Path, *, binary: Path | None = None) -> None:
        super().__init__(workdir, api_key=API_KEY, binary=binary, preexec_fn=priority.favoured)
