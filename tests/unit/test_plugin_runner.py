"""The generator inside DyStreamRunner and livekit's QueueAudioOutput, on a duck-typed room:
every segment gets exactly one playback_finished, whether it plays out or is interrupted, 100 times in a row; and
DyStreamRunner's own accounting of audio queued across an interruption."""

from __future__ import annotations

import asyncio
import logging
import random
import wave
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, QueueAudioOutput, VideoGenerator
from livekit.plugins.dystream.generator import DyStreamVideoGenerator, TickAudio, TickVideo
from livekit.plugins.dystream.metrics import MetricsRecorder
from livekit.plugins.dystream.runner import DyStreamRunner
from livekit.plugins.dystream.testing import FakeRoom, tiny_engine

from config.settings import ModelSettings, StreamSettings, get_settings


def read_wav(name: str) -> np.ndarray:
    path = Path(get_settings().samples_dir) / name
    assert path.is_file(), f"sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    with wave.open(str(path)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), np.int16)


class Agent:
    """The agent's side of QueueAudioOutput, as AgentSession drives it (generation.py)."""

    def __init__(self, audio: QueueAudioOutput, speech: np.ndarray) -> None:
        self.audio = audio
        self.speech = speech
        self.finished: list[tuple[float, bool]] = []
        self.started = 0
        audio.on("playback_finished", lambda ev: self.finished.append((ev.playback_position, ev.interrupted)))
        audio.on("playback_started", lambda ev: setattr(self, "started", self.started + 1))

    async def say(self, seconds: float, offset: float = 0.0) -> None:
        """Capture a TTS segment (20 ms frames, faster than real time) and flush it."""
        start = int(offset * 16000) % (len(self.speech) - int(seconds * 16000))
        chunk = self.speech[start : start + int(seconds * 16000)]
        for i in range(0, len(chunk), 320):
            part = chunk[i : i + 320]
            await self.audio.capture_frame(rtc.AudioFrame(part.tobytes(), 16000, 1, len(part)))
        self.audio.flush()

    def interrupt(self) -> None:
        self.audio.clear_buffer()

    async def wait_for_playout(self, timeout: float = 3.0):
        return await asyncio.wait_for(self.audio.wait_for_playout(), timeout)


@pytest.fixture
async def avatar():
    room = FakeRoom()
    engine = tiny_engine(StreamSettings(left_context_ms=400), ModelSettings(steps=1))  # light: keeps real time
    audio = QueueAudioOutput(sample_rate=16000, wait_playback_start=True)
    generator = DyStreamVideoGenerator(engine)
    options = AvatarOptions(video_width=128, video_height=128, video_fps=25, audio_sample_rate=16000, audio_channels=1)
    runner = DyStreamRunner(room, audio_recv=audio, video_gen=generator, options=options)
    generator.attach_audio_source(runner.audio_source)
    await engine.start()
    await runner.start()
    speech = read_wav("dyadic_self.wav")[int(2.3 * 16000) :]
    yield room, Agent(audio, speech)
    await generator.aclose()
    await runner.aclose()
    await engine.aclose()


async def test_segments_that_play_out_are_finished_once_with_their_length(avatar) -> None:
    room, agent = avatar
    for seconds in (0.5, 0.3, 0.8):
        await agent.say(seconds)
        event = await agent.wait_for_playout(timeout=5.0)
        assert not event.interrupted
        assert abs(event.playback_position - seconds) <= 0.04 + 1e-6  # whole frames: padded to 40 ms
    assert [interrupted for _, interrupted in agent.finished] == [False, False, False]
    assert agent.started == 3
    published = [(p.name, p.source) for p in room.local_participant.published]
    assert published == [
        ("avatar_audio", rtc.TrackSource.SOURCE_MICROPHONE),
        ("avatar_video", rtc.TrackSource.SOURCE_CAMERA),
    ]


@pytest.mark.slow
async def test_100_interruptions_never_leave_a_segment_unfinished(avatar, caplog) -> None:
    _, agent = avatar
    rng = random.Random(5)
    caplog.set_level(logging.WARNING, logger="livekit.agents")
    segments = 0
    for i in range(100):
        await agent.say(rng.choice((0.2, 0.5, 1.0)), offset=i * 0.37)
        segments += 1
        # interrupt before playback starts, early, mid-segment, or after it ended
        await asyncio.sleep(rng.choice((0.0, 0.01, 0.06, 0.15, 0.3)))
        agent.interrupt()
        await agent.wait_for_playout()  # a missing playback_finished would hang here
        assert len(agent.finished) == segments, f"interruption {i}: {len(agent.finished)} finished of {segments}"
        if rng.random() < 0.2:  # now and then a segment plays out in between
            await agent.say(0.2, offset=i * 0.11)
            segments += 1
            event = await agent.wait_for_playout()
            assert not event.interrupted
    interrupted = sum(flag for _, flag in agent.finished)
    print(f"{segments} segments, {interrupted} finished as interrupted")
    assert len(agent.finished) == segments
    assert interrupted >= 60
    assert "playback_finished called more times" not in caplog.text


