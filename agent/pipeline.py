"""The voice pipeline, chosen from ``settings.agent``.

- With speech services configured (``stt``, ``llm`` and ``tts`` as ``provider/model``: LiveKit Inference, or
  livekit's provider plugins, an OpenAI-compatible server among them; ``agent/speech_services.py``), a regular
  livekit-agents pipeline that greets with ``greeting_text``.
- Without any, an offline pipeline that needs no API key: it greets with ``greeting_audio`` (if set), listens (silero
  VAD on the user's microphone; the avatar reacts to the user's voice all along), and answers each user turn with the
  next clip of ``reply_clips``. With no clips configured it only listens.

Either way interruptions are on (the user's voice stops the agent) and false-interruption resume is off: an avatar
cannot pause its audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.events import UserStateChangedEvent
from livekit.agents.voice.room_io import RoomOptions, TextOutputOptions

from agent import speech_services
from agent.errors import UserError
from config.log import get_logger
from config.settings import AgentSettings

log = get_logger(__name__)

CLIP_SAMPLE_RATE = 16000
CLIP_CHUNK = CLIP_SAMPLE_RATE // 50  # 20 ms frames into the agent's audio output


def uses_speech_services(settings: AgentSettings) -> bool:
    return bool(speech_services.configured(settings))


def check_settings(settings: AgentSettings) -> None:
    """Refuse a half-configured pipeline or missing clip files, naming the setting to fix."""
    configured = speech_services.configured(settings)
    if configured and len(configured) != len(speech_services.KINDS):
        missing = ", ".join(f"DYSTREAM_AGENT__{k.upper()}" for k in speech_services.KINDS if k not in configured)
        raise UserError(f"speech services are half configured: set {missing} too, or none of them (offline mode)")
    clips = [("DYSTREAM_AGENT__GREETING_AUDIO", settings.greeting_audio)]
    clips += [("DYSTREAM_AGENT__REPLY_CLIPS", clip) for clip in settings.reply_clips]
    for variable, path in clips:
        if path is not None and not Path(path).is_file():
            raise UserError(f"audio file {path} does not exist: fix {variable}")
    speech_services.check(settings)


def turn_handling() -> dict:
    """Interruptions on; no resume after a false interruption (avatars cannot pause their audio)."""
    return {"interruption": {"enabled": True, "resume_false_interruption": False}}


def build_session(settings: AgentSettings, *, vad) -> AgentSession:
    """An ``AgentSession`` for the configured services, or the offline one (VAD only)."""
    check_settings(settings)
    if uses_speech_services(settings):
        return AgentSession(**speech_services.build(settings), vad=vad, turn_handling=turn_handling())
    return AgentSession(vad=vad, turn_handling={**turn_handling(), "turn_detection": "vad"})


def room_options(settings: AgentSettings) -> RoomOptions:
    """Stay when the user leaves (the session follows them when they come back). Offline there is no text to keep in
    step with the audio, so the transcript synchronizer, which analyses the agent's audio on the event loop the
    in-process avatar shares, is off."""
    if uses_speech_services(settings):
        return RoomOptions(close_on_disconnect=False)
    return RoomOptions(close_on_disconnect=False, text_output=TextOutputOptions(sync_transcription=False))


def build_agent(settings: AgentSettings) -> Agent:
    return Agent(instructions=settings.instructions)


def load_clip(path: Path) -> np.ndarray:
    """An audio file as 16 kHz mono int16 (any format PyAV reads)."""
    from avatar.media.codec import load_audio

    audio = load_audio(Path(path), sample_rate=CLIP_SAMPLE_RATE)
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


@dataclass(frozen=True)
class Clips:
    """The offline pipeline's audio, decoded once: the greeting (if any) and the replies, 16 kHz mono int16."""

    greeting: np.ndarray | None
    replies: list[np.ndarray]


def load_clips(settings: AgentSettings) -> Clips:
    greeting = load_clip(settings.greeting_audio) if settings.greeting_audio else None
    return Clips(greeting=greeting, replies=[load_clip(path) for path in settings.reply_clips])


async def clip_frames(pcm: np.ndarray) -> AsyncIterator[rtc.AudioFrame]:
    """``pcm`` as 20 ms frames, the way a TTS stream hands audio to the agent."""
    for start in range(0, len(pcm), CLIP_CHUNK):
        chunk = pcm[start : start + CLIP_CHUNK]
        yield rtc.AudioFrame(chunk.tobytes(), CLIP_SAMPLE_RATE, 1, len(chunk))


def say_clip(session: AgentSession, pcm: np.ndarray):
    """Speak a prerecorded clip (no text, not added to the chat history)."""
    return session.say("", audio=clip_frames(pcm), allow_interruptions=True, add_to_chat_ctx=False)


def greet(session: AgentSession, settings: AgentSettings, greeting: np.ndarray | None) -> None:
    if uses_speech_services(settings):
        session.say(settings.greeting_text, allow_interruptions=True)
    elif greeting is not None:
        say_clip(session, greeting)
    else:
        log.info("no greeting: set DYSTREAM_AGENT__GREETING_AUDIO for an offline greeting")


class OfflineReplies:
    """Answers each user turn with the next clip, ``delay_s`` after the user stops speaking.

    The turn ends on the VAD's end of speech (the session's user state going back to "listening"); speaking again
    within ``delay_s`` cancels the answer. If the agent is still talking (the user's voice was too short to interrupt
    it), nothing is added. The session's event handler keeps this object alive as long as the session.
    """

    def __init__(self, session: AgentSession, clips: Sequence[np.ndarray], *, delay_s: float) -> None:
        self._session = session
        self._clips = list(clips)
        self._delay_s = delay_s
        self._next = 0
        self._pending: asyncio.TimerHandle | None = None
        if not self._clips:
            log.warning("no reply clips configured (DYSTREAM_AGENT__REPLY_CLIPS): the agent will only listen")
        session.on("user_state_changed", self._on_user_state)

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if ev.old_state == "speaking" and ev.new_state == "listening" and self._clips:
            self._pending = asyncio.get_running_loop().call_later(self._delay_s, self._reply)

    def _reply(self) -> None:
        self._pending = None
        if self._session.agent_state == "speaking":
            return
        clip = self._clips[self._next % len(self._clips)]
        self._next += 1
        log.info("offline reply", clip=self._next, seconds=round(len(clip) / CLIP_SAMPLE_RATE, 2))
        say_clip(self._session, clip)
