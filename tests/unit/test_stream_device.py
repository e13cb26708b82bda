"""The device engine (``avatar.stream_device``): members' requests run as one batch, each member gets what it gets
alone, a member that leaves holds no one, failures reach every waiting member, and live streams share it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from avatar.cfg import CfgScales
from avatar.errors import InputError
from avatar.motion import MotionGenerator
from avatar.renderer import Renderer
from avatar.stream import AvatarStream, StreamFrame
from avatar.stream_batch import SessionBatch
from avatar.stream_core import StreamCore
from avatar.stream_device import DeviceEngine
from avatar.stream_ladder import ladder
from config.settings import ModelSettings, StreamSettings

pytestmark = pytest.mark.timeout(120)
NEVER_MS = 600_000.0  # a gather window no test waits out: batches close when every member has asked


@dataclass
class Portrait:
    m0: torch.Tensor
    f_app: torch.Tensor


@pytest.fixture(scope="module")
def portraits(renderer: Renderer) -> list[Portrait]:
    size = renderer.config.image_size
    m0, f_app = renderer.encode_portrait(torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(3)))
    return [Portrait(m0[i : i + 1], f_app[i : i + 1]) for i in range(3)]


def _core(motion: MotionGenerator, renderer: Renderer, portrait: Portrait, seed: int) -> StreamCore:
    core = StreamCore(motion, renderer, portrait.m0, portrait.f_app, seed=seed)
    voice = np.random.default_rng(seed).normal(0, 0.1, 4 * 640).astype(np.float32)
    core.hear(voice[:640], voice[640:1280], voice[1280:2240], voice[2240:])
    return core


def _together(calls: list[Callable[[], object]]) -> list[object]:
    """Run each call on its own thread, all released at once; their results in order."""
    results: list[object] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_members_asking_together_are_one_batch_and_get_what_they_get_alone(
    motion: MotionGenerator, renderer: Renderer, portraits: list[Portrait]
) -> None:
    cores = [_core(motion, renderer, p, seed) for seed, p in enumerate(portraits)]
    alone = [_core(motion, renderer, p, seed) for seed, p in enumerate(portraits)]
    engine = DeviceEngine(SessionBatch.of(cores[0]), gather_ms=NEVER_MS)
    try:
        for _ in cores:
            engine.join()
        full = ladder(5)[0]
        latents = _together([lambda c=core: engine.generate(c, full) for core in cores])
        pairs = zip(cores, latents, strict=True)
        frames = _together([lambda c=core, x=latent: engine.render(c, x) for core, latent in pairs])
        assert engine.batch_sizes == {"motion": [3], "render": [3]}
    finally:
        engine.close()
    for latent, frame, single in zip(latents, frames, alone, strict=True):
        expected = single.generate(full)
        torch.testing.assert_close(latent, expected, atol=1e-5, rtol=1e-5)
        assert np.abs(frame.astype(int) - single.render(expected).astype(int)).max() <= 1


def test_a_member_that_leaves_does_not_hold_the_batch(
    motion: MotionGenerator, renderer: Renderer, portraits: list[Portrait]
) -> None:
    core = _core(motion, renderer, portraits[0], 0)
    engine = DeviceEngine(SessionBatch.of(core), gather_ms=NEVER_MS)
    try:
        engine.join()
        engine.join()  # a second member that will never ask
        asked = threading.Thread(target=lambda: latents.append(engine.generate(core, ladder(5)[0])))
        latents: list[torch.Tensor] = []
        asked.start()
        engine.leave()  # before or after the request: either way the batch of one runs
        asked.join()
        assert len(latents) == 1 and engine.batch_sizes["motion"] == [1]
    finally:
        engine.close()


def test_a_failing_batch_reaches_every_member_and_a_closed_engine_refuses(
    motion: MotionGenerator, renderer: Renderer, portraits: list[Portrait]
) -> None:
    fresh = [StreamCore(motion, renderer, p.m0, p.f_app, seed=0) for p in portraits[:2]]  # nothing generated yet
    engine = DeviceEngine(SessionBatch.of(fresh[0]), gather_ms=NEVER_MS)
    engine.join()
    engine.join()
    latent = torch.zeros(512)
    errors = _together([lambda c=core: engine.render(c, latent) for core in fresh])
    assert all(isinstance(e, InputError) and "needs a generated latent" in str(e) for e in errors)
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate(fresh[0], ladder(5)[0])


def test_members_tick_on_one_grid() -> None:
    engine = DeviceEngine.__new__(DeviceEngine)  # the grid alone: no threads
    engine.origin, engine.period = 100.0, 0.04
    assert engine.next_tick_at(100.0) == 100.0
    assert engine.next_tick_at(100.001) == pytest.approx(100.04)
    assert engine.next_tick_at(100.08) == pytest.approx(100.08)
    assert engine.next_tick_at(99.0) == 100.0


async def test_live_streams_sharing_an_engine_are_stepped_together(
    motion: MotionGenerator, renderer: Renderer, portraits: list[Portrait]
) -> None:
    settings = StreamSettings(torch_threads=1, pinned_rung="no-guidance")
    engine = DeviceEngine(SessionBatch(motion, renderer, CfgScales.from_settings(ModelSettings()), "tf32"), NEVER_MS)
    streams = [
        AvatarStream(motion, renderer, portrait, stream=settings, model=ModelSettings(), noise_seed=i, engine=engine)
        for i, portrait in enumerate(portraits[:2])
    ]
    try:
        for stream in streams:
            await stream.start()
        counts = [await _pictures(stream, 6) for stream in streams]
    finally:
        for stream in streams:
            await stream.aclose()
        engine.close()
    assert all(len(frames) == 6 for frames in counts)
    assert 2 in engine.batch_sizes["motion"] and 2 in engine.batch_sizes["render"]
    assert engine.members() == 0  # each left when it closed


async def _pictures(stream: AvatarStream, n: int) -> list[StreamFrame]:
    pictures: list[StreamFrame] = []
    async for item in stream:
        if isinstance(item, StreamFrame):
            pictures.append(item)
            if len(pictures) == n:
                break
    return pictures
