"""Who is talking: the avatar's conversation state, idle / listening / speaking / both, with hysteresis.

Each stream (``self``: the agent's reply, on while its audio ticks play; ``other``: the user's microphone, from VAD)
has its own hysteresis:
speech must last ``settings.vad.start_ms`` to switch the stream on, silence must last ``settings.vad.stop_ms`` to
switch it off. Time is audio time (the durations of the windows reported), so the machine behaves the same on a
file as live. The combined state is

    self off, other off -> idle         self on, other off -> speaking
    self off, other on  -> listening    self on, other on  -> both

Every change is emitted as a ``"state_changed"`` event (``StateChangedEvent``) and logged.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from livekit import rtc

from .log import logger
from .settings import VadSettings

Stream = Literal["self", "other"]


class AvatarState(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    SPEAKING = "speaking"
    BOTH = "both"

    @property
    def self_active(self) -> bool:
        return self in (AvatarState.SPEAKING, AvatarState.BOTH)

    @classmethod
    def of(cls, self_active: bool, other_active: bool) -> AvatarState:
        if self_active and other_active:
            return cls.BOTH
        if self_active:
            return cls.SPEAKING
        return cls.LISTENING if other_active else cls.IDLE


class SpeechHysteresis:
    """On after ``start_ms`` of continuous speech, off after ``stop_ms`` of continuous silence."""

    def __init__(self, start_ms: float, stop_ms: float) -> None:
        if start_ms < 0 or stop_ms < 0:
            raise ValueError(
                f"VAD hysteresis must be >= 0 ms, got start_ms={start_ms}, stop_ms={stop_ms} "
                "(DYSTREAM_VAD__START_MS / DYSTREAM_VAD__STOP_MS)"
            )
        self.start_ms = start_ms
        self.stop_ms = stop_ms
        self.active = False
        self._run_ms = 0.0  # how long the input has disagreed with `active`

    def update(self, speech: bool, duration_ms: float) -> bool:
        """Feed ``duration_ms`` of audio classified as ``speech``; returns whether the stream is now on."""
        if speech == self.active:
            self._run_ms = 0.0
            return self.active
        self._run_ms += duration_ms
        if self._run_ms >= (self.start_ms if speech else self.stop_ms):
            self.active = speech
            self._run_ms = 0.0
        return self.active

    def force_off(self) -> None:
        self.active = False
        self._run_ms = 0.0


@dataclass(frozen=True)
class StateChangedEvent:
    old_state: AvatarState
    new_state: AvatarState
    stream: Stream  # the stream whose change caused it
    created_at: float  # time.time()

    @classmethod
    def between(cls, old: AvatarState, new: AvatarState) -> StateChangedEvent:
        """The change from ``old`` to ``new`` seen from outside (the attribute): the agent's stream if its side
        changed, else the user's."""
        stream: Stream = "self" if old.self_active != new.self_active else "other"
        return cls(old_state=old, new_state=new, stream=stream, created_at=time.time())


class ConversationState(rtc.EventEmitter[Literal["state_changed"]]):
    """The state machine; ``update`` is called with each VAD window of either stream."""

    def __init__(self, settings: VadSettings) -> None:
        super().__init__()
        self._streams: dict[Stream, SpeechHysteresis] = {
            "self": SpeechHysteresis(settings.start_ms, settings.stop_ms),
            "other": SpeechHysteresis(settings.start_ms, settings.stop_ms),
        }
        self.state = AvatarState.IDLE
        self.changes = 0

    def active(self, stream: Stream) -> bool:
        return self._streams[stream].active

    def update(self, stream: Stream, speech: bool, duration_ms: float) -> bool:
        """Report ``duration_ms`` of ``stream`` classified as ``speech``; returns whether that stream is on."""
        active = self._streams[stream].update(speech, duration_ms)
        self._settle(stream)
        return active

    def end(self, stream: Stream) -> None:
        """The stream stopped for certain (the agent was interrupted, the user left): off at once."""
        self._streams[stream].force_off()
        self._settle(stream)

    def _settle(self, stream: Stream) -> None:
        new = AvatarState.of(self._streams["self"].active, self._streams["other"].active)
        if new is self.state:
            return
        event = StateChangedEvent(old_state=self.state, new_state=new, stream=stream, created_at=time.time())
        self.state = new
        self.changes += 1
        logger.info("avatar state changed", extra={"old": event.old_state.value, "new": new.value, "stream": stream})
        self.emit("state_changed", event)


class HeardSpeech:
    """The agent's side of a ``ConversationState``, reported when each tick is heard: the engine's clock takes a tick
    ``delay_s`` (the playout lead) before its audio leaves the audio source, so the state would otherwise show
    speaking that much before the reply is heard. An interruption drops the reports of ticks never heard."""

    def __init__(self, state: ConversationState, *, frame_ms: float, delay_s: float) -> None:
        self._state = state
        self._frame_ms = frame_ms
        self._delay_s = delay_s
        self._due: deque[asyncio.TimerHandle] = deque()

    def tick(self, speech: bool) -> None:
        """A tick of the agent's audio was taken (call on the event loop)."""
        if self._delay_s <= 0:
            self._report(speech)
            return
        self._due.append(asyncio.get_running_loop().call_later(self._delay_s, self._report_due, speech))

    def end(self) -> None:
        """The agent was interrupted: ticks not yet heard are never heard, and the agent is off at once."""
        self.cancel()
        self._state.end("self")

    def cancel(self) -> None:
        while self._due:
            self._due.popleft().cancel()

    def _report_due(self, speech: bool) -> None:
        self._due.popleft()
        self._report(speech)

    def _report(self, speech: bool) -> None:
        self._state.update("self", speech, self._frame_ms)
