"""The streaming step never waits for the device, except to hand the finished uint8 frame to the host.

The step runs on PyTorch's ``meta`` device (shapes without data: a device that is not the host, on any machine)
under a dispatch mode that records every operator moving data between the host and the device, making a device
tensor from host data, or reading a device value on the host. On CUDA each of these is a transfer or a wait; the
recording turns the one allowed device-to-host copy, the frame, into an empty host tensor of its shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.renderer import RendererConfig, random_renderer
from avatar.stream.batch import SessionBatch
from avatar.stream.core import StreamCore
from avatar.stream.noise import table_noise

HOST_READS = {"aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.equal.default"}
FROM_HOST_DATA = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default"}


class HostTraffic(TorchDispatchMode):
    """Records (operator, from devices, to devices) of every host↔device crossing; a copy to the host is answered
    with an empty host tensor (the meta device has no data to copy)."""

    def __init__(self) -> None:
        super().__init__()
        self.crossings: list[tuple[str, set[str], set[str], tuple[int, ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = str(func)
        sources = {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        target = kwargs.get("device")
        if target is not None and torch.device(target).type == "cpu" and sources == {"meta"}:
            tensor = next(t for t in tree_leaves(args) if isinstance(t, torch.Tensor))
            self.crossings.append((name, sources, {"cpu"}, tuple(tensor.shape)))
            return torch.empty(tensor.shape, dtype=kwargs.get("dtype") or tensor.dtype)
        out = func(*args, **kwargs)
        targets = {t.device.type for t in tree_leaves(out) if isinstance(t, torch.Tensor)}
        on_device = targets - {"cpu"}
        if name in HOST_READS or (name in FROM_HOST_DATA and on_device) or (sources and targets and sources != targets):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            self.crossings.append((name, sources, targets, shape))
        return out


@pytest.fixture(scope="module")
def core() -> StreamCore:
    """A tiny model and renderer on the meta device, one frame stepped (the first window: the silent prefix)."""
    motion = random_motion_generator(MotionConfig.tiny(), seed=5, device="meta")
    renderer = random_renderer(RendererConfig.tiny(), seed=2, device="meta")
    size = renderer.config.image_size
    m0, f_app = renderer.encode_portrait(torch.empty(1, 3, size, size, device="meta"))
    noise = table_noise(torch.empty(64, 512, device="meta"))
    stream = StreamCore(motion, renderer, m0, f_app, noise=noise, trace=False)
    with HostTraffic():
        stream.step(*_audio(0))
    return stream


def _audio(tick: int) -> tuple[np.ndarray, ...]:
    """Speech-like noise for both streams (neither is the cached silence): 40 ms each and 60 ms of lookahead."""
    rng = np.random.default_rng(tick)
    return tuple((0.1 * rng.standard_normal(size)).astype(np.float32) for size in (640, 640, 960, 960))


def test_a_step_moves_only_the_audio_in_and_the_uint8_frame_out(core: StreamCore) -> None:
    for tick in (1, 2):
        with HostTraffic() as traffic:
            result = core.step(*_audio(tick))
        uploads = [c for c in traffic.crossings if c[1] == {"cpu"} and c[2] == {"meta"}]
        downloads = [c for c in traffic.crossings if c[1] == {"meta"} and c[2] == {"cpu"}]
        others = [c for c in traffic.crossings if c not in uploads and c not in downloads]
        # one audio window per stream (the encoder's input)
        assert len(uploads) == 2 and all(len(shape) == 2 and shape[0] == 1 for *_, shape in uploads), uploads
        size = core.renderer.config.image_size
        assert [shape for *_, shape in downloads] == [(1, size, size, 3)], downloads  # the frame, as uint8
        assert others == []
        assert result.rgb is not None and result.rgb.dtype == np.uint8


def test_a_batched_tick_moves_only_each_sessions_audio_in_and_the_frames_out(core: StreamCore) -> None:
    second = StreamCore(core.motion, core.renderer, core.m0, core.f_app, noise=core.noise, trace=False)
    with HostTraffic():
        second.step(*_audio(0))
    batch = SessionBatch.of(core)
    with HostTraffic() as traffic:
        for session, tick in ((core, 5), (second, 6)):
            session.hear(*_audio(tick))
        frames = batch.render([core, second], batch.generate([core, second], core.full_rung))
    uploads = [c for c in traffic.crossings if c[1] == {"cpu"} and c[2] == {"meta"}]
    downloads = [c for c in traffic.crossings if c[1] == {"meta"} and c[2] == {"cpu"}]
    size = core.renderer.config.image_size
    assert len(uploads) == 4, uploads  # each session's two audio windows
    assert [shape for *_, shape in downloads] == [(2, size, size, 3)], downloads  # both frames in one copy
    assert len(traffic.crossings) == len(uploads) + len(downloads), traffic.crossings
    assert len(frames) == 2 and frames[0].dtype == np.uint8


def test_the_recording_sees_what_a_host_wait_would_be(core: StreamCore) -> None:
    """The instrument itself: a value read on the host, a tensor made from host data and a copy are recorded."""
    with HostTraffic() as traffic:
        history = core.history
        torch.tensor([1.0, 2.0], device="meta")
        torch.zeros(3).to("meta")
        history.sum().to("cpu")
    names = [name for name, *_ in traffic.crossings]
    assert any(n in FROM_HOST_DATA for n in names) and len(traffic.crossings) >= 3, traffic.crossings
