"""Several sessions stepped as one batch (``avatar.stream.batch``) get what each gets alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from avatar.errors import InputError
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.renderer import Renderer
from avatar.stream.batch import SessionBatch, group_by_rung
from avatar.stream.core import StreamCore
from avatar.stream.ladder import ladder

TICKS = 8
PARITY = 1e-5
FRAME_REL = 5e-5  # of a frame's L2 norm
FRAME_ABS = 1e-4  # of a frame in [-1, 1]: 1/80 of a uint8 level


@dataclass
class Session:
    """One conversation: its portrait, lookaheads, seed and 16 kHz audio of both streams."""

    m0: torch.Tensor
    f_app: torch.Tensor
    lookahead_ms: tuple[float, float]
    seed: int
    audio_self: np.ndarray
    audio_other: np.ndarray

    def core(self, motion: MotionGenerator, renderer: Renderer) -> StreamCore:
        ahead_self, ahead_other = self.lookahead_ms
        return StreamCore(
            motion,
            renderer,
            self.m0,
            self.f_app,
            lookahead_self_ms=ahead_self,
            lookahead_other_ms=ahead_other,
            seed=self.seed,
        )

    def hear(self, core: StreamCore, tick: int) -> None:
        """The tick's 40 ms of each stream and the configured lookahead after it."""
        start, end = tick * 640, (tick + 1) * 640
        core.hear(
            self.audio_self[start:end],
            self.audio_other[start:end],
            self.audio_self[end : end + core.lookahead_self],
            self.audio_other[end : end + core.lookahead_other],
        )


def _voice(seed: int, pitch: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange((TICKS + 8) * 640) / 16000
    voice = 0.3 * np.sin(2 * np.pi * pitch * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    return voice.astype(np.float32)


@pytest.fixture(scope="module")
def sessions(renderer: Renderer) -> list[Session]:
    """Three conversations with different portraits, lookaheads and speech (one of them silent on one side)."""
    size = renderer.config.image_size
    portraits = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(9)) * 2 - 1
    m0, f_app = renderer.encode_portrait(portraits)
    silence = np.zeros((TICKS + 8) * 640, np.float32)
    return [
        Session(m0[0:1], f_app[0:1], (60, 60), 1, _voice(1, 180), _voice(2, 120)),
        Session(m0[1:2], f_app[1:2], (0, 200), 2, silence, _voice(3, 220)),
        Session(m0[2:3], f_app[2:3], (120, 0), 3, _voice(4, 140), silence),
    ]


def _alone(session: Session, motion: MotionGenerator, renderer: Renderer, ticks: range) -> list[tuple]:
    """(latent, float frame, uint8 frame) of each tick, the session stepped by itself."""
    core, out = session.core(motion, renderer), []
    for tick in ticks:
        session.hear(core, tick)
        latent = core.generate(ladder(5)[0])
        source, f_app = core.render_inputs()
        out.append((latent, renderer.render(source, latent[None], f_app)[0], core.render(latent)))
    return out


def test_sessions_batched_together_get_what_each_gets_alone(
    motion: MotionGenerator, renderer: Renderer, sessions: list[Session]
) -> None:
    """Sessions join and leave between ticks: the first one leaves after tick 5, the third joins at tick 2."""
    spans = [range(0, 6), range(0, TICKS), range(2, TICKS)]
    alone = [_alone(s, motion, renderer, span) for s, span in zip(sessions, spans, strict=True)]
    cores = [s.core(motion, renderer) for s in sessions]
    batch = SessionBatch.of(cores[0])
    together: list[list[tuple]] = [[], [], []]
    sizes = set()
    for tick in range(TICKS):
        live = [i for i, span in enumerate(spans) if tick in span]
        sizes.add(len(live))
        for i in live:
            sessions[i].hear(cores[i], tick)
        latents = batch.generate([cores[i] for i in live], ladder(5)[0])
        frames = batch.frames([cores[i] for i in live], latents)
        rgb = batch.render([cores[i] for i in live], latents)
        for i, latent, frame, image in zip(live, latents, frames, rgb, strict=True):
            together[i].append((latent, frame, image))
    assert sizes == {2, 3}
    for mine, reference in zip(together, alone, strict=True):
        assert len(mine) == len(reference)
        for (latent, frame, image), (latent_1, frame_1, image_1) in zip(mine, reference, strict=True):
            torch.testing.assert_close(latent, latent_1, atol=PARITY, rtol=PARITY)
            # the renderer's convolutions sum in another order at another batch size (measured: up to 1.8e-5 of
            # the frame's norm, 4.2e-5 at most in one value)
            assert float((frame - frame_1).norm() / frame_1.norm()) <= FRAME_REL
            assert float((frame - frame_1).abs().max()) <= FRAME_ABS
            assert np.abs(image.astype(int) - image_1.astype(int)).max() <= 1  # truncation at a level's edge
    # the sessions really differ: a batch that mixed them up would not pass the comparison above
    assert not torch.allclose(together[0][3][0], together[1][3][0], atol=1e-3)


def test_sessions_on_different_rungs_are_batched_by_sampler_setting(
    motion: MotionGenerator, renderer: Renderer, sessions: list[Session]
) -> None:
    full, steps_3, no_guidance, half_render = ladder(5)[:4]
    cores = [s.core(motion, renderer) for s in sessions]
    extra = sessions[0].core(motion, renderer)
    groups = group_by_rung([(cores[0], full), (cores[1], no_guidance), (cores[2], full), (extra, half_render)])
    assert [([cores.index(c) if c in cores else "extra" for c in group], rung) for group, rung in groups] == [
        ([0, 2], full),
        ([1, "extra"], no_guidance),  # half-render samples like no-guidance: one batch
    ]
    alone = [s.core(motion, renderer) for s in sessions]
    for session, core, single in zip(sessions, cores, alone, strict=True):
        session.hear(core, 0)
        session.hear(single, 0)
    mixed = SessionBatch.of(cores[0]).generate([cores[1], cores[2]], steps_3)
    for latent, single in zip(mixed, alone[1:], strict=True):
        torch.testing.assert_close(latent, single.generate(steps_3), atol=PARITY, rtol=PARITY)


def test_a_batch_refuses_sessions_that_do_not_share_the_models(
    motion: MotionGenerator, renderer: Renderer, sessions: list[Session]
) -> None:
    other_motion = random_motion_generator(MotionConfig.tiny(), seed=6)
    cores = [sessions[0].core(motion, renderer), sessions[1].core(other_motion, renderer)]
    for session, core in zip(sessions[:2], cores, strict=True):
        session.hear(core, 0)
    batch = SessionBatch.of(cores[0])
    with pytest.raises(InputError, match="share one motion generator"):
        batch.generate(cores, ladder(5)[0])
    with pytest.raises(InputError, match="at least one session"):
        batch.generate([], ladder(5)[0])
