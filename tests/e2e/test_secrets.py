"""No secret in any log line: not the API secret, not a token (JWT), in the workers' or the server's logs."""

from __future__ import annotations

import re

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")


def test_no_secret_or_token_appears_in_any_log(livekit_server, deployments, e2e_dir) -> None:
    deployments("in-process")  # at least one deployment has run
    logs = sorted(e2e_dir.rglob("*.log"))
    assert any("agent-" in p.name for p in logs) and livekit_server.log_path in logs
    for path in logs:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            assert livekit_server.api_secret not in line, f"{path.name}:{number} contains the API secret"
            assert not JWT.search(line), f"{path.name}:{number} contains a token: {line[:120]}"