class ScriptedGenerator(VideoGenerator):
    """Hands the runner exactly the items the test puts in."""

    def __init__(self) -> None:
        self.items: asyncio.Queue = asyncio.Queue()

    async def push_audio(self, frame) -> None:
        return None

    def clear_buffer(self) -> None:
        return None

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.items.get()


async def test_audio_queued_across_an_interruption_does_not_start_a_new_playback() -> None:
    """The agent interrupts while the runner is queueing a frame of its speech: that frame belongs to the dropped
    segment. It once opened a phantom playback (a second playback_started) whose position leaked into the next one."""
    options = AvatarOptions(video_width=64, video_height=64, video_fps=25, audio_sample_rate=16000, audio_channels=1)
    audio = QueueAudioOutput(sample_rate=16000, wait_playback_start=True)
    generator = ScriptedGenerator()
    runner = DyStreamRunner(FakeRoom(), audio_recv=audio, video_gen=generator, options=options)
    agent = Agent(audio, np.zeros(16000, np.int16))
    await runner.start()
    video = rtc.VideoFrame(64, 64, rtc.VideoBufferType.RGB24, bytes(64 * 64 * 3))
    speech = rtc.AudioFrame(bytes(1280), 16000, 1, 640)

    waiting, gate, captured = asyncio.Event(), asyncio.Event(), asyncio.Event()
    capture = runner.audio_source.capture_frame

    async def slow_capture(frame: rtc.AudioFrame) -> float:
        if frame is speech and not gate.is_set():
            waiting.set()
            await gate.wait()
            position = await capture(frame)
            captured.set()
            return position
        return await capture(frame)

    runner.audio_source.capture_frame = slow_capture  # type: ignore[method-assign]
    await agent.say(0.04)  # the receiver side: a segment is playing
    for item in (TickAudio(0, speech), TickVideo(0, video, "full")):
        generator.items.put_nowait(item)
    await waiting.wait()  # the runner waits in capture_frame with the first frame of speech
    agent.interrupt()
    event = await agent.wait_for_playout()
    assert event.interrupted
    gate.set()
    await captured.wait()
    assert agent.started == 0, "the interrupted frame opened a playback"

    await agent.say(0.04)  # the next reply plays out: one start, its own position
    for item in (TickAudio(1, speech), TickVideo(1, video, "full"), AudioSegmentEnd()):
        generator.items.put_nowait(item)
    event = await agent.wait_for_playout()
    assert (agent.started, event.interrupted, round(event.playback_position, 3)) == (1, False, 0.04)
    await runner.aclose()


class SlotWatchingMetrics(MetricsRecorder):
    """The recorder, waking ``until_video`` at every video slot the runner reports."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.slot = asyncio.Event()

    def on_video_slot(self, *, shown: int, repeated: int, dropped: int) -> None:
        super().on_video_slot(shown=shown, repeated=repeated, dropped=dropped)
        self.slot.set()

    async def until_video(self, reached: Callable[[Mapping[str, float]], bool]) -> None:
        """Returns once the video counts (``summary().video``) satisfy ``reached``, looked at after each slot."""
        while not reached(self.summary().video):
            self.slot.clear()
            await self.slot.wait()


async def test_a_picture_that_comes_after_its_slot_is_dropped_and_counted() -> None:
    """A picture whose audio has already been heard is not shown, and the session metrics count it as dropped."""
    options = AvatarOptions(video_width=64, video_height=64, video_fps=25, audio_sample_rate=16000, audio_channels=1)
    audio = QueueAudioOutput(sample_rate=16000, wait_playback_start=True)
    generator = ScriptedGenerator()
    metrics = SlotWatchingMetrics(fps=25)
    runner = DyStreamRunner(FakeRoom(), audio_recv=audio, video_gen=generator, options=options, metrics=metrics)
    await runner.start()
    video = rtc.VideoFrame(64, 64, rtc.VideoBufferType.RGB24, bytes(64 * 64 * 3))
    for item in (TickAudio(0, None), TickVideo(0, video, "third"), *(TickAudio(k, None) for k in range(1, 8))):
        generator.items.put_nowait(item)
    try:
        async with asyncio.timeout(10.0):  # a deadline for slots that must come, not a pause
            await metrics.until_video(lambda v: v["shown"] >= 1 and v["repeated"] >= 2)  # slots 1, 2 have passed
            generator.items.put_nowait(TickVideo(1, video, "third"))  # tick 1's slot is gone
            generator.items.put_nowait(TickAudio(8, None))
            await metrics.until_video(lambda v: v["dropped"] >= 1)
    except TimeoutError:
        pytest.fail(f"the slots did not come: {metrics.summary().video}")
    assert metrics.summary().video["shown"] == 1
    await runner.aclose()
