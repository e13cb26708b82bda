"""The synchronous streaming step (``StreamCore``) on a tiny random model: causality, caching, replayable noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.errors import InputError
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.offline import generate
from avatar.stream.core import StreamCore


@pytest.fixture(scope="module")
def motion() -> MotionGenerator:
    return random_motion_generator(MotionConfig.tiny(), seed=5)


@pytest.fixture(scope="module")
def m0() -> torch.Tensor:
    return torch.randn(1, 512, generator=torch.Generator().manual_seed(1)) * 0.3


def _voice(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)


def _latents(core: StreamCore, audio_self: np.ndarray, audio_other: np.ndarray | None = None) -> np.ndarray:
    return np.stack([r.latent.numpy() for r in core.run_clip(audio_self, audio_other)])


def test_seeded_full_context_stream_equals_seeded_offline(motion: MotionGenerator, m0: torch.Tensor) -> None:
    """``seed`` draws the same start noise as ``offline.generate(seed=...)``; with full context the latents match."""
    audio_self, audio_other = _voice(1.2, 1).astype(np.float32), _voice(1.2, 2).astype(np.float32)
    offline = generate(motion, audio_self, audio_other, m0, seed=7).numpy()
    streamed = _latents(StreamCore(motion, None, m0, None, full_context=True, seed=7), audio_self, audio_other)
    np.testing.assert_allclose(streamed, offline, atol=1e-5, rtol=1e-5)


def test_a_frame_depends_on_audio_up_to_its_lookahead_and_not_after(motion: MotionGenerator, m0: torch.Tensor) -> None:
    lookahead_ms = 60
    base = _voice(1.0, 3).astype(np.float32)
    changed_at = 10 * 640 + 480  # a sample inside frame 10
    other = base.copy()
    other[changed_at:] = _voice(1.0, 4)[changed_at:]

    def run(audio: np.ndarray) -> np.ndarray:
        core = StreamCore(motion, None, m0, None, lookahead_self_ms=lookahead_ms, seed=0)
        return _latents(core, audio)

    a, b = run(base), run(other)
    # frame j sees samples [0, (j + 1) * 640 + 960): frames 8 (window end 6720) and 9 (7360) end before the change
    # (6880); frame 9 sees it through its lookahead
    last_blind = max(j for j in range(len(a)) if (j + 1) * 640 + lookahead_ms * 16 <= changed_at)
    assert last_blind == 8
    np.testing.assert_array_equal(a[: last_blind + 1], b[: last_blind + 1])
    assert not np.allclose(a[last_blind + 1], b[last_blind + 1])


def test_silent_stream_is_encoded_once(motion: MotionGenerator, m0: torch.Tensor) -> None:
    core = StreamCore(motion, None, m0, None, seed=0)
    frames = len(_latents(core, _voice(0.8, 5).astype(np.float32), None))
    assert core.features["other"].encodes == 1  # the cached feature of a silent window, reused every frame
    assert frames < core.features["self"].encodes <= frames + 3


def test_same_seed_same_latents_and_state_carries_between_steps(motion: MotionGenerator, m0: torch.Tensor) -> None:
    audio = _voice(0.6, 6).astype(np.float32)
    a = _latents(StreamCore(motion, None, m0, None, seed=11), audio)
    b = _latents(StreamCore(motion, None, m0, None, seed=11), audio)
    np.testing.assert_array_equal(a, b)
    core = StreamCore(motion, None, m0, None, seed=11)
    list(core.run_clip(audio))
    np.testing.assert_array_equal(core.history[-len(a) :].numpy(), a)  # the history holds the generated latents
    assert core.index == len(a)


def test_bad_inputs_name_the_fix(motion: MotionGenerator, m0: torch.Tensor) -> None:
    with pytest.raises(InputError, match="LOOKAHEAD_OTHER_MS"):
        StreamCore(motion, None, m0, None, lookahead_other_ms=250)
    with pytest.raises(InputError, match="m0"):
        StreamCore(motion, None, torch.zeros(1, 100), None)
    core = StreamCore(motion, None, m0, None)
    with pytest.raises(InputError, match="640 samples"):
        core.step(np.zeros(320, np.float32), np.zeros(640, np.float32))
