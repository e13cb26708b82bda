"""The command line: every command has useful help, tokens are valid, wrong settings give one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from livekit import api

from agent.__main__ import COMMANDS, build_parser, main
from config.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
KEY, SECRET = "test-key", "a-test-secret-that-is-long-enough-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith(("LIVEKIT_", "DYSTREAM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(REPO)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python *args`` in the repository, with this environment's LIVEKIT_* and DYSTREAM_* replaced by ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "DYSTREAM_"))}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env={**base, **(env or {})}, cwd=REPO, timeout=300
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "agent", *args, env=env)


def test_every_worker_command_is_registered_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    help_text = parser.format_help()
    for name in ("token", "dev", "start", "connect", "avatar-worker"):
        assert name in COMMANDS and name in help_text
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "--api-key" in out and "LIVEKIT" in out, f"{name} --help does not explain the connection settings"


def test_token_is_signed_for_the_room_and_can_dispatch_an_agent(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "token",
            "--room",
            "demo",
            "--identity",
            "alice",
            "--agent",
            "dystream",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
        ]
    )
    assert code == 0
    token = capsys.readouterr().out.strip()
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "alice"
    assert claims.video.room == "demo" and claims.video.room_join
    assert [a.agent_name for a in claims.room_config.agents] == ["dystream"]
    assert claims.room_config.sync_streams  # the room it creates lip-syncs the avatar at the receivers
    with pytest.raises(Exception):  # noqa: B017 - any verification error
        api.TokenVerifier(KEY, "another-secret-another-secret-another").verify(token)


def test_token_reads_the_key_and_secret_from_the_environment(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    assert main(["token", "--room", "r1"]) == 0
    assert api.TokenVerifier(KEY, SECRET).verify(capsys.readouterr().out.strip()).identity == "user"


def test_a_token_is_short_lived(capsys) -> None:
    def lifetime_h(*ttl: str) -> float:
        assert main(["token", "--room", "r1", "--api-key", KEY, "--api-secret", SECRET, *ttl]) == 0
        token = capsys.readouterr().out.strip()
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=None, options={"verify_aud": False})
        return (claims["exp"] - claims["nbf"]) / 3600.0

    assert lifetime_h() == pytest.approx(1.0, abs=0.01)
    assert lifetime_h("--ttl", "12") == pytest.approx(12.0, abs=0.01)


def test_the_avatar_prefix_a_token_refuses_follows_the_settings(monkeypatch, capsys) -> None:
    monkeypatch.setenv("DYSTREAM_AVATAR__IDENTITY", "face")
    args = ["token", "--room", "r1", "--api-key", KEY, "--api-secret", SECRET, "--identity"]
    assert main([*args, "face-01ab"]) == 2
    assert "the avatar's identity" in capsys.readouterr().err
    assert main([*args, "dystream-avatar-fan"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "--room", "r1"], "LIVEKIT_API_KEY and LIVEKIT_API_SECRET"),
        (["token", "--room", "r1", "--api-key", KEY, "--api-secret", SECRET, "--ttl", "0"], "--ttl"),
        (["token", "--room", " ", "--api-key", KEY, "--api-secret", SECRET], "--room"),
        (["token", "--room", "*", "--api-key", KEY, "--api-secret", SECRET], "wildcard"),
        (["token", "--room", "demo*", "--api-key", KEY, "--api-secret", SECRET], "wildcard"),
        (
            ["token", "--room", "r1", "--identity", "dystream-avatar-3f2a", "--api-key", KEY, "--api-secret", SECRET],
            "the avatar's identity",
        ),
        (
            ["token", "--room", "r1", "--identity", "dystream-avatar", "--api-key", KEY, "--api-secret", SECRET],
            "the avatar's identity",
        ),
        (
            ["token", "--room", "r1", "--identity", "agent-AJ_x8Yk", "--api-key", KEY, "--api-secret", SECRET],
            "an agent's identity",
        ),
        (["token", "--room", "r1", "--api-key", KEY, "--api-secret", SECRET, "--ttl", "13"], "at most 12"),
        (["start"], "LIVEKIT_URL"),
        (["dev", "--api-key", KEY, "--api-secret", SECRET], "LIVEKIT_URL"),
        (["avatar-worker", "--url", "ws://127.0.0.1:1"], "LIVEKIT_API_KEY"),
        (["connect", "--room", "r1", "--url", "localhost:7880", "--api-key", KEY, "--api-secret", SECRET], "not a URL"),
    ],
)
def test_wrong_settings_give_one_line_and_exit_2(args: list[str], message: str, capsys) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert SECRET not in err


def test_a_half_configured_pipeline_is_refused_before_connecting(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYSTREAM_AGENT__LLM", "openai/gpt-4.1-mini")
    args = ["start", "--url", "ws://127.0.0.1:1", "--api-key", KEY, "--api-secret", SECRET]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "DYSTREAM_AGENT__STT" in err and "DYSTREAM_AGENT__TTS" in err and len(err.splitlines()) == 1


def test_a_missing_reply_clip_is_named(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYSTREAM_AGENT__REPLY_CLIPS", f'["{tmp_path / "nope.wav"}"]')
    args = ["start", "--url", "ws://127.0.0.1:1", "--api-key", KEY, "--api-secret", SECRET]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "nope.wav" in err and "DYSTREAM_AGENT__REPLY_CLIPS" in err


def test_the_console_script_prints_no_traceback_for_a_user_error() -> None:
    result = run_cli("start", env={"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "dystream start: error: missing LiveKit connection settings: set LIVEKIT_URL (or --url)"
    )
    assert "Traceback" not in result.stderr


def test_connect_to_a_server_that_is_not_there_fails_with_one_line() -> None:
    # nothing listens on port 1: `connect` cannot look the room up, and says so without a traceback
    env = {"LIVEKIT_URL": "http://127.0.0.1:1", "LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET}
    result = run_cli("connect", "--room", "r1", env={**env, "DYSTREAM_AVATAR__MODE": "remote"})
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dystream connect: error:") and "127.0.0.1:1" in last, result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("DYSTREAM_STREAM__FPS", "abc", "should be a valid integer"),  # wrong type
        ("DYSTREAM_STREAM__FPS", "0", "greater than or equal to 1"),  # out of range
        ("DYSTREAM_STREAM__FPS", "-5", "greater than or equal to 1"),
        ("DYSTREAM_STREAM__FPS", "30", "25 fps only"),  # in range, but not what the model runs at
        ("DYSTREAM_STREAM__LEFT_CONTEXT_MS", "100000000", "less than or equal to 10000"),
        ("DYSTREAM_STREAM__MAX_QUEUED_SELF_S", "1e12", "less than or equal to 600"),
        ("DYSTREAM_MODEL__DEVICE", "cuda:abc", "cpu, mps, cuda or cuda:N"),
        ("DYSTREAM_LOG_LEVEL", "LOUD", "'INFO'"),
        ("DYSTREAM_VAD__BACKEND", "onnx", "'silero' or 'webrtc'"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_it_and_exit_2(
    variable: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["token", "--room", "r", "--identity", "u"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"dystream: error: {variable}={value} is invalid: ") and says in captured.err


@pytest.mark.parametrize(
    ("variable", "nearest"),
    [("DYSTREAM_STREM__FPS", "DYSTREAM_STREAM__FPS"), ("DYSTREAM_MODEL__DEVISE", "DYSTREAM_MODEL__DEVICE")],
)
def test_a_misspelt_setting_names_the_nearest_one(variable: str, nearest: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv(variable, "1")
    assert main(["token", "--room", "r", "--identity", "u"]) == 2
    assert (
        capsys.readouterr().err == f"dystream: error: {variable} is not a DyStream setting: did you mean {nearest}?\n"
    )


def test_an_unknown_setting_in_the_env_file_is_refused_too(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / ".env").write_text("DYSTREAM_MODEL__UNKNOWN_KEY=1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["token", "--room", "r", "--identity", "u"]) == 2
    assert capsys.readouterr().err.startswith("dystream: error: DYSTREAM_MODEL__UNKNOWN_KEY is not a DyStream setting")


def test_a_valid_setting_in_lower_case_is_accepted(monkeypatch, capsys) -> None:
    monkeypatch.setenv("DYSTREAM_LOG_LEVEL", "debug")
    assert get_settings().log_level == "DEBUG"


def test_the_console_script_reports_a_bad_setting_without_a_traceback() -> None:
    result = run_cli("token", "--room", "r", "--identity", "u", env={"DYSTREAM_STREAM__FPS": "0"})
    assert result.returncode == 2
    assert result.stderr == "dystream: error: DYSTREAM_STREAM__FPS=0 is invalid: should be greater than or equal to 1\n"


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_torch_threads_wait_passively_unless_the_environment_says_otherwise(given: str | None, expected: str) -> None:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    probe = "import agent.__main__, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


# livekit-agents' entry point (`python -m livekit.agents start <file>`, which `lk agent` drives) finds the worker by
# its own discovery: a module-level AgentServer
DISCOVER = """
from pathlib import Path
from livekit.agents import AgentServer
from livekit.agents.cli.discover import get_import_data
import importlib
data = get_import_data(path=Path({path!r}))
server = getattr(importlib.import_module(data.module_data.module_import_str), data.app_name)
print(data.app_name, type(server).__name__, isinstance(server, AgentServer))
"""


@pytest.mark.parametrize(
    ("path", "limit"),
    [("agent/app.py", "DYSTREAM_AGENT__MAX_JOBS"), ("agent/avatar_app.py", "DYSTREAM_AVATAR__MAX_SESSIONS_PER_WORKER")],
)
def test_livekits_own_entry_point_finds_each_worker(path: str, limit: str) -> None:
    # the load limit given, so building the worker measures nothing (no model is loaded)
    done = run_python("-c", DISCOVER.format(path=path), env={limit: "2", "DYSTREAM_AGENT__AGENT_NAME": "a"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["server", "AgentServer", "True"]


def test_livekits_own_entry_point_reports_a_bad_setting_in_one_line() -> None:
    done = run_python("-c", "import agent.app", env={"DYSTREAM_STREAM__FPS": "0"})
    assert done.returncode == 2
    assert done.stderr == (
        "dystream start: error: DYSTREAM_STREAM__FPS=0 is invalid: should be greater than or equal to 1\n"
    )
