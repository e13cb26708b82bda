"""The conversation state machine: hysteresis, combined states, events, logs, the gate, the attribute, real audio."""

from __future__ import annotations

import asyncio
import logging
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from livekit.plugins.dystream import state_attribute
from livekit.plugins.dystream.gate import SpeechGate
from livekit.plugins.dystream.state import AvatarState, ConversationState, HeardSpeech, SpeechHysteresis
from livekit.plugins.dystream.state_attribute import ATTRIBUTE_RUNG, ATTRIBUTE_STATE, StateAttributePublisher
from livekit.plugins.dystream.vad import VadWindow, VoiceActivityDetector, create_vad

from config.settings import VadSettings, get_settings


def read_wav(name: str) -> np.ndarray:
    path = Path(get_settings().samples_dir) / name
    assert path.is_file(), f"sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    with wave.open(str(path)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), np.int16)


async def test_the_agents_speech_is_reported_when_it_is_heard_and_an_interruption_drops_what_was_not() -> None:
    loop = asyncio.get_running_loop()
    state = ConversationState(VadSettings(start_ms=0, stop_ms=0))
    changes: list[tuple[AvatarState, float]] = []
    state.on("state_changed", lambda event: changes.append((event.new_state, loop.time())))
    speech = HeardSpeech(state, frame_ms=40.0, delay_s=0.08)

    taken = loop.time()
    speech.tick(True)
    assert state.state is AvatarState.IDLE  # taken, not heard yet
    heard = loop.create_future()
    state.once("state_changed", lambda _: heard.set_result(None))
    await heard
    assert changes[0][0] is AvatarState.SPEAKING and changes[0][1] - taken >= 0.08

    speech.tick(True)
    speech.tick(False)  # would end the speech when heard, but the interruption comes first
    speech.end()
    assert state.state is AvatarState.IDLE
    later = loop.create_future()
    loop.call_later(0.16, later.set_result, None)  # after every report the ticks above had due
    await later
    assert [new for new, _ in changes] == [AvatarState.SPEAKING, AvatarState.IDLE]


def test_hysteresis_needs_start_ms_of_speech_and_stop_ms_of_silence() -> None:
    h = SpeechHysteresis(start_ms=60, stop_ms=400)
    assert not h.update(True, 40)
    assert not h.update(False, 20)  # a blip does not count, and restarts the run
    assert not h.update(True, 40)
    assert h.update(True, 20)  # 60 ms of continuous speech
    for _ in range(9):
        assert h.update(False, 40)  # 360 ms of silence: still speaking (a pause inside an utterance)
    assert h.update(True, 20)  # speech again: the silence run restarts
    for _ in range(9):
        assert h.update(False, 40)
    assert not h.update(False, 40)  # 400 ms of silence: off


def test_zero_hysteresis_follows_each_window() -> None:
    h = SpeechHysteresis(0, 0)
    assert [h.update(s, 20) for s in (True, False, True)] == [True, False, True]


def test_combined_states_events_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    state = ConversationState(VadSettings(start_ms=0, stop_ms=0))
    events = []
    state.on("state_changed", events.append)
    caplog.set_level(logging.INFO, logger="livekit.plugins.dystream")
    state.update("other", True, 20)
    state.update("other", True, 20)  # no change: no event, no log
    state.update("self", True, 20)
    state.update("other", False, 20)
    state.end("self")
    assert [(e.old_state, e.new_state, e.stream) for e in events] == [
        (AvatarState.IDLE, AvatarState.LISTENING, "other"),
        (AvatarState.LISTENING, AvatarState.BOTH, "self"),
        (AvatarState.BOTH, AvatarState.SPEAKING, "other"),
        (AvatarState.SPEAKING, AvatarState.IDLE, "self"),
    ]
    changes = [record for record in caplog.records if record.getMessage() == "avatar state changed"]
    assert all(record.name == "livekit.plugins.dystream" for record in changes)
    assert [(c.old, c.new) for c in changes] == [(e.old_state.value, e.new_state.value) for e in events]
    assert state.changes == 4


def test_bad_hysteresis_names_the_setting() -> None:
    with pytest.raises(ValueError, match="DYSTREAM_VAD__START_MS"):
        SpeechHysteresis(-1, 10)


