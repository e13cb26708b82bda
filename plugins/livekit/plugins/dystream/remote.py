"""Remote mode: the avatar runs in its own LiveKit agent worker, dispatched into the agent's room by LiveKit.

Agent side (``AvatarSession(mode="remote")``): ``dispatch_avatar`` asks LiveKit's agent dispatch service for a job
of the avatar worker's agent name in this room (``CreateAgentDispatchRequest``), with JSON metadata saying which
agent to serve and under which identity (``DispatchInfo``). LiveKit picks the least loaded avatar worker: GPU
machines scale out by running more of them, each reporting ``active sessions / settings.avatar.max_sessions_per_
worker`` as its load (``avatar_worker_load``). The agent then streams its speech with ``DataStreamAudioOutput``.

Avatar worker side (``agent/avatar_worker.py`` registers these): ``accept_avatar_job`` accepts the job under the
identity the agent expects, with the attribute ``lk.publish_on_behalf`` = the agent's identity (so clients and
the agent's RoomIO treat the avatar's tracks as the agent's); the job's token is scoped to that room by LiveKit.
``run_avatar_job`` connects, receives the speech with ``DataStreamAudioReceiver(room, sender_identity=agent)``,
answers ``lk.playback_started`` / ``lk.playback_finished`` (the runner does, through the receiver), listens to the
user the agent's session listens to (the agent keeps it in its ``LINKED_USER_ATTRIBUTE``, ``share_linked_user``),
publishes ``avatar_audio``/``avatar_video``, and leaves when the agent leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livekit import api, rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF

from .errors import DyStreamException
from .log import logger
from .settings import DyStreamSettings, read_settings
from .state_attribute import write_attributes

if TYPE_CHECKING:
    from livekit.agents import AgentServer, JobContext, JobRequest

    from .pipeline import AvatarPipeline

BuildEngine = Callable[[Any, DyStreamSettings], Awaitable[tuple[Any, tuple[int, int]]]]
AGENT_WAIT_S = 30.0
LINKED_USER_ATTRIBUTE = "dystream.linked_user"  # on the agent's participant: the user its session listens to
LINKED_USER_CHECK_S = 1.0


@dataclass(frozen=True)
class DispatchInfo:
    """What the agent tells the avatar worker, as the dispatch's JSON metadata."""

    agent_identity: str
    avatar_identity: str
    user_identity: str | None = None
    portrait: str | None = None  # a path the avatar worker can read; None: its own settings.avatar.portrait
    options: dict[str, Any] = field(default_factory=dict)  # settings overrides, see `apply`

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, metadata: str) -> DispatchInfo:
        try:
            data = json.loads(metadata or "{}")
            info = cls(**data)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"avatar job metadata is not a DyStream dispatch ({error}): dispatch the avatar worker with "
                "livekit.plugins.dystream.dispatch_avatar (AvatarSession(mode='remote') does)"
            ) from error
        if not info.agent_identity or not info.avatar_identity:
            raise ValueError("avatar job metadata lacks agent_identity/avatar_identity: use dispatch_avatar")
        return info

    def apply(self, settings: DyStreamSettings) -> DyStreamSettings:
        """``settings`` with the agent's choices (sampler steps, lookahead, VAD, fps, model size...) applied."""
        sections: dict[str, dict[str, Any]] = {}
        for dotted, value in self.options.items():
            section, _, name = dotted.partition(".")
            if section not in ("model", "stream", "vad", "avatar") or not name:
                raise ValueError(f"unknown avatar option {dotted!r} in the dispatch metadata")
            sections.setdefault(section, {})[name] = value
        update = {}
        for section, values in sections.items():
            current = getattr(settings, section)
            update[section] = current.model_validate({**current.model_dump(), **values})  # validated, not trusted
        return settings.model_copy(update=update)


