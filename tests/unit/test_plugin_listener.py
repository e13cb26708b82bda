"""The user's ("other") stream: whom the avatar listens to, following them out and back, gating, state."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.plugins.dystream.listener import UserListener
from livekit.plugins.dystream.state import AvatarState, ConversationState, StateChangedEvent
from livekit.plugins.dystream.testing import FakeRoom, next_event

from config.settings import VadSettings, get_settings


def read_wav(name: str) -> np.ndarray:
    path = Path(get_settings().samples_dir) / name
    assert path.is_file(), f"sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    with wave.open(str(path)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), np.int16)


class FileMicrophone:
    """A participant's microphone playing a file in 10 ms frames (paced), then staying open and silent."""

    def __init__(self, audio: np.ndarray, sample_rate: int = 16000, speedup: float = 4.0) -> None:
        self._audio = audio
        self._rate = sample_rate
        self._speedup = speedup
        self.closed = False

    def __aiter__(self):
        return self._frames()

    async def _frames(self):
        step = self._rate // 100
        for start in range(0, len(self._audio) - step + 1, step):
            chunk = self._audio[start : start + step]
            yield rtc.AudioFrameEvent(frame=rtc.AudioFrame(chunk.tobytes(), self._rate, 1, step))
            await asyncio.sleep(0.01 / self._speedup)
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


def test_pick_skips_the_agent_its_avatar_and_other_agents() -> None:
    room = FakeRoom(local_identity="agent")
    listener = UserListener(room, feed=lambda pcm: None, vad=VadSettings(backend="webrtc"))
    room.join("other-agent", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    room.join("avatar", **{ATTRIBUTE_PUBLISH_ON_BEHALF: "agent"})
    assert listener.pick() is None
    room.join("alice")
    room.join("bob")
    assert listener.pick().identity == "alice"
    linked = UserListener(room, feed=lambda pcm: None, vad=VadSettings(backend="webrtc"), linked_identity=lambda: "bob")
    assert linked.pick().identity == "bob"
    gone = UserListener(room, feed=lambda pcm: None, vad=VadSettings(backend="webrtc"), linked_identity=lambda: "carl")
    assert gone.pick() is None  # the linked user is not in the room: no one, not another user the agent does not hear
    vad = VadSettings(backend="webrtc")
    unlinked = UserListener(room, feed=lambda pcm: None, vad=vad, linked_identity=lambda: None)
    assert unlinked.pick() is None  # the session has linked no one yet


def user_speaks(event: StateChangedEvent) -> bool:
    return event.new_state in (AvatarState.LISTENING, AvatarState.BOTH)


async def test_follows_the_user_out_and_back_and_gates_their_silence() -> None:
    user_audio = read_wav("dyadic_other.wav")[: 16000 * 3]  # 2.2 s of speech, then digital silence
    settings = VadSettings(backend="webrtc", gate_other=True)
    state = ConversationState(settings)
    room = FakeRoom(local_identity="agent")
    fed: list[np.ndarray] = []
    all_fed = asyncio.Event()
    opened: list[tuple[str, FileMicrophone]] = []

    def feed(pcm: np.ndarray) -> None:
        fed.append(pcm)
        if sum(map(len, fed)) >= len(user_audio) - 320:
            all_fed.set()

    def open_stream(participant):
        mic = FileMicrophone(user_audio)
        opened.append((participant.identity, mic))
        return mic

    listener = UserListener(room, feed=feed, state=state, vad=settings, open_stream=open_stream)
    listener.start()
    assert listener.pick() is None  # nobody to listen to: nothing is opened, nothing pushed (the engine hears silence)

    followed, speaking = next_event(listener, "user_changed"), next_event(state, "state_changed", user_speaks)
    room.join("alice")
    assert await followed == "alice" and listener.user_identity == "alice"
    await speaking
    await asyncio.wait_for(all_fed.wait(), 5.0)
    assert [identity for identity, _ in opened] == ["alice"]  # no one before her
    heard = np.concatenate(fed)
    assert np.mean(heard[8000:32000] == user_audio[8000:32000]) > 0.95  # speech passes untouched
    assert not heard[40000:].any()  # silence is exact zeros
    if state.active("other"):  # the user stopped talking: the state follows once the hysteresis lets go
        await next_event(state, "state_changed", lambda event: not user_speaks(event))

    left = next_event(listener, "user_changed")
    room.leave("alice")
    assert await left is None and listener.user_identity is None
    assert opened[0][1].closed

    followed, speaking = next_event(listener, "user_changed"), next_event(state, "state_changed", user_speaks)
    room.join("alice")  # back again: a new stream
    assert await followed == "alice"
    assert [identity for identity, _ in opened] == ["alice", "alice"]
    await speaking
    await listener.aclose()
    assert opened[1][1].closed
    assert not state.active("other")


async def test_switches_to_the_linked_user() -> None:
    room = FakeRoom(local_identity="agent")
    linked: list[str | None] = [None]
    opened: list[str] = []

    def open_stream(participant):
        opened.append(participant.identity)
        return FileMicrophone(np.zeros(1600, np.int16))

    room.join("alice")
    room.join("bob")
    listener = UserListener(
        room,
        feed=lambda pcm: None,
        vad=VadSettings(backend="webrtc"),
        linked_identity=lambda: linked[0],
        open_stream=open_stream,
    )
    listener.start()
    assert listener.pick() is None  # the session has linked no one yet: not alice, not bob
    followed = next_event(listener, "user_changed")
    linked[0] = "bob"  # the agent session linked bob later: picked up by the periodic check
    assert await followed == "bob"
    assert opened == ["bob"] and listener.user_identity == "bob"  # and no one before him
    left = next_event(listener, "user_changed")
    room.leave("bob")  # bob drops: the agent hears no one, nor does the avatar (alice is still there)
    assert await left is None and listener.user_identity is None
    followed = next_event(listener, "user_changed")
    room.join("bob")  # bob is back: followed again
    assert await followed == "bob"
    assert opened == ["bob", "bob"]
    await listener.aclose()
