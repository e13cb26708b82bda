"""Remote mode: dispatch through LiveKit's agent dispatch API (a Twirp server on loopback), the avatar worker's
accept / load / job, and the wire protocol its job answers (data-stream audio in, lk.playback_* RPCs out)."""

from __future__ import annotations

import asyncio
import json
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from aiohttp import web
from livekit import api, rtc
from livekit.agents.testing import fake_job_context
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar._datastream_io import (
    AUDIO_STREAM_TOPIC,
    RPC_CLEAR_BUFFER,
    RPC_PLAYBACK_FINISHED,
    RPC_PLAYBACK_STARTED,
)
from livekit.plugins.dystream import DyStreamException, remote, state_attribute
from livekit.plugins.dystream.remote import (
    DispatchInfo,
    accept_avatar_job,
    avatar_worker_load,
    dispatch_avatar,
    run_avatar_job,
)
from livekit.plugins.dystream.state_attribute import ATTRIBUTE_STATE
from livekit.plugins.dystream.testing import FakeRoom, next_event, tiny_engine

from config.settings import Settings, get_settings


def read_wav(name: str) -> np.ndarray:
    path = Path(get_settings().samples_dir) / name
    assert path.is_file(), f"sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    with wave.open(str(path)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), np.int16)


INFO = DispatchInfo(
    agent_identity="agent-1",
    avatar_identity="dystream-avatar",
    user_identity="alice",
    portrait="/srv/portraits/me.png",
    options={"model.steps": 3, "stream.lookahead_other_ms": 80, "vad.backend": "webrtc"},
)


def test_dispatch_info_round_trip_and_options() -> None:
    assert DispatchInfo.from_json(INFO.to_json()) == INFO
    settings = INFO.apply(Settings())
    assert (settings.model.steps, settings.stream.lookahead_other_ms, settings.vad.backend) == (3, 80, "webrtc")
    assert settings.stream.lookahead_self_ms == Settings().stream.lookahead_self_ms
    with pytest.raises(ValueError, match="dispatch_avatar"):
        DispatchInfo.from_json('{"room": "x"}')
    with pytest.raises(ValueError, match="unknown avatar option"):
        DispatchInfo("a", "b", options={"livekit.api_secret": "x"}).apply(Settings())
    with pytest.raises(ValueError, match="steps"):  # values are validated like the settings themselves
        DispatchInfo("a", "b", options={"model.steps": 99}).apply(Settings())


