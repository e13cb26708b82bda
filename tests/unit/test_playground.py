"""`dystream playground` without a server: its checks of the command line, its choice of model, and its web page.

The whole command (server, workers, a browser joining its page, Ctrl+C) runs in ``tests/e2e/test_browser.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer
from livekit import api
from livekit.plugins.dystream.state_attribute import ATTRIBUTE_RUNG, ATTRIBUTE_STATE

from agent.__main__ import main
from agent.commands.playground import stack_options
from agent.playground.stack import AGENT_NAME
from agent.playground.web import LIVEKIT_CLIENT, build_app
from config.settings import Settings

SECRET = "a-secret-long-enough-for-hs256-signing-0123"


def args(**overrides) -> argparse.Namespace:
    values = dict(portrait=None, port=8090, remote=False, greeting=None, reply=[], random_weights=False, size=None)
    return argparse.Namespace(**{**values, **overrides})


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["playground"], "--portrait"),
        (["playground", "--portrait", "/nonexistent/me.png"], "--portrait /nonexistent/me.png"),
        (["playground", "--portrait", "{portrait}", "--reply", "/nonexistent/r.wav"], "--reply /nonexistent/r.wav"),
        (["playground", "--portrait", "{portrait}", "--port", "70000"], "--port 70000"),
    ],
)
def test_bad_input_is_one_line_naming_it_and_exit_2(argv, named, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DYSTREAM_AVATAR__PORTRAIT", raising=False)
    portrait = tmp_path / "me.png"
    portrait.write_bytes(b"not read before the checks")
    assert main([a.replace("{portrait}", str(portrait)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err


def test_without_weights_the_tiny_untrained_model_runs_and_the_log_says_so(tmp_path, capsys) -> None:
    portrait = tmp_path / "me.png"
    portrait.write_bytes(b"")
    settings = Settings(model={"checkpoints_dir": tmp_path / "no-weights"})
    options = stack_options(args(portrait=portrait), settings)
    assert options.random_weights and options.size == "tiny" and options.mode == "in-process"
    captured = capsys.readouterr()
    assert "NO WEIGHTS" in captured.out + captured.err


def test_downloaded_weights_run_the_full_model(tmp_path, monkeypatch) -> None:
    portrait = tmp_path / "me.png"
    portrait.write_bytes(b"")
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings(model={"checkpoints_dir": "~/weights"})  # a home-relative folder, as users write it
    for path in (settings.model.motion_checkpoint_path, settings.model.renderer_checkpoint_path):
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".safetensors").write_bytes(b"")
    options = stack_options(args(portrait=portrait, remote=True), settings)
    assert not options.random_weights and options.size == "full" and options.mode == "remote"


async def test_the_page_gets_a_token_for_a_fresh_room_that_dispatches_the_agent() -> None:
    if not LIVEKIT_CLIENT.is_file():
        pytest.fail(f"{LIVEKIT_CLIENT} is missing: run scripts/install.sh (npm ci --prefix agent/playground)")
    stack = SimpleNamespace(
        server=SimpleNamespace(api_key="key", api_secret=SECRET, url="ws://127.0.0.1:7880"),
        options=SimpleNamespace(mode="in-process"),
    )
    async with TestClient(TestServer(build_app(stack))) as client:
        page = await client.get("/")
        assert page.status == 200 and 'id="join"' in await page.text()
        for script in ("/playground.js", "/tap-worklet.js", "/livekit-client.umd.js"):
            reply = await client.get(script)
            assert reply.status == 200 and reply.content_type == "text/javascript", script
        sessions = [await (await client.get("/api/session")).json() for _ in range(2)]
    assert sessions[0]["room"] != sessions[1]["room"]
    for session in sessions:
        assert session["url"] == "ws://127.0.0.1:7880"
        claims = api.TokenVerifier("key", SECRET).verify(session["token"])
        assert claims.video.room == session["room"] and claims.video.room_join
        assert not claims.identity.startswith("agent-")
        assert [a.agent_name for a in claims.room_config.agents] == [AGENT_NAME]
        assert claims.room_config.sync_streams


def test_the_page_reads_the_attributes_the_avatar_writes() -> None:
    script = (Path(__file__).parents[2] / "agent" / "playground" / "static" / "playground.js").read_text()
    assert f'const STATE_ATTRIBUTE = "{ATTRIBUTE_STATE}";' in script
    assert f'const RUNG_ATTRIBUTE = "{ATTRIBUTE_RUNG}";' in script