def energy_truth(audio: np.ndarray, settings: VadSettings, window: int = 320) -> np.ndarray:
    """Ground truth from energy alone: a window is speech above -40 dBFS, smoothed by the same hysteresis."""
    frames = audio[: len(audio) // window * window].reshape(-1, window).astype(np.float64) / 32768.0
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    h = SpeechHysteresis(settings.start_ms, settings.stop_ms)
    return np.array([h.update(bool(d > -40.0), window / 16) for d in db])


@pytest.mark.parametrize("backend", ["silero", "webrtc"])
def test_listening_follows_the_user_on_the_dyadic_sample(backend: str) -> None:
    settings = VadSettings(backend=backend)
    user, agent = read_wav("dyadic_other.wav"), read_wav("dyadic_self.wav")
    state = ConversationState(settings)
    timeline: list[tuple[float, AvatarState]] = []
    state.on("state_changed", lambda e: timeline.append((clock[0], e.new_state)))
    other = SpeechGate(create_vad(settings), lambda s, ms: state.update("other", s, ms), gate=False)
    self_ = SpeechGate(create_vad(settings), lambda s, ms: state.update("self", s, ms), gate=False)
    clock = [0.0]
    listening = []
    for start in range(0, len(user) - 320 + 1, 320):  # 20 ms at a time, both streams together, like live audio
        clock[0] = (start + 320) / 16000
        other.push(user[start : start + 320])
        self_.push(agent[start : start + 320])
        listening.append(state.active("other"))
    truth = energy_truth(user, settings)[: len(listening)]
    agreement = float((np.array(listening) == truth).mean())
    assert agreement > 0.93, agreement
    # the user talks first, then the agent: listening, then speaking, ending with speaking only
    states = [s for _, s in timeline]
    assert states[0] is AvatarState.LISTENING
    assert AvatarState.SPEAKING in states
    assert states[-1] is AvatarState.SPEAKING
    listening_on = next(t for t, s in timeline if s is AvatarState.LISTENING)
    truth_on = (np.argmax(truth) + 1) * 0.02
    assert abs(listening_on - truth_on) < 0.15, (listening_on, truth_on)  # silero needs ~3 windows of context


def test_gate_zeroes_outside_speech_and_passes_speech_untouched() -> None:
    settings = VadSettings(backend="webrtc")
    user = read_wav("dyadic_other.wav")
    state = ConversationState(settings)
    out: list[np.ndarray] = []
    gate = SpeechGate(create_vad(settings), lambda s, ms: state.update("other", s, ms), gate=True)
    for start in range(0, len(user), 160):
        out += gate.push(user[start : start + 160])
    out += gate.flush()
    passed = np.concatenate(out)
    assert len(passed) == len(user)
    speech = slice(int(0.3 * 16000), int(2.0 * 16000))
    assert np.mean(passed[speech] == user[speech]) > 0.95
    # in the silence after the user stopped (file noise or not), the model gets exact zeros
    assert not passed[int(3.0 * 16000) :].any()
    assert gate.gated_windows > 0


class ThreadRecordingVad:
    """Delegates to ``vad``, recording the threads of the calls that ran its model (those that classified a window)."""

    def __init__(self, vad: VoiceActivityDetector) -> None:
        self.vad = vad
        self.threads: set[int] = set()

    def _classified(self, windows: list[VadWindow]) -> list[VadWindow]:
        if windows:
            self.threads.add(threading.get_ident())
        return windows

    def push(self, pcm: np.ndarray) -> list[VadWindow]:
        return self._classified(self.vad.push(pcm))

    def completes_window(self, samples: int) -> bool:
        return self.vad.completes_window(samples)

    def flush(self) -> list[VadWindow]:
        return self._classified(self.vad.flush())

    def reset(self) -> None:
        self.vad.reset()


def test_gate_on_a_vad_thread_hands_on_the_same_audio_and_reports_in_order() -> None:
    settings = VadSettings(backend="silero")
    user = read_wav("dyadic_other.wav")[: 3 * 16000]
    on_loop: list[bool] = []
    reference = SpeechGate(create_vad(settings), lambda s, ms: on_loop.append(s) or s, gate=True)
    expected = [c for start in range(0, len(user), 160) for c in reference.push(user[start : start + 160])]
    threaded: list[bool] = []
    vad = ThreadRecordingVad(create_vad(settings))
    gate = SpeechGate(vad, lambda s, ms: threaded.append(s) or s, gate=True)
    loop_thread = threading.get_ident()

    async def run() -> list[np.ndarray]:
        with ThreadPoolExecutor(max_workers=1) as vad_thread:
            return [
                c
                for start in range(0, len(user), 160)
                for c in await gate.push_on(vad_thread, user[start : start + 160])
            ]

    got = asyncio.run(run())
    assert threaded == on_loop and any(threaded)
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(expected))
    assert vad.threads and loop_thread not in vad.threads  # the model ran off the loop only