@pytest.fixture
async def livekit_api():
    """A LiveKit server API on loopback that records the Twirp calls it gets."""
    calls: list[tuple[str, bytes, str]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        calls.append((request.path, body, request.headers.get("Authorization", "")))
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
    yield f"http://127.0.0.1:{port}", calls
    await runner.cleanup()


async def test_dispatch_goes_through_livekit_agent_dispatch(livekit_api) -> None:
    url, calls = livekit_api
    dispatch = await dispatch_avatar("room-7", INFO, url=url, api_key="devkey", api_secret="secret" * 6)
    assert dispatch.id == "AD_1"
    [(path, body, auth)] = calls
    assert path == "/twirp/livekit.AgentDispatchService/CreateDispatch"
    assert auth.startswith("Bearer ")
    request = api.CreateAgentDispatchRequest.FromString(body)
    assert (request.agent_name, request.room) == ("dystream-avatar", "room-7")
    assert DispatchInfo.from_json(request.metadata) == INFO
    assert request.attributes[ATTRIBUTE_PUBLISH_ON_BEHALF] == "agent-1"


async def test_dispatch_without_credentials_names_the_variables() -> None:
    settings = Settings(livekit={"url": "", "api_key": "", "api_secret": ""})
    with pytest.raises(DyStreamException, match="LIVEKIT_API_KEY"):
        await dispatch_avatar("room-7", INFO, settings=settings, url="http://127.0.0.1:9")


class FakeJobRequest:
    def __init__(self, metadata: str) -> None:
        self.job = SimpleNamespace(metadata=metadata)
        self.room = SimpleNamespace(name="room-7")
        self.accepted: dict | None = None
        self.rejected = False

    async def accept(self, **kwargs) -> None:
        self.accepted = kwargs

    async def reject(self, **kwargs) -> None:
        self.rejected = True


async def test_accept_joins_as_the_expected_identity_on_behalf_of_the_agent() -> None:
    request = FakeJobRequest(INFO.to_json())
    await accept_avatar_job(request)
    assert request.accepted["identity"] == "dystream-avatar"
    assert request.accepted["attributes"] == {ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"}
    stray = FakeJobRequest("not json")
    await accept_avatar_job(stray)
    assert stray.rejected and stray.accepted is None


def test_worker_load_counts_active_sessions(monkeypatch) -> None:
    monkeypatch.setenv("DYSTREAM_AVATAR__MAX_SESSIONS_PER_WORKER", "2")  # the default limit, from the environment
    assert avatar_worker_load(SimpleNamespace(active_jobs=[])) == 0.0
    assert avatar_worker_load(SimpleNamespace(active_jobs=[object()])) == 0.5
    assert avatar_worker_load(SimpleNamespace(active_jobs=[object()] * 3)) == 1.0
    assert avatar_worker_load(SimpleNamespace(active_jobs=[object()] * 3), limit=4) == 0.75  # measured capacity


def rpc_performed(room: FakeRoom, method: str):
    """The avatar's next call of ``method`` on the agent (to await later)."""
    return next_event(room, "rpc_performed", lambda dest, called, _: (dest, called) == ("agent-1", method), timeout=8.0)


async def test_avatar_job_serves_the_agent_over_data_streams_and_rpc(monkeypatch) -> None:
    options = {"vad.backend": "webrtc", "model.steps": 1, "stream.left_context_ms": 400}  # light: keeps real time
    info = DispatchInfo(agent_identity="agent-1", avatar_identity="dystream-avatar", options=options)
    room = FakeRoom(local_identity="dystream-avatar")
    room.join("agent-1", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    speech = read_wav("dyadic_self.wav")[int(2.4 * 16000) :]
    shutdowns: list[str] = []

    async def build(portrait, settings):
        assert portrait is None and (settings.vad.backend, settings.model.steps) == ("webrtc", 1)
        # a worker's own settings, with the remote variants: a jitter buffer for the speech, a longer playout lead,
        # its own thread priority
        assert (settings.stream.self_prebuffer_ms, settings.stream.worker_nice) == (240, 2)
        assert settings.avatar.playout_lead_ms == 160
        return tiny_engine(settings.stream, settings.model), (128, 128)

    own = get_settings().model_copy(deep=True)
    own.stream.worker_nice, own.stream.remote_worker_nice, own.stream.remote_self_prebuffer_ms = 7, 2, 240
    own.avatar.playout_lead_ms, own.avatar.remote_playout_lead_ms = 80, 160
    with fake_job_context(room=room, job_metadata=info.to_json()) as ctx:
        monkeypatch.setattr(ctx, "shutdown", lambda reason="": shutdowns.append(reason))
        pipeline = await run_avatar_job(ctx, settings=own, build=build)
        try:
            local = room.local_participant
            assert local.attributes[ATTRIBUTE_PUBLISH_ON_BEHALF] == "agent-1"

            def rpcs(method: str) -> list[str]:
                return [payload for dest, m, payload in local.rpc_calls if m == method and dest == "agent-1"]

            # one segment, played to its end: started, then finished (not interrupted) at its length
            finished = rpc_performed(room, RPC_PLAYBACK_FINISHED)
            stream = room.send_byte_stream(
                AUDIO_STREAM_TOPIC, "agent-1", [speech[:8000].tobytes()], {"sample_rate": "16000", "num_channels": "1"}
            )
            stream.close()
            await finished
            assert len(rpcs(RPC_PLAYBACK_STARTED)) == 1
            report = json.loads(rpcs(RPC_PLAYBACK_FINISHED)[0])
            assert report["interrupted"] is False and abs(report["playback_position"] - 0.5) < 0.041
            assert [p.name for p in local.published] == ["avatar_audio", "avatar_video"]

            # a second segment, interrupted by the agent's lk.clear_buffer
            started = rpc_performed(room, RPC_PLAYBACK_STARTED)
            stream = room.send_byte_stream(
                AUDIO_STREAM_TOPIC, "agent-1", [speech[:48000].tobytes()], {"sample_rate": "16000", "num_channels": "1"}
            )
            await started
            await asyncio.sleep(0.3)  # it plays for a while
            finished = rpc_performed(room, RPC_PLAYBACK_FINISHED)
            assert await room.call_rpc(RPC_CLEAR_BUFFER, "agent-1") == "ok"
            stream.close()
            await finished
            interrupted = json.loads(rpcs(RPC_PLAYBACK_FINISHED)[1])
            assert interrupted["interrupted"] is True and 0.1 < interrupted["playback_position"] < 2.9
            await asyncio.sleep(0.3)
            assert len(rpcs(RPC_PLAYBACK_FINISHED)) == 2  # exactly one per segment
            assert local.attributes[ATTRIBUTE_STATE] in ("idle", "speaking", "listening", "both")
            assert pipeline.listener.user_identity is None  # no user in the room: the model hears silence

            room.leave("agent-1")  # the agent left: the avatar leaves too
            assert shutdowns == ["agent left the room"]
        finally:
            await pipeline.aclose()


async def test_the_agent_names_the_user_its_session_listens_to_and_the_avatar_reads_only_the_agent() -> None:
    agent_room = FakeRoom(local_identity="agent-1")
    linked: list[str | None] = [None]
    sharing = asyncio.create_task(remote.share_linked_user(agent_room, lambda: linked[0], interval_s=0.0))

    async def shared() -> str | None:
        for _ in range(5):  # a few rounds of the check
            await asyncio.sleep(0)
        return agent_room.local_participant.attributes.get(remote.LINKED_USER_ATTRIBUTE)

    assert await shared() is None  # the session has linked no one yet
    linked[0] = "alice"  # linked after the avatar was dispatched
    assert await shared() == "alice"
    linked[0] = None  # alice dropped: the session waits for her, the attribute still names her
    assert await shared() == "alice"
    linked[0] = "bob"
    assert await shared() == "bob"
    sharing.cancel()

    avatar_room = FakeRoom(local_identity="dystream-avatar-1")
    assert remote.linked_user_of(avatar_room, "agent-1") is None
    avatar_room.join("mallory", **{remote.LINKED_USER_ATTRIBUTE: "mallory"})  # a user cannot name itself
    assert remote.linked_user_of(avatar_room, "agent-1") is None
    avatar_room.join(
        "agent-1", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT, **{remote.LINKED_USER_ATTRIBUTE: "bob"}
    )
    assert remote.linked_user_of(avatar_room, "agent-1") == "bob"


async def _shared_after_a_first_write_that(fails: Callable[[], Awaitable[None]]) -> list[dict[str, str]]:
    """Every write ``share_linked_user`` made, when its first one ``fails`` and the next succeeds."""
    room = FakeRoom(local_identity="agent-1")
    write = room.local_participant.set_attributes
    attempts: list[dict[str, str]] = []
    named = asyncio.Event()

    async def failing_once(attributes: dict[str, str]) -> None:
        attempts.append(attributes)
        if len(attempts) == 1:
            await fails()
        await write(attributes)
        named.set()

    room.local_participant.set_attributes = failing_once
    sharing = asyncio.create_task(remote.share_linked_user(room, lambda: "alice", interval_s=0.0))
    await asyncio.wait_for(named.wait(), 5.0)
    sharing.cancel()
    assert room.local_participant.attributes[remote.LINKED_USER_ATTRIBUTE] == "alice"
    return attempts


async def test_a_failed_write_of_the_linked_user_is_tried_again() -> None:
    async def reconnecting() -> None:
        raise RuntimeError("engine is not connected")

    assert len(await _shared_after_a_first_write_that(reconnecting)) == 2


async def test_a_write_of_the_linked_user_the_server_never_acknowledges_is_tried_again(monkeypatch) -> None:
    monkeypatch.setattr(state_attribute, "WRITE_TIMEOUT_S", 0.01)

    async def never_answered() -> None:
        await asyncio.Event().wait()

    assert len(await _shared_after_a_first_write_that(never_answered)) == 2
