"""The real-time engine (``AvatarStream``) with small random models on the CPU: pacing, segments, interruption,
the user's jitter buffer, and an event loop that stays free while frames render.

These tests check the engine, not the model's speed, so they run a renderer even smaller than
``RendererConfig.tiny()`` (64×64; a few ms a frame) and one torch thread: the real-time assertions then hold on a
busy 2-core machine. ``python -m bench.stream`` measures the tiny configuration itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from avatar.checkpoints import random_motion_generator
from avatar.config import MotionConfig
from avatar.motion import MotionGenerator
from avatar.renderer import Renderer, RendererConfig, random_renderer
from avatar.stream import AvatarStream, StreamFrame
from config.settings import ModelSettings, StreamSettings

pytestmark = pytest.mark.timeout(60)
MICRO_RENDERER = RendererConfig(
    image_size=64,
    block_expansion=8,
    max_features=64,
    reshape_channel=4,
    reshape_depth=16,
    num_resblocks=2,
    motion_channels=(16, 16, 32, 32, 32),
    motion_space=16,
    volume_channels=(32, 16, 8, 4),
    volume_start_size=1,
    volume_start_depth=4,
    volume_upsample=((2, 2, 2), (2, 2, 2), (1, 2, 2)),
    group_norm_channel=4,
    seg_channels=16,
    spade_hidden=8,
    decoder_channels=(16, 8, 8),
    num_middle_blocks=2,
)
FPS = 25
PERIOD = 1 / FPS


@dataclass
class Portrait:
    m0: torch.Tensor
    f_app: torch.Tensor


@pytest.fixture(scope="module")
def models() -> tuple[MotionGenerator, Renderer, Portrait]:
    motion = random_motion_generator(MotionConfig.tiny(), seed=0)
    renderer = random_renderer(MICRO_RENDERER, seed=0)
    image = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    m0, f_app = renderer.encode_portrait(image)
    return motion, renderer, Portrait(m0, f_app)


def _engine(models: tuple[MotionGenerator, Renderer, Portrait], **stream: object) -> AvatarStream:
    motion, renderer, portrait = models
    settings = StreamSettings(**{"torch_threads": 1, **stream})
    return AvatarStream(motion, renderer, portrait, stream=settings, model=ModelSettings(), noise_seed=0)


def _speech(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-12000, 12000, n, dtype=np.int16) | 1


async def _take(stream: AvatarStream, n: int) -> list[StreamFrame]:
    frames = []
    async for frame in stream:
        frames.append(frame)
        if len(frames) == n:
            break
    return frames


async def test_frames_are_paced_at_25_fps_from_the_start(models) -> None:
    stream = _engine(models)
    await stream.start()
    started = time.perf_counter()
    try:
        frames = await _take(stream, 80)  # 3.2 s, all idle: nothing waits for speech
    finally:
        await stream.aclose()
    assert [f.index for f in frames] == list(range(80))
    assert frames[0].created_at - started < 0.2  # warmed up in start(): the first frame is at once
    created = np.array([f.created_at for f in frames])
    rate = (len(created) - 11) / (created[-1] - created[10])
    assert rate == pytest.approx(FPS, rel=0.03)
    # never ahead of the clock: frame k no earlier than its slot minus the run-ahead (one frame)
    assert np.all(created[10:] - created[10] >= (np.arange(10, 80) - 10) * PERIOD - PERIOD - 0.005)
    assert all(f.rgb.shape == (64, 64, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert all(not f.speaking and f.segment_id is None and not f.audio.any() for f in frames)
    assert set(frames[-1].timings_ms) == {"audio", "transformer", "head", "render", "total"}


async def test_segment_audio_leaves_with_the_frames_640_samples_each(models) -> None:
    stream = _engine(models)
    pcm = _speech(16000 // 2 + 123)
    await stream.start()
    try:
        segment = stream.push_self(pcm[:3000])
        assert stream.push_self(pcm[3000:]) == segment
        stream.end_self_segment()
        frames = []
        async for frame in stream:
            frames.append(frame)
            if frame.segment_end or len(frames) > 60:
                break
    finally:
        await stream.aclose()
    assert all(f.audio.shape == (640,) and f.audio.dtype == np.int16 for f in frames)
    speaking = [f for f in frames if f.speaking]
    assert len(speaking) == 13 and all(f.segment_id == segment for f in speaking)
    assert frames[-1] is speaking[-1] and frames[-1].segment_end
    assert sum(f.segment_end for f in frames) == 1
    played = np.concatenate([f.audio for f in speaking])
    np.testing.assert_array_equal(played, np.pad(pcm, (0, 13 * 640 - pcm.size)))
    assert all(not f.audio.any() for f in frames if not f.speaking)


async def test_clear_self_stops_speech_at_once_and_drops_rendered_frames(models) -> None:
    stream = _engine(models, frame_queue=3)
    await stream.start()
    try:
        segment = stream.push_self(_speech(16000 * 5))
        frames = await _take(stream, 1)
        while not frames[-1].speaking:
            frames += await _take(stream, 1)
        await asyncio.sleep(5 * PERIOD)  # consumer stalls: the output queue fills with speaking frames
        assert stream.stats["frames_waiting"] >= 2
        assert stream.clear_self() == segment
        assert stream.stats["self_queued_s"] == 0
        cleared_at = time.perf_counter()
        after = await _take(stream, 10)
    finally:
        await stream.aclose()
    assert not any(f.speaking or f.segment_id == segment for f in after)  # nothing of the segment after clear
    assert after[0].created_at - cleared_at < 2 * PERIOD + 0.03  # the next (silent) frame comes within a tick
    assert stream.stats["frames_dropped"] >= 2
    assert stream.clear_self() is None


async def test_clear_self_also_drops_a_segment_the_worker_already_took_whole(models) -> None:
    stream = _engine(models, frame_queue=3)
    await stream.start()
    try:
        await _take(stream, 2)
        segment = stream.push_self(_speech(2 * 640))
        stream.end_self_segment()
        for _ in range(50):  # the worker takes both frames; they wait, unconsumed, to be rendered or consumed
            await asyncio.sleep(PERIOD)
            if stream.stats["self_queued_s"] == 0:
                break
        assert stream.stats["self_queued_s"] == 0
        assert stream.clear_self() == segment
        after = await _take(stream, 6)
    finally:
        await stream.aclose()
    assert not any(f.speaking or f.segment_id == segment for f in after)
    assert stream.stats["frames_dropped"] == 2


async def test_other_stream_starves_to_zeros_and_bursts_are_bounded(models) -> None:
    stream = _engine(models, lookahead_other_ms=60, max_other_backlog_ms=200)
    await stream.start()
    try:
        idle = await _take(stream, 10)  # the user said nothing: zeros, nothing waits
        assert stream.stats["other_inserted_ms"] >= 10 * 40
        assert all(f.other_span[0] == f.other_span[1] for f in idle)
        stream.push_other(_speech(16000 * 3))  # 3 s arrive at once (a stalled network)
        after = await _take(stream, 4)
        stats = stream.stats
    finally:
        await stream.aclose()
    assert stats["other_dropped_ms"] >= 3000 - 60 - 40 - 200
    # the burst is cut to the newest audio: the frame ends one lookahead before the live edge
    burst = [f for f in after if f.other_span[1] > f.other_span[0]]
    assert burst and burst[0].other_span[1] == 16000 * 3 - 960
    assert all(f.other_lag_ms <= 60 + 200 for f in after)
    assert stats["other_pending_ms"] <= 60 + 200 + 40


async def test_event_loop_stays_responsive_while_frames_render(models) -> None:
    stream = _engine(models)
    lateness: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lateness.append(time.perf_counter() - before - 0.005)

    await stream.start()
    task = asyncio.create_task(ticker())
    try:
        pushed = time.perf_counter()
        stream.push_self(_speech(16000 * 8))  # 8 s of TTS at once: queued, not processed on the loop
        stream.push_other(_speech(16000))
        push_ms = (time.perf_counter() - pushed) * 1000
        await _take(stream, 50)
    finally:
        task.cancel()
        await stream.aclose()
    assert push_ms < 20
    assert len(lateness) > 100
    assert np.percentile(lateness, 99) < 0.03 and max(lateness) < 0.1