async def dispatch_avatar(
    room_name: str,
    info: DispatchInfo,
    *,
    agent_name: str | None = None,
    settings: DyStreamSettings | None = None,
    url: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
) -> api.AgentDispatch:
    """Ask LiveKit to dispatch an avatar worker (agent name ``settings.avatar.avatar_agent_name``) into the room."""
    settings = settings or read_settings()
    agent_name = agent_name or settings.avatar.avatar_agent_name
    request = api.CreateAgentDispatchRequest(
        agent_name=agent_name,
        room=room_name,
        metadata=info.to_json(),
        attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: info.agent_identity},
    )
    async with livekit_api(settings, url, api_key, api_secret) as lkapi:
        dispatch = await lkapi.agent_dispatch.create_dispatch(request)
    logger.info(
        "avatar worker dispatched", extra={"agent_name": agent_name, "room": room_name, "dispatch_id": dispatch.id}
    )
    return dispatch


def livekit_api(
    settings: DyStreamSettings, url: str | None = None, api_key: str | None = None, api_secret: str | None = None
) -> api.LiveKitAPI:
    """A server API client from the given credentials, else the settings'."""
    url = url or settings.livekit.url or None
    api_key = api_key or settings.livekit.api_key or None
    api_secret = api_secret or settings.livekit.api_secret.get_secret_value() or None
    try:
        return api.LiveKitAPI(url, api_key, api_secret)
    except ValueError as error:  # missing url / key / secret
        raise DyStreamException(
            f"cannot dispatch the avatar worker: {error}; set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
        ) from error


async def keep_avatar_dispatched(
    room: rtc.Room,
    avatar_identity: str,
    dispatch: api.AgentDispatch,
    redispatch: Callable[[], Awaitable[api.AgentDispatch]],
    lkapi: Callable[[], api.LiveKitAPI],
    *,
    after_s: float,
) -> None:
    """Until the avatar joins the room. LiveKit offers a dispatch to the workers available when it is made: one made
    while every avatar worker was full (a call ending, its worker not yet free) stays without a job. Every
    ``after_s`` without the avatar, a dispatch that still has no job is deleted and made again."""
    from livekit.agents import utils

    while True:
        try:
            await asyncio.wait_for(utils.wait_for_participant(room=room, identity=avatar_identity), after_s)
            return
        except TimeoutError:
            pass
        async with lkapi() as client:
            current = await client.agent_dispatch.get_dispatch(dispatch.id, room.name)
            if current is not None and len(current.state.jobs) > 0:
                continue  # a worker took it: the avatar is on its way
            await client.agent_dispatch.delete_dispatch(dispatch.id, room.name)
        dispatch = await redispatch()
        logger.warning(
            "no avatar worker took the dispatch: dispatched again",
            extra={"room": room.name, "dispatch_id": dispatch.id},
        )


async def share_linked_user(
    room: rtc.Room, linked: Callable[[], str | None], *, interval_s: float = LINKED_USER_CHECK_S
) -> None:
    """Agent side, until cancelled: keep ``LINKED_USER_ATTRIBUTE`` on the agent's participant equal to the user its
    session listens to (``linked``), looked at every ``interval_s``: the session links a user after the avatar has
    been dispatched, and links one again when the user leaves and comes back."""
    shared = room.local_participant.attributes.get(LINKED_USER_ATTRIBUTE)
    while True:
        user = linked()
        if user is not None and user != shared:
            try:
                await write_attributes(room.local_participant, {LINKED_USER_ATTRIBUTE: user})
                shared = user
            except Exception as error:  # noqa: BLE001 - e.g. reconnecting, or never acknowledged: tried again next look
                logger.warning(
                    "could not name the linked user to the avatar", extra={"user": user, "error": repr(error)}
                )
        await asyncio.sleep(interval_s)


def linked_user_of(room: rtc.Room, agent_identity: str) -> str | None:
    """Avatar side: the user the agent listens to, from the agent's participant (only the agent sets its own
    attributes; what other participants claim is not read)."""
    agent = room.remote_participants.get(agent_identity)
    return agent.attributes.get(LINKED_USER_ATTRIBUTE) if agent is not None else None


