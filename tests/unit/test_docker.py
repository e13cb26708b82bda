"""The Docker files, checked without a Docker engine: the compose file parses, the images run the very commands the
end-to-end tests run, as a non-root user, with a health check on the worker's endpoint, and every setting they pass
is one the settings tree knows."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from bench.harness.processes import AGENT_COMMAND, AVATAR_WORKER_COMMAND
from config.settings import Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
IMAGES = ["Dockerfile.cpu", "Dockerfile.cuda"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_runs_a_server_the_agent_and_an_avatar_worker(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"livekit", "agent", "avatar-worker"}
    assert services["livekit"]["image"].startswith("livekit/livekit-server:")
    assert "--dev" in services["livekit"]["command"]
    # the server's config body (LIVEKIT_CONFIG) turns on sync_streams: browsers lip-sync the avatar's tracks
    assert yaml.safe_load(services["livekit"]["environment"]["LIVEKIT_CONFIG"])["room"]["sync_streams"] is True
    assert services["agent"]["command"] == list(AGENT_COMMAND)
    assert services["avatar-worker"]["command"] == list(AVATAR_WORKER_COMMAND)
    assert services["agent"]["environment"]["DYSTREAM_AVATAR__MODE"] == "remote"
    for name in ("agent", "avatar-worker"):
        build = services[name]["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
        assert "livekit" in services[name]["depends_on"]


def test_compose_settings_are_ones_the_settings_tree_reads(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = set()
    for name in ("agent", "avatar-worker"):
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        for key in list(os.environ):
            if key.startswith(("DYSTREAM_", "LIVEKIT_")):
                monkeypatch.delenv(key)
        for key, value in env.items():
            assert key.startswith(("DYSTREAM_", "LIVEKIT_")), key
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert settings.livekit.url == env["LIVEKIT_URL"] and settings.livekit.api_key == env["LIVEKIT_API_KEY"]
        assert str(settings.avatar.portrait) == env["DYSTREAM_AVATAR__PORTRAIT"]
        ports.add(settings.agent.http_port)
    assert len(ports) == 2, "both workers share the host network: their health ports must differ"


@pytest.mark.parametrize("image", IMAGES)
def test_images_run_the_tested_command_as_a_non_root_user_with_a_health_check(image: str) -> None:
    steps = instructions(DOCKER / image)
    keywords = [k for k, _ in steps]
    assert json.loads(dict(steps)["CMD"]) == list(AGENT_COMMAND)
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["dystream-entrypoint"]
    user = [args for k, args in steps if k == "USER"]
    assert user and user[-1] not in {"root", "0"}
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN"), "nothing runs as root after"
    health = dict(steps)["HEALTHCHECK"]
    assert "127.0.0.1" in health and "DYSTREAM_AGENT__HTTP_PORT" in health
    assert "VOLUME" in keywords and "/weights" in dict(steps)["VOLUME"]
    env = " ".join(args for k, args in steps if k == "ENV")
    assert "DYSTREAM_MODEL__CHECKPOINTS_DIR=/weights" in env


def test_entrypoint_fetches_weights_only_when_needed() -> None:
    script = DOCKER / "entrypoint.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "python -m agent download-files" in text and 'exec "$@"' in text
    assert "DYSTREAM_AVATAR__RANDOM_WEIGHTS" in text and "DYSTREAM_AVATAR__MODE" in text
