"""DyStreamVideoGenerator on the real engine (tiny random model) and real speech: audio ticks at 25 fps, exact audio
per tick, pictures, segment ends, resampling, interruption flush, gating and the speaking state."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd
from livekit.plugins.dystream.generator import DyStreamVideoGenerator, TickAudio, TickVideo
from livekit.plugins.dystream.metrics import MetricsRecorder
from livekit.plugins.dystream.playout import PlayoutSource
from livekit.plugins.dystream.state import AvatarState, ConversationState
from livekit.plugins.dystream.testing import tiny_engine

from avatar.stream.ladder import ladder, rung_index
from config.settings import ModelSettings, StreamSettings, VadSettings, get_settings

FRAME = 640


def read_wav(name: str) -> np.ndarray:
    path = Path(get_settings().samples_dir) / name
    assert path.is_file(), f"sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    with wave.open(str(path)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), np.int16)


def speech(seconds: float, start: float = 2.4) -> np.ndarray:
    """Agent speech from the dyadic sample (it talks from ~2.2 s on)."""
    audio = read_wav("dyadic_self.wav")
    return audio[int(start * 16000) : int((start + seconds) * 16000)].copy()


def frames_of(audio: np.ndarray, rate: int = 16000, ms: int = 20, channels: int = 1) -> list[rtc.AudioFrame]:
    step = rate * ms // 1000
    out = []
    for start in range(0, len(audio), step):
        chunk = audio[start : start + step]
        data = np.repeat(chunk, channels) if channels > 1 else chunk
        out.append(rtc.AudioFrame(data.astype(np.int16).tobytes(), rate, channels, len(chunk)))
    return out


class Recorder:
    """Consumes the generator like DyStreamRunner._forward, recording what comes out and when."""

    def __init__(self, generator: DyStreamVideoGenerator) -> None:
        self.generator = generator
        self.items: list[tuple[float, object]] = []
        self.arrived = asyncio.Event()  # set at each item
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for item in self.generator:
            self.items.append((time.perf_counter(), item))
            self.arrived.set()

    def tick_times(self) -> np.ndarray:
        return np.array([t for t, item in self.items if isinstance(item, TickAudio)])

    def kinds(self) -> str:
        """V: picture, A: a tick of speech, S: an idle tick (silence), E: segment end."""
        return "".join(_kind(i) for _, i in self.items)

    def speech_frames(self) -> list[rtc.AudioFrame]:
        return [i.frame for _, i in self.items if isinstance(i, TickAudio) and i.frame is not None]

    def audio(self) -> np.ndarray:
        chunks = [np.frombuffer(f.data, np.int16) for f in self.speech_frames()]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    async def wait_for(self, condition, timeout: float = 10.0) -> None:
        await until(condition, self.arrived, timeout, lambda: f"got {self.kinds()[-80:]}")

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until(condition, changed: asyncio.Event, timeout: float, describe=lambda: "") -> None:
    """Check ``condition`` each time ``changed`` is set, until it holds; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s; {describe()}") from None


def _kind(item: object) -> str:
    if isinstance(item, TickVideo):
        return "V"
    if isinstance(item, TickAudio):
        return "S" if item.frame is None else "A"
    return "E"


def cadence(times: np.ndarray) -> float:
    """Frames per second from frame arrival times: the slope of a line fit (robust to one early or late frame)."""
    seconds_per_frame = np.polyfit(np.arange(len(times)), times, 1)[0]
    return float(1.0 / seconds_per_frame)


def cadence_hint(engine, fps: float) -> str:
    stats = engine.stats
    return (
        f"{fps:.1f} fps; the engine took {stats.get('total_ms_p50', 0):.0f} ms/frame (p50) with "
        f"{stats['late_ticks']} late ticks: this light engine needs ~20 ms of a free CPU core per frame (CPU busy?)"
    )


def light_engine():
    """The tiny model, sampled in one step with a short audio context: the generator's behaviour is the same, and
    the engine keeps real time on a busy two-core machine."""
    return tiny_engine(StreamSettings(left_context_ms=400), ModelSettings(steps=1))


@pytest.fixture
async def engine():
    stream = light_engine()
    await stream.start()
    yield stream
    await stream.aclose()


async def push_segment(generator: DyStreamVideoGenerator, audio: np.ndarray, **kw) -> None:
    """What DyStreamRunner._read_audio does for one segment."""
    for frame in frames_of(audio, **kw):
        await generator.push_audio(frame)
    await generator.push_audio(AudioSegmentEnd())