async def accept_avatar_job(request: JobRequest) -> None:
    """The avatar worker's ``on_request``: join as the identity the agent expects, publishing on its behalf."""
    try:
        info = DispatchInfo.from_json(request.job.metadata)
    except ValueError as error:
        logger.error("rejecting avatar job", extra={"error": str(error), "room": request.room.name})
        await request.reject()
        return
    await request.accept(
        name="DyStream avatar",
        identity=info.avatar_identity,
        attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: info.agent_identity},
    )


def avatar_worker_load(server: AgentServer, *, limit: int | None = None) -> float:
    """The worker's load for LiveKit's balancing (its ``load_fnc``): the server's active jobs, one avatar each, over
    the sessions it may run (``limit``, default ``avatar.max_sessions_per_worker``)."""
    limit = limit or read_settings().avatar.max_sessions_per_worker or 1
    return min(1.0, len(server.active_jobs) / limit)


async def run_avatar_job(
    ctx: JobContext, *, settings: DyStreamSettings | None = None, build: BuildEngine | None = None
) -> AvatarPipeline | None:
    """The avatar worker's job entrypoint: connect, build the avatar, serve the agent until it leaves.

    ``build(portrait, settings) -> (engine, (width, height))`` makes the engine; default ``models.build_engine``
    (the process's cached models and the prepared portrait).
    """
    from livekit.agents import AutoSubscribe, utils
    from livekit.agents.voice.avatar import DataStreamAudioReceiver

    from .pipeline import AvatarPipeline

    if build is None:
        from .models import build_engine as build

    info = DispatchInfo.from_json(ctx.job.metadata)
    settings = info.apply(settings or read_settings())
    # the agent's speech comes over the network here: start each reply with a jitter buffer, and keep the remote
    # worker's own playout lead (``avatar.remote_playout_lead_ms``); and this process carries only the avatar, so its
    # model threads have a priority of their own (``stream.remote_worker_nice``)
    stream, avatar = settings.stream, settings.avatar
    prebuffer = max(stream.self_prebuffer_ms, stream.remote_self_prebuffer_ms)
    remote = {"self_prebuffer_ms": prebuffer, "worker_nice": stream.remote_worker_nice}
    lead = {"playout_lead_ms": max(avatar.playout_lead_ms, avatar.remote_playout_lead_ms)}
    settings = settings.model_copy(
        update={"stream": stream.model_copy(update=remote), "avatar": avatar.model_copy(update=lead)}
    )
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    room = ctx.room
    local = room.local_participant
    if local.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF) != info.agent_identity:
        await local.set_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: info.agent_identity})

    try:
        await asyncio.wait_for(utils.wait_for_participant(room=room, identity=info.agent_identity), AGENT_WAIT_S)
    except TimeoutError:
        logger.error("the agent to serve is not in the room", extra={"agent": info.agent_identity, "room": room.name})
        ctx.shutdown(reason="agent not in the room")
        return None

    portrait = Path(info.portrait) if info.portrait else None
    engine, size = await build(portrait, settings)
    receiver = DataStreamAudioReceiver(room, sender_identity=info.agent_identity)
    pipeline = await AvatarPipeline.start(
        room,
        receiver,
        engine,
        settings=settings,
        video_size=size,
        agent_identity=info.agent_identity,
        linked_identity=lambda: linked_user_of(room, info.agent_identity) or info.user_identity,
    )
    ctx.add_shutdown_callback(pipeline.aclose)

    def on_participant_disconnected(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == info.agent_identity:
            logger.info("agent left: avatar leaving", extra={"agent": info.agent_identity})
            ctx.shutdown(reason="agent left the room")

    room.on("participant_disconnected", on_participant_disconnected)
    return pipeline
