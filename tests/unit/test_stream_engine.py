"""The real-time engine (``AvatarStream``) with small random models on the CPU: the audio ticks' pacing, segments,
interruption, the user's jitter buffer, an event loop that stays free while frames render, and a voice that keeps
time when the renderer is far too slow.

These tests check the engine, not the model's speed, so they run a renderer even smaller than
``RendererConfig.tiny()`` (64×64; a few ms a frame) and one torch thread: the real-time assertions then hold on a
busy 2-core machine. ``python -m bench.stream`` measures the tiny configuration itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from livekit.plugins.dystream.testing import HeldRenderer

from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.renderer import Renderer, RendererConfig, random_renderer
from avatar.stream.engine import AudioTick, AvatarStream, StreamFrame
from avatar.stream.ladder import ladder, rung_index
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


def _engine(models: tuple[MotionGenerator, Renderer, Portrait], render_s: float | None = None, **stream: object):
    motion, renderer, portrait = models
    if render_s is not None:
        renderer = HeldRenderer(renderer, render_s)
    settings = StreamSettings(**{"torch_threads": 1, **stream})
    return AvatarStream(motion, renderer, portrait, stream=settings, model=ModelSettings(), noise_seed=0)


def _speech(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-12000, 12000, n, dtype=np.int16) | 1


async def _take(stream: AvatarStream, n: int) -> tuple[list[AudioTick], list[StreamFrame]]:
    """The next ``n`` ticks, and the pictures that came meanwhile."""
    ticks: list[AudioTick] = []
    pictures: list[StreamFrame] = []
    async for item in stream:
        if isinstance(item, StreamFrame):
            pictures.append(item)
            continue
        ticks.append(item)
        if len(ticks) == n:
            break
    return ticks, pictures


async def test_ticks_are_paced_at_25_fps_from_the_start_and_pictures_follow(models, caplog) -> None:
    caplog.set_level(logging.INFO, logger="avatar.stream.engine")
    stream = _engine(models)
    await stream.start()
    started = time.perf_counter()
    try:
        ticks, pictures = await _take(stream, 80)  # 3.2 s, all idle: nothing waits for speech
    finally:
        await stream.aclose()
    assert [t.index for t in ticks] == list(range(80))
    assert ticks[0].taken_at - started < 0.05  # warmed up in start(): the first tick is at once
    taken = np.array([t.taken_at for t in ticks])
    rate = (len(taken) - 11) / (taken[-1] - taken[10])
    assert rate == pytest.approx(FPS, rel=0.03)
    # never ahead of the clock: tick k no earlier than k periods after the first
    assert np.all(taken[10:] - taken[0] >= np.arange(10, 80) * PERIOD - 0.005)
    assert all(not t.speaking and t.segment_id is None and not t.audio.any() for t in ticks)
    # pictures follow the ticks, each after its own; how many depends on the machine (on a busy one the ladder
    # renders every second or third tick, from the start when the warm-up measured it), so only that most ticks
    # the rung renders get one
    every = max(ladder(5)[rung_index(p.rung)].render_every for p in pictures)
    assert len(pictures) >= 0.5 * 80 / every
    assert all(p.rgb.shape == (64, 64, 3) and p.rgb.dtype == np.uint8 for p in pictures)
    assert all(p.created_at >= p.tick.taken_at for p in pictures)
    assert set(pictures[-1].timings_ms) == {"audio", "transformer", "head", "render", "total"}
    # the closing summary says where a picture's time went: each stage's p50 and p95
    (closed,) = [r for r in caplog.records if r.getMessage() == "stream closed"]
    for stage in pictures[-1].timings_ms:
        assert 0 < closed.__dict__[f"{stage}_ms_p50"] <= closed.__dict__[f"{stage}_ms_p95"]


async def test_segment_audio_leaves_with_the_ticks_640_samples_each(models) -> None:
    stream = _engine(models)
    pcm = _speech(16000 // 2 + 123)
    await stream.start()
    try:
        segment = stream.push_self(pcm[:3000])
        assert stream.push_self(pcm[3000:]) == segment
        stream.end_self_segment()
        ticks: list[AudioTick] = []
        async for item in stream:
            if isinstance(item, AudioTick):
                ticks.append(item)
                if item.segment_end or len(ticks) > 60:
                    break
    finally:
        await stream.aclose()
    assert all(t.audio.shape == (640,) and t.audio.dtype == np.int16 for t in ticks)
    speaking = [t for t in ticks if t.speaking]
    assert len(speaking) == 13 and all(t.segment_id == segment for t in speaking)
    assert ticks[-1] is speaking[-1] and ticks[-1].segment_end
    assert sum(t.segment_end for t in ticks) == 1
    assert [t.index for t in speaking] == list(range(speaking[0].index, speaking[0].index + 13))  # no gap
    played = np.concatenate([t.audio for t in speaking])
    np.testing.assert_array_equal(played, np.pad(pcm, (0, 13 * 640 - pcm.size)))
    assert all(not t.audio.any() for t in ticks if not t.speaking)


async def test_clear_self_stops_speech_at_once_and_silences_ticks_not_yet_handed_out(models) -> None:
    stream = _engine(models)
    await stream.start()
    try:
        segment = stream.push_self(_speech(16000 * 5))
        ticks, _ = await _take(stream, 1)
        while not ticks[-1].speaking:
            ticks += (await _take(stream, 1))[0]
        before = stream.stats["ticks"]
        while stream.stats["ticks"] < before + 3:  # the consumer stalls: ticks of speech wait to be handed out
            await asyncio.sleep(PERIOD)
        assert stream.stats["ticks_waiting"] >= 2
        assert stream.clear_self() == segment
        assert stream.stats["self_queued_s"] == 0
        after, _ = await _take(stream, 10)
    finally:
        await stream.aclose()
    assert not any(t.speaking or t.segment_id == segment or t.audio.any() for t in after)
    assert stream.clear_self() is None


async def test_clear_self_also_drops_a_segment_the_clock_already_took_whole(models) -> None:
    stream = _engine(models)
    await stream.start()
    try:
        await _take(stream, 2)
        segment = stream.push_self(_speech(2 * 640))
        stream.end_self_segment()
        before = stream.stats["ticks"]
        while stream.stats["ticks"] < before + 4:  # the clock takes both ticks; they wait, unconsumed
            await asyncio.sleep(PERIOD)
        assert stream.stats["self_queued_s"] == 0
        assert stream.clear_self() == segment
        after, _ = await _take(stream, 6)
    finally:
        await stream.aclose()
    assert not any(t.speaking or t.segment_id == segment for t in after)


async def test_other_stream_starves_to_zeros_and_bursts_are_bounded(models) -> None:
    stream = _engine(models, lookahead_other_ms=60, max_other_backlog_ms=200)
    await stream.start()
    try:
        idle, _ = await _take(stream, 10)  # the user said nothing: zeros, nothing waits
        assert stream.stats["other_inserted_ms"] >= 10 * 40
        assert all(t.other_span[0] == t.other_span[1] for t in idle)
        stream.push_other(_speech(16000 * 3))  # 3 s arrive at once (a stalled network)
        after, _ = await _take(stream, 4)
        stats = stream.stats
    finally:
        await stream.aclose()
    assert stats["other_dropped_ms"] >= 3000 - 60 - 40 - 200
    # the burst is cut to the newest audio: the tick ends one lookahead before the live edge
    burst = [t for t in after if t.other_span[1] > t.other_span[0]]
    assert burst and burst[0].other_span[1] == 16000 * 3 - 960
    assert all(t.other_lag_ms <= 60 + 200 for t in after)
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


async def test_a_renderer_far_slower_than_the_clock_never_slows_the_voice(models) -> None:
    """Each picture takes 100 ms (2.5 ticks): the speech still leaves at 25 ticks a second, whole and in order, the
    pictures are the newest ones, and the engine steps down the quality ladder to rendering every other tick."""
    stream = _engine(models, render_s=0.1)
    pcm = _speech(16000 * 4)
    await stream.start()
    try:
        stream.push_self(pcm)
        stream.end_self_segment()
        ticks: list[AudioTick] = []
        pictures: list[StreamFrame] = []
        async for item in stream:
            (ticks if isinstance(item, AudioTick) else pictures).append(item)
            if isinstance(item, AudioTick) and item.segment_end:
                break
        stats = stream.stats
    finally:
        await stream.aclose()
    speaking = [t for t in ticks if t.speaking]
    np.testing.assert_array_equal(np.concatenate([t.audio for t in speaking]), pcm)  # every sample, in order
    taken = np.array([t.taken_at for t in speaking])
    heard_s = taken[-1] - taken[0] + PERIOD
    assert heard_s == pytest.approx(4.0, rel=0.05)  # real-time rate: not stretched by the slow pictures
    assert np.diff(taken).max() < 3 * PERIOD  # and without holes
    assert len(pictures) <= 0.5 * len(ticks)  # at most one picture per 100 ms could be made
    assert [p.index for p in pictures] == sorted({p.index for p in pictures})  # always the newest, never behind
    assert stats["rung_changes"] >= 1 and stats["rung"] != "full"
    assert pictures[-1].rung == stats["rung"]


async def test_the_engine_starts_at_the_rung_its_warm_up_measured(models) -> None:
    """A renderer that needs 100 ms a picture is measured in the warm-up: the first tick is already at the floor,
    one picture in three, instead of stepping down to it over the first seconds of the call."""
    stream = _engine(models, render_s=0.1)
    await stream.start()
    try:
        ticks, _ = await _take(stream, 1)
        rung = stream.governor.rung.name
    finally:
        await stream.aclose()
    assert ticks[0].index == 0 and rung == "third"


async def test_the_model_threads_run_below_the_event_loops_priority_and_motion_below_render(models) -> None:
    stream = _engine(models, worker_nice=7, motion_extra_nice=3)
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    await stream.start()
    try:
        await _take(stream, 2)
        workers = {t.name: t.native_id for t in threading.enumerate() if t.name.startswith("dystream-")}
        nice = {name: os.getpriority(os.PRIO_PROCESS, tid) for name, tid in workers.items()}
    finally:
        await stream.aclose()
    assert nice == {"dystream-motion": base + 10, "dystream-render": base + 7}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the loop's own is untouched


async def test_an_engine_that_started_at_the_floor_climbs_when_the_machine_frees_up(models) -> None:
    """The warm-up measures a 100 ms renderer, so the call starts on ``third``; then the renderer is quick again.
    The ticks that rung interpolates are not misses: the engine climbs within a few seconds."""
    motion, renderer, portrait = models
    held = HeldRenderer(renderer, 0.1)
    settings = StreamSettings(torch_threads=1)
    stream = AvatarStream(motion, held, portrait, stream=settings, model=ModelSettings(), noise_seed=0)
    await stream.start()
    try:
        started_at = stream.governor.rung.name
        held.frame_s = 0.0
        for _ in range(10 * FPS):
            await _take(stream, 1)
            if stream.governor.rung.name != "third":
                break
        rung = stream.governor.rung.name
    finally:
        await stream.aclose()
    assert started_at == "third"
    assert rung_index(rung) < rung_index("third")


@pytest.mark.parametrize("close_order", ["opened", "reversed"])
async def test_streams_give_torch_its_thread_count_back_in_any_close_order(models, close_order: str) -> None:
    """``stream.torch_threads`` is process-wide: with two streams open, the process's own count comes back when the
    last one closes, whichever it is."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        streams = [_engine(models, torch_threads=1), _engine(models, torch_threads=1)]
        for stream in streams:
            await stream.start()
        assert torch.get_num_threads() == 1
        await (streams[0] if close_order == "opened" else streams[1]).aclose()
        assert torch.get_num_threads() == 1  # the other stream still runs at its setting
        await (streams[1] if close_order == "opened" else streams[0]).aclose()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