async def test_idle_ticks_from_the_start_at_25_fps_with_pictures(engine) -> None:
    rungs: list[str] = []
    generator = DyStreamVideoGenerator(engine, on_rung=rungs.append)
    recorder = Recorder(generator)
    await recorder.wait_for(lambda: recorder.kinds().count("S") >= 51)
    await recorder.stop()
    assert set(recorder.kinds()) == {"S", "V"}  # idle: silence ticks and pictures, nothing counted as playback
    times = recorder.tick_times()[1:51]  # after the first tick
    fps = cadence(times)
    print(f"idle cadence: {fps:.2f} fps, interval p95 {np.percentile(np.diff(times), 95) * 1000:.1f} ms")
    assert 24.0 <= fps <= 26.0, cadence_hint(engine, fps)
    pictures = [i for _, i in recorder.items if isinstance(i, TickVideo)]
    # most ticks the rung renders get a picture (on a busy machine the engine starts on a rung that renders every
    # second or third tick), in order
    every = max(ladder(5)[rung_index(p.rung)].render_every for p in pictures)
    assert len(pictures) >= 0.8 * 50 / every and [p.index for p in pictures] == sorted({p.index for p in pictures})
    video = pictures[0].frame
    assert (video.width, video.height, video.type) == (128, 128, rtc.VideoBufferType.RGB24)
    # the rung is told at the first picture and at every change (the avatar's ``dystream.rung`` attribute)
    changes = [p.rung for i, p in enumerate(pictures) if i == 0 or p.rung != pictures[i - 1].rung]
    assert rungs[: len(changes)] == changes


