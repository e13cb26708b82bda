"""The "other" stream: the linked user's microphone, followed through the call, fed to the engine as 16 kHz mono.

Which user: the one the agent session listens to, when ``linked_identity`` is given (in-process: the session's
``room_io.linked_participant``; remote: the user the agent names in its ``dystream.linked_user`` attribute), and no
one while that user is not in the room or the session has linked no one yet: the avatar never listens to a second
user the agent does not hear. Without ``linked_identity``: the first remote standard (or SIP) participant that is
neither the agent nor publishing on behalf of the agent.

Following: the choice is made again whenever someone joins or leaves, attributes change, the audio stream ends, or
once a second (the agent session may link a user later). A new user gets a new ``rtc.AudioStream.from_participant``
(``SOURCE_MICROPHONE``, 16 kHz, mono); that stream itself follows the user's microphone when they unpublish it and
publish another (device switch). When there is no user, nothing is pushed and the engine hears silence. Each change
is a ``"user_changed"`` event with the identity listened to now (None: no one), once the old stream is closed.

Each chunk goes through a ``SpeechGate``: VAD windows reported to the conversation state (``"other"``), then passed
to the engine, as exact zeros outside speech when ``settings.vad.gate_other`` is on. The VAD model runs on a thread of
its own, not on the event loop: the loop paces the published audio and video, and a VAD call every 32 ms on it took an
eighth of its time in a profiled call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF

from .gate import SpeechGate
from .log import logger
from .pcm import SAMPLE_RATE, To16kMono
from .settings import VadSettings
from .state import ConversationState
from .vad import create_vad

USER_KINDS = (rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, rtc.ParticipantKind.PARTICIPANT_KIND_SIP)
REPICK_INTERVAL_S = 1.0

OpenStream = Callable[[Any], AsyncIterator[Any]]


def open_microphone(participant: rtc.Participant) -> rtc.AudioStream:
    """The participant's microphone as 16 kHz mono frames, following their track changes."""
    return rtc.AudioStream.from_participant(
        participant=participant,
        track_source=rtc.TrackSource.SOURCE_MICROPHONE,
        sample_rate=SAMPLE_RATE,
        num_channels=1,
    )


class UserListener(rtc.EventEmitter[Literal["user_changed"]]):
    def __init__(
        self,
        room: rtc.Room,
        feed: Callable[[np.ndarray], object],
        *,
        state: ConversationState | None = None,
        vad: VadSettings | None = None,
        agent_identity: str | None = None,
        linked_identity: Callable[[], str | None] | None = None,
        open_stream: OpenStream = open_microphone,
    ) -> None:
        super().__init__()
        vad = vad or VadSettings()
        self._room = room
        self._state = state
        self._agent_identity = agent_identity
        self._linked_identity = linked_identity
        self._open_stream = open_stream
        report = (lambda s, ms: state.update("other", s, ms)) if state is not None else (lambda s, ms: s)
        self._feed = feed
        self._gate = SpeechGate(create_vad(vad), report, gate=vad.gate_other)
        self._vad_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dystream-vad")
        self._to16k = To16kMono()
        self._changed = asyncio.Event()
        self._user: rtc.Participant | None = None
        self._stream: AsyncIterator[Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._main: asyncio.Task[None] | None = None
        self.samples = 0

    @property
    def user_identity(self) -> str | None:
        return self._user.identity if self._user is not None else None

    def start(self) -> None:
        for event in ("participant_connected", "participant_disconnected", "participant_attributes_changed"):
            self._room.on(event, self._on_room_event)
        self._main = asyncio.get_running_loop().create_task(self._follow())
        self._changed.set()

    def _on_room_event(self, *_: Any) -> None:
        self._changed.set()

    def pick(self) -> rtc.Participant | None:
        """The participant to listen to now (see the module docstring)."""
        participants = dict(self._room.remote_participants)
        if self._linked_identity is not None:
            linked = self._linked_identity()
            return participants.get(linked) if linked else None
        agent = self._agent_identity or self._room.local_participant.identity
        for participant in participants.values():
            if participant.identity == agent or participant.kind not in USER_KINDS:
                continue
            if participant.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF) == agent:
                continue
            return participant
        return None

    async def _follow(self) -> None:
        while True:
            # (not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that races the event)
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({changed}, timeout=REPICK_INTERVAL_S)
            finally:
                changed.cancel()
            self._changed.clear()
            wanted = self.pick()
            reading = self._reader is not None and not self._reader.done()
            if wanted is not None and self._user is not None and wanted.identity == self._user.identity and reading:
                continue
            await self._stop_reading()
            if wanted is not None:
                self._start_reading(wanted)

    def _start_reading(self, user: rtc.Participant) -> None:
        self._user = user
        self._stream = self._open_stream(user)
        self._reader = asyncio.get_running_loop().create_task(self._read(self._stream))
        logger.info("listening to user", extra={"identity": user.identity})
        self.emit("user_changed", user.identity)

    async def _stop_reading(self) -> None:
        if self._user is None:
            return
        logger.info("stopped listening to user", extra={"identity": self._user.identity})
        self._user = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._stream is not None and hasattr(self._stream, "aclose"):
            with contextlib.suppress(Exception):
                await self._stream.aclose()
        self._reader = self._stream = None
        # on the VAD's thread, after any window a cancelled reader left running there
        await asyncio.get_running_loop().run_in_executor(self._vad_thread, self._gate.reset)
        self._to16k.reset()
        if self._state is not None:
            self._state.end("other")
        self.emit("user_changed", None)

    async def _read(self, stream: AsyncIterator[Any]) -> None:
        # when the stream ends (the user left), the next periodic choice, at most a second later, opens another
        async for event in stream:
            frame: rtc.AudioFrame = getattr(event, "frame", event)
            pcm = self._to16k.push(frame)
            self.samples += len(pcm)
            for chunk in await self._gate.push_on(self._vad_thread, pcm):
                self._feed(chunk)

    async def aclose(self) -> None:
        for event in ("participant_connected", "participant_disconnected", "participant_attributes_changed"):
            self._room.off(event, self._on_room_event)
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        await self._stop_reading()
        self._vad_thread.shutdown(wait=False)