async def test_conversations_sharing_a_device_engine_are_stepped_together_and_each_keeps_time(models) -> None:
    """``batch_sessions``: two conversations share one motion and one render thread; their clocks tick in phase and
    each round generates their newest ticks' latents and renders their pictures in one call each. Each keeps 25 ticks a
    second and gets its own pictures; one leaving does not stop the other; the threads end with the last."""
    first, second = (_engine(models, batch_sessions=True, pinned_rung="full") for _ in range(2))
    await first.start()
    await second.start()
    try:
        assert first.stats["engine_sessions"] == second.stats["engine_sessions"] == 2
        started = time.perf_counter()
        (ticks_a, pictures_a), (ticks_b, pictures_b) = await asyncio.gather(_take(first, 50), _take(second, 50))
        elapsed = time.perf_counter() - started
        assert elapsed < 50 * PERIOD * 1.5, f"50 ticks took {elapsed:.2f} s"
        for ticks, pictures in ((ticks_a, pictures_a), (ticks_b, pictures_b)):
            assert [t.index for t in ticks] == list(range(ticks[0].index, ticks[0].index + 50))
            assert len(pictures) >= 10 and all(p.rgb.shape == (64, 64, 3) for p in pictures)
        assert first.stats["engine_batched_calls"] > 0  # both conversations in one call
        await first.aclose()
        more, pictures = await _take(second, 25)  # the other goes on alone
        assert len(more) == 25 and pictures and second.stats["engine_sessions"] == 1
    finally:
        await first.aclose()
        await second.aclose()
    assert not [t.name for t in threading.enumerate() if t.name in ("dystream-motion", "dystream-render")]


async def test_without_batch_sessions_each_conversation_has_threads_of_its_own(models) -> None:
    """Without ``batch_sessions`` every conversation runs its own threads."""
    first, second = _engine(models), _engine(models)
    await first.start()
    await second.start()
    try:
        assert first.stats["engine_sessions"] == second.stats["engine_sessions"] == 1
        await asyncio.gather(_take(first, 10), _take(second, 10))
        assert first.stats["engine_batched_calls"] == second.stats["engine_batched_calls"] == 0
    finally:
        await first.aclose()
        await second.aclose()
