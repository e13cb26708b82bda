"""``AvatarSession``: the DyStream avatar joins any livekit-agents voice agent in two lines.

    avatar = dystream.AvatarSession(portrait="me.png")
    await avatar.start(session, room=ctx.room)          # before session.start(...)

Two modes (``mode=`` or ``settings.avatar.mode``):

- ``"in-process"`` (default): the avatar runs inside the agent's job. The agent's speech goes to a
  ``QueueAudioOutput(sample_rate=16000, wait_playback_start=True)`` read by our ``DyStreamRunner`` driving our
  generator; the agent's own participant publishes ``avatar_audio``/``avatar_video``. The models are loaded once
  per process (``load_models``, ideally from the prewarm hook). ``aclose()`` never asks the server to remove a
  participant: the avatar's identity is the agent's own.
- ``"remote"``: a separate avatar worker is dispatched into the room by LiveKit (see ``remote.py``), under an
  identity made for this dispatch (``avatar.identity`` and 96 random bits). The agent streams its speech to it with
  ``DataStreamAudioOutput(..., wait_remote_track=KIND_VIDEO, wait_playback_start=True)``, paced to
  ``avatar.remote_send_lead_ms`` ahead of real time (``send_pacing.py``), and to the dispatched avatar only
  (``trusted_output.py``). ``aclose()`` removes the avatar worker's participant (the base class does).

State: ``state`` and ``"state_changed"`` events (``StateChangedEvent``) in both modes: in-process from the avatar's
own state machine, remote from the dispatched avatar worker's ``dystream.state`` attribute (no one else's).

Metrics: ``AvatarMetrics`` (avatar joined, playback latency) from the base class, and our ``FrameMetrics`` /
``SessionMetrics`` as ``"metrics_collected"`` events of this session (in-process; a remote worker logs them and
counts them in Prometheus). Each ``SessionMetrics`` summary also reaches the ``AgentSession``'s
``"metrics_collected"`` as a ``DyStreamMetrics`` (livekit's ``AvatarMetrics`` with the video's figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from livekit import rtc
from livekit.agents import MetricsCollectedEvent
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given
from livekit.agents.voice.avatar import AvatarSession as _BaseAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput, QueueAudioOutput

from .errors import DyStreamException
from .log import logger
from .metrics import DyStreamMetrics, FrameMetrics, SessionMetrics
from .models import PortraitInput, build_engine
from .pcm import SAMPLE_RATE
from .pipeline import AvatarPipeline
from .remote import DispatchInfo, dispatch_avatar, keep_avatar_dispatched, livekit_api, share_linked_user
from .settings import DyStreamSettings, read_settings
from .state import AvatarState, StateChangedEvent
from .state_attribute import ATTRIBUTE_STATE
from .trusted_output import AvatarAudioOutput

if TYPE_CHECKING:
    from livekit.agents import AgentSession

    from avatar.models import AvatarModels

Mode = Literal["in-process", "remote"]


def configure(
    settings: DyStreamSettings,
    *,
    checkpoints: str | os.PathLike[str] | None = None,
    device: str | None = None,
    fps: int | None = None,
    lookahead_ms: int | None = None,
    steps: int | None = None,
    vad: Literal["silero", "webrtc"] | None = None,
    mode: Mode | None = None,
    random_weights: bool | None = None,
    size: Literal["full", "tiny"] | None = None,
    identity: str | None = None,
    avatar_agent_name: str | None = None,
) -> DyStreamSettings:
    """``settings`` with the given options applied (``None`` keeps the setting)."""

    def changed(section: Any, **values: Any) -> Any:
        values = {k: v for k, v in values.items() if v is not None}
        return section.model_validate({**section.model_dump(), **values}) if values else section

    lookahead = {"lookahead_self_ms": lookahead_ms, "lookahead_other_ms": lookahead_ms}
    return settings.model_copy(
        update={
            "model": changed(
                settings.model, checkpoints_dir=Path(checkpoints) if checkpoints else None, device=device, steps=steps
            ),
            "stream": changed(settings.stream, fps=fps, **lookahead),
            "vad": changed(settings.vad, backend=vad),
            "avatar": changed(
                settings.avatar,
                mode=mode,
                random_weights=random_weights,
                size=size,
                identity=identity,
                avatar_agent_name=avatar_agent_name,
            ),
        }
    )


def linked_user(agent_session: AgentSession) -> str | None:
    """The user the agent session listens to, once its RoomIO has linked one."""
    try:
        participant = agent_session.room_io.linked_participant
    except RuntimeError:  # the session has not started (with a room) yet
        return None
    return participant.identity if participant is not None else None


class AvatarSession(_BaseAvatarSession[Literal["metrics_collected", "state_changed"]]):
    """The DyStream avatar for an ``AgentSession``; options not given come from the ``DYSTREAM_*`` variables
    (``DyStreamSettings``)."""

    def __init__(
        self,
        *,
        portrait: PortraitInput | None = None,
        checkpoints: str | os.PathLike[str] | None = None,
        device: str | None = None,
        fps: int | None = None,
        lookahead_ms: int | None = None,
        steps: int | None = None,
        vad: Literal["silero", "webrtc"] | None = None,
        mode: Mode | None = None,
        random_weights: bool | None = None,
        size: Literal["full", "tiny"] | None = None,
        avatar_identity: str | None = None,
        avatar_agent_name: str | None = None,
        settings: DyStreamSettings | None = None,
        models: AvatarModels | None = None,
        livekit_url: str | None = None,
        livekit_api_key: str | None = None,
        livekit_api_secret: str | None = None,
    ) -> None:
        super().__init__()
        self._settings = configure(
            settings or read_settings(),
            checkpoints=checkpoints,
            device=device,
            fps=fps,
            lookahead_ms=lookahead_ms,
            steps=steps,
            vad=vad,
            mode=mode,
            random_weights=random_weights,
            size=size,
            identity=avatar_identity,
            avatar_agent_name=avatar_agent_name,
        )
        self._portrait = portrait if portrait is not None else self._settings.avatar.portrait
        if self.mode == "remote" and self._portrait is not None and not isinstance(self._portrait, str | os.PathLike):
            raise DyStreamException(
                "in remote mode the portrait must be a file path the avatar worker can read "
                f"(got {type(self._portrait).__name__}); save the image and pass its path"
            )
        # remote: the avatar worker's identity for this dispatch only, not one anyone can know in advance
        self._remote_identity = f"{self._settings.avatar.identity}-{secrets.token_hex(12)}"
        self._models = models  # in-process: these networks instead of the process's cached ones
        self._credentials: tuple[str | None, str | None, str | None] = (
            livekit_url,
            livekit_api_key,
            livekit_api_secret,
        )
        self._pipeline: AvatarPipeline | None = None
        self._audio_output: QueueAudioOutput | DataStreamAudioOutput | None = None
        self._share_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._state = AvatarState.IDLE
        self._agent_session_for_metrics: AgentSession | None = None

    @property
    def mode(self) -> Mode:
        return self._settings.avatar.mode

    @property
    def settings(self) -> DyStreamSettings:
        return self._settings

    @property
    def provider(self) -> str:
        return "dystream"

    @property
    def avatar_identity(self) -> str:
        if self.mode == "in-process" and self._room is not None:
            return self._room.local_participant.identity  # the agent publishes the avatar's tracks itself
        return self._remote_identity

    @property
    def state(self) -> AvatarState:
        """The avatar's conversation state (idle, listening, speaking, both), as its ``dystream.state`` shows it."""
        return self._state

    @property
    def pipeline(self) -> AvatarPipeline | None:
        """The running avatar (in-process mode)."""
        return self._pipeline

    @property
    def audio_output(self) -> QueueAudioOutput | DataStreamAudioOutput | None:
        """Where the agent's speech goes (set as the session's audio tail by ``start``)."""
        return self._audio_output

    async def start(
        self,
        agent_session: AgentSession,
        room: rtc.Room,
        *,
        livekit_url: NotGivenOr[str] = NOT_GIVEN,
        livekit_api_key: NotGivenOr[str] = NOT_GIVEN,
        livekit_api_secret: NotGivenOr[str] = NOT_GIVEN,
    ) -> None:
        """Start the avatar for ``agent_session`` in ``room`` (before ``agent_session.start``). The LiveKit
        credentials, as livekit's avatar plugins take them, are used in remote mode to dispatch the avatar worker;
        not given, the constructor's, then ``LIVEKIT_URL`` / ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``."""
        url, key, secret = self._credentials
        self._credentials = (
            livekit_url if is_given(livekit_url) else url,
            livekit_api_key if is_given(livekit_api_key) else key,
            livekit_api_secret if is_given(livekit_api_secret) else secret,
        )
        await super().start(agent_session, room)
        self._agent_session_for_metrics = agent_session
        if self.mode == "in-process":
            await self._start_in_process(agent_session, room)
        else:
            await self._start_remote(agent_session, room)
        assert self._audio_output is not None
        agent_session.output.replace_audio_tail(self._audio_output)

    async def _start_in_process(self, agent_session: AgentSession, room: rtc.Room) -> None:
        engine, size = await build_engine(self._portrait, self._settings, models=self._models)
        audio = QueueAudioOutput(sample_rate=SAMPLE_RATE, wait_playback_start=True)
        self._pipeline = await AvatarPipeline.start(
            room,
            audio,
            engine,
            settings=self._settings,
            video_size=size,
            agent_identity=room.local_participant.identity,
            linked_identity=lambda: linked_user(agent_session),
            emit=self._emit_dystream_metrics,
        )
        self._pipeline.state.on("state_changed", self._on_state_changed)
        self._audio_output = audio

    async def _start_remote(self, agent_session: AgentSession, room: rtc.Room) -> None:
        info = DispatchInfo(
            agent_identity=room.local_participant.identity,
            avatar_identity=self._remote_identity,
            user_identity=linked_user(agent_session),
            portrait=str(self._portrait) if self._portrait is not None else None,
            options=self._remote_options(),
        )
        url, key, secret = self._credentials
        dispatch = functools.partial(
            dispatch_avatar, room.name, info, settings=self._settings, url=url, api_key=key, api_secret=secret
        )
        lkapi = functools.partial(livekit_api, self._settings, url, key, secret)
        keep = keep_avatar_dispatched(
            room,
            info.avatar_identity,
            await dispatch(),
            dispatch,
            lkapi,
            after_s=self._settings.avatar.redispatch_after_s,
        )
        self._dispatch_task = asyncio.create_task(keep, name="dystream-keep-avatar-dispatched")
        room.on("participant_attributes_changed", self._on_remote_attributes)
        # the session links its user later (and again when the user comes back): the avatar worker follows it
        self._share_task = asyncio.create_task(
            share_linked_user(room, lambda: linked_user(agent_session)), name="dystream-share-linked-user"
        )
        self._audio_output = AvatarAudioOutput(
            room,
            lead_s=self._settings.avatar.remote_send_lead_ms / 1000.0,
            destination_identity=info.avatar_identity,
            sample_rate=SAMPLE_RATE,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,
            wait_playback_start=True,
        )

    def _remote_options(self) -> dict[str, Any]:
        """The settings the avatar worker takes from the agent (paths and devices stay the worker's own)."""
        s = self._settings
        return {
            "model.steps": s.model.steps,
            "stream.fps": s.stream.fps,
            "stream.lookahead_self_ms": s.stream.lookahead_self_ms,
            "stream.lookahead_other_ms": s.stream.lookahead_other_ms,
            "vad.backend": s.vad.backend,
            "avatar.random_weights": s.avatar.random_weights,
            "avatar.size": s.avatar.size,
            "avatar.diagnostic_overlay": s.avatar.diagnostic_overlay,
        }

    def _emit_dystream_metrics(self, metrics: FrameMetrics | SessionMetrics) -> None:
        self.emit("metrics_collected", metrics)
        if isinstance(metrics, SessionMetrics) and self._agent_session_for_metrics is not None:
            event = MetricsCollectedEvent(metrics=DyStreamMetrics.from_summary(metrics))
            self._agent_session_for_metrics.emit("metrics_collected", event)

    def _on_state_changed(self, event: StateChangedEvent) -> None:
        self._state = event.new_state
        self.emit("state_changed", event)

    def _on_remote_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        """Remote mode: the avatar worker's state, from its ``dystream.state`` attribute."""
        if participant.identity != self._remote_identity or ATTRIBUTE_STATE not in changed:
            return
        try:
            new = AvatarState(changed[ATTRIBUTE_STATE])
        except ValueError:
            return  # not a state this version knows
        if new is not self._state:
            self._on_state_changed(StateChangedEvent.between(self._state, new))

    async def aclose(self) -> None:
        if self.mode == "remote" and self._room is not None:
            self._room.off("participant_attributes_changed", self._on_remote_attributes)
        if self.mode == "in-process" and self._room is not None:
            # the base class would ask the server to remove `avatar_identity`: here, that is the agent itself
            self._room.off("connection_state_changed", self._on_connection_state_changed)
            self._room = None
        await super().aclose()
        for task in (self._share_task, self._dispatch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._share_task = self._dispatch_task = None
        if self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            await pipeline.aclose()  # its final summary goes to the agent session too
        self._agent_session_for_metrics = None
        logger.info("avatar session closed", extra={"mode": self.mode})