def test_gate_off_passes_everything() -> None:
    settings = VadSettings(backend="webrtc")
    noise = (np.random.default_rng(0).normal(0, 200, 16000)).astype(np.int16)
    gate = SpeechGate(create_vad(settings), lambda s, ms: False, gate=False)
    out = gate.push(noise) + gate.flush()
    np.testing.assert_array_equal(np.concatenate(out), noise)


class HeldParticipant:
    """Each write starts at once and is held until the test lets it finish."""

    def __init__(self) -> None:
        self.writes: list[dict[str, str]] = []
        self.in_flight = asyncio.Event()
        self.release = asyncio.Event()

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.writes.append(dict(attributes))
        self.in_flight.set()
        await self.release.wait()


async def test_state_attribute_is_published_and_coalesced() -> None:
    state = ConversationState(VadSettings(start_ms=0, stop_ms=0))
    participant = HeldParticipant()
    publisher = StateAttributePublisher(state, participant)
    await participant.in_flight.wait()
    assert participant.writes == [{ATTRIBUTE_STATE: "idle"}]
    for _ in range(10):  # a burst of changes while that write is in flight
        state.update("other", True, 20)
        state.update("other", False, 20)
    state.update("self", True, 20)
    participant.release.set()
    await publisher.aclose()  # waits for the writes in progress
    # idle, then only the newest state: not one write per change
    assert participant.writes == [{ATTRIBUTE_STATE: "idle"}, {ATTRIBUTE_STATE: "speaking"}]


async def test_the_quality_rung_is_published_with_the_state() -> None:
    state = ConversationState(VadSettings(start_ms=0, stop_ms=0))
    participant = HeldParticipant()
    publisher = StateAttributePublisher(state, participant)
    await participant.in_flight.wait()
    publisher.set_rung("full")
    publisher.set_rung("half-motion")  # while the first write is in flight: only the newest rung is written
    state.update("other", True, 20)
    participant.release.set()
    await publisher.aclose()
    assert participant.writes == [
        {ATTRIBUTE_STATE: "idle"},
        {ATTRIBUTE_STATE: "listening", ATTRIBUTE_RUNG: "half-motion"},
    ]


class NotYetConnected:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attributes: dict[str, str] = {}

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("room is not connected")
        self.attributes.update(attributes)


async def test_state_attribute_is_retried_until_the_room_connects(monkeypatch) -> None:
    monkeypatch.setattr(state_attribute, "RETRY_S", 0.0)
    state = ConversationState(VadSettings(start_ms=0, stop_ms=0))
    participant = NotYetConnected(failures=3)
    publisher = StateAttributePublisher(state, participant)
    state.update("other", True, 20)
    await publisher.aclose()  # waits for the retries in progress
    assert participant.failures == 0
    assert participant.attributes == {ATTRIBUTE_STATE: "listening"}


class LosesTheFirstWrite:
    """The server never acknowledges the first write; later ones are applied."""

    def __init__(self) -> None:
        self.attributes: dict[str, str] = {}
        self.calls = 0
        self.applied = asyncio.Event()

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.calls += 1
        if self.calls == 1:
            await asyncio.Event().wait()  # never answered
        self.attributes.update(attributes)
        self.applied.set()


async def test_a_write_the_server_never_acknowledges_does_not_freeze_the_state(monkeypatch) -> None:
    monkeypatch.setattr(state_attribute, "WRITE_TIMEOUT_S", 0.01)
    state = ConversationState(VadSettings(start_ms=0, stop_ms=0))
    participant = LosesTheFirstWrite()
    publisher = StateAttributePublisher(state, participant)
    state.update("other", True, 20)  # while the lost write of "idle" hangs
    await participant.applied.wait()
    await publisher.aclose()
    assert participant.calls == 2
    assert participant.attributes == {ATTRIBUTE_STATE: "listening"}