async def test_each_speaking_tick_carries_exactly_its_40_ms_and_one_segment_end(engine) -> None:
    generator = DyStreamVideoGenerator(engine)
    recorder = Recorder(generator)
    audio = speech(1.6)
    await push_segment(generator, audio)  # returns once the segment end has been handed on
    kinds = recorder.kinds()
    assert kinds.endswith("E") and kinds.count("E") == 1
    await recorder.wait_for(lambda: recorder.kinds().count("S", len(kinds)) >= 5)
    await recorder.stop()
    kinds = recorder.kinds().replace("V", "")
    assert kinds.count("E") == 1
    # the speech ticks are consecutive, the end follows the last one, idle ticks before and after
    assert kinds.strip("S") == "A" * kinds.count("A") + "E"
    for frame in recorder.speech_frames():
        assert (frame.sample_rate, frame.num_channels, frame.samples_per_channel) == (16000, 1, FRAME)
    expected = np.zeros(-(-len(audio) // FRAME) * FRAME, np.int16)
    expected[: len(audio)] = audio
    np.testing.assert_array_equal(recorder.audio(), expected)
    # speech ticks keep the 25 fps cadence
    fps = cadence(recorder.tick_times()[1:])
    print(f"speaking cadence: {fps:.2f} fps")
    assert 24.0 <= fps <= 26.0, cadence_hint(engine, fps)


async def test_consecutive_segments_end_in_order(engine) -> None:
    generator = DyStreamVideoGenerator(engine)
    recorder = Recorder(generator)
    first, second = speech(0.4), speech(0.52, start=4.0)
    await push_segment(generator, first)
    ends_after_first = recorder.kinds().count("E")
    await push_segment(generator, second)
    await recorder.stop()
    assert ends_after_first == 1
    kinds = recorder.kinds()
    assert kinds.count("E") == 2
    first_part = kinds[: kinds.index("E")]
    assert first_part.count("A") == 10 and kinds.count("A") == 10 + 13


async def test_other_rates_and_channels_are_resampled_to_16k_mono(engine) -> None:
    generator = DyStreamVideoGenerator(engine)
    recorder = Recorder(generator)
    t = np.arange(24000 * 0.6) / 24000
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    await push_segment(generator, tone, rate=24000, channels=2)
    await recorder.stop()
    out = recorder.audio()
    assert abs(len(out) - 0.6 * 16000) <= FRAME
    spectrum = np.abs(np.fft.rfft(out[:8000].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) <= 4  # still a 440 Hz tone, now at 16 kHz


async def test_empty_segment_gets_its_end_at_once(engine) -> None:
    generator = DyStreamVideoGenerator(engine)
    recorder = Recorder(generator)
    await asyncio.wait_for(push_segment(generator, np.zeros(0, np.int16)), 1.0)
    await generator.push_audio(rtc.AudioFrame(b"", 16000, 1, 0))
    await asyncio.wait_for(generator.push_audio(AudioSegmentEnd()), 1.0)
    await recorder.stop()
    assert recorder.kinds().count("E") == 1 and "A" not in recorder.kinds()


async def test_clear_buffer_flushes_speech_and_the_audio_queue_within_a_frame(engine) -> None:
    playout = PlayoutSource(16000, 1, lead_s=0.0, frame_s=0.04)
    metrics = MetricsRecorder(fps=25)
    generator = DyStreamVideoGenerator(engine, metrics=metrics)
    generator.attach_audio_source(playout)
    items: list[tuple[float, object]] = []
    arrived = asyncio.Event()

    async def forward() -> None:  # DyStreamRunner._forward's audio, into a real audio source
        async for item in generator:
            items.append((time.perf_counter(), item))
            if isinstance(item, TickAudio) and item.frame is not None:
                await playout.capture_frame(item.frame)
            arrived.set()

    forwarder = asyncio.get_running_loop().create_task(forward())
    pusher = asyncio.get_running_loop().create_task(push_segment(generator, speech(3.0)))
    await until(lambda: sum(_kind(i) == "A" for _, i in items) >= 12, arrived, 10.0)
    assert playout.queued_duration > 0  # speech is queued in the AudioSource
    cleared_at = time.perf_counter()
    await generator.clear_buffer()
    flush_ms = (time.perf_counter() - cleared_at) * 1000
    assert playout.queued_duration == 0
    await asyncio.wait_for(pusher, 1.0)  # the runner's push of the segment end is released

    def pictures_carry_on() -> bool:
        return sum(_kind(i) == "V" for t, i in items if t >= cleared_at) >= 12

    await until(pictures_carry_on, arrived, 10.0, lambda: "the video stopped after the interruption")
    forwarder.cancel()
    await asyncio.gather(forwarder, return_exceptions=True)
    await playout.aclose()
    after = "".join(_kind(item) for t, item in items if t >= cleared_at)
    print(f"interruption flush: {flush_ms:.2f} ms")
    assert flush_ms < 40
    assert "A" not in after and "E" not in after and after.count("S") >= 10  # idle ticks, no segment audio or end
    assert metrics.interruptions == 1


async def test_gate_self_zeroes_non_speech(engine) -> None:
    generator = DyStreamVideoGenerator(engine, vad=VadSettings(backend="silero", gate_self=True))
    recorder = Recorder(generator)
    noise = np.random.default_rng(0).normal(0, 300, 8000).astype(np.int16)
    talk = speech(1.2, start=2.6)
    await push_segment(generator, np.concatenate([noise, talk]))
    await recorder.stop()
    out = recorder.audio()
    assert not out[:6000].any()  # the noise before the speech reached the model (and the listener) as zeros
    assert np.mean(out[8000 + 3200 : 8000 + len(talk)] == talk[3200:]) > 0.9


async def test_speaking_state_follows_the_played_speech_and_ends_on_interruption(engine) -> None:
    state = ConversationState(VadSettings(backend="silero"))
    generator = DyStreamVideoGenerator(engine, state=state, vad=VadSettings(backend="silero"))
    recorder = Recorder(generator)
    played_at_change: list[int] = []
    state.on("state_changed", lambda e: played_at_change.append(recorder.audio().size))
    pusher = asyncio.get_running_loop().create_task(push_segment(generator, speech(3.0, start=2.6)))
    await recorder.wait_for(lambda: state.state is AvatarState.SPEAKING, timeout=5)
    # the whole segment was pushed at once; the state follows what has been played: a few frames in, not before
    assert FRAME <= played_at_change[0] <= 8 * FRAME
    await generator.clear_buffer()
    assert state.state is AvatarState.IDLE
    await asyncio.wait_for(pusher, 1.0)
    await recorder.stop()


async def test_listening_latency_is_measured_on_frames_that_hear_the_user(engine) -> None:
    frames: list = []
    generator = DyStreamVideoGenerator(engine, metrics=MetricsRecorder(fps=25, emit=frames.append))
    recorder = Recorder(generator)
    user = read_wav("dyadic_other.wav")[: 16000 * 2]
    for start in range(0, len(user), 320):  # the user's microphone, live: 20 ms every 20 ms
        engine.push_other(user[start : start + 320])
        await asyncio.sleep(0.02)
    await recorder.stop()
    latencies = [f.listening_latency_ms for f in frames if hasattr(f, "listening_latency_ms")]
    heard = [ms for ms in latencies if ms is not None]
    assert len(heard) >= 10  # of 50 ticks: on a busy machine the ladder renders every second or third tick
    p50 = float(np.median(heard))
    print(f"listening latency (engine + handoff + sync queue): p50 {p50:.0f} ms")
    lookahead = engine.settings.lookahead_other_ms
    assert lookahead <= p50 <= lookahead + 4 * 40  # lookahead + at most a few frames of compute and jitter
