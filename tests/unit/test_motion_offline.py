"""Whole-clip generation with a small random model: frame counts, stream pairing, replayable noise, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.errors import InputError
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.offline import generate, num_output_frames, pair_streams
from avatar.sampling.cfg import CfgScales


@pytest.fixture(scope="module")
def tiny_model():
    return random_motion_generator(MotionConfig.tiny(), seed=0)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (0.1 * rng.standard_normal(640 * 6 + 123)).astype(np.float32)  # not a multiple of 640


@pytest.fixture(scope="module")
def m0() -> torch.Tensor:
    return torch.randn(1, 512, generator=torch.Generator().manual_seed(2)) * 0.35


def test_frame_count_is_floor_n_over_640_minus_one(tiny_model, speech: np.ndarray, m0: torch.Tensor) -> None:
    out = generate(tiny_model, speech, None, m0, steps=2, seed=0)
    assert out.shape == (num_output_frames(len(speech)), 512) == (5, 512)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert num_output_frames(151_144) == 235  # the official dyadic sample: 9.40 s
    assert num_output_frames(1280) == 1


def test_seed_replays_and_noise_rows_are_per_frame(tiny_model, speech: np.ndarray, m0: torch.Tensor) -> None:
    a = generate(tiny_model, speech, None, m0, steps=2, seed=7)
    b = generate(tiny_model, speech, None, m0, steps=2, seed=7)
    c = generate(tiny_model, speech, None, m0, steps=2, seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    generator = torch.Generator().manual_seed(7)
    table = torch.stack([torch.randn(512, generator=generator) for _ in range(a.shape[0])])
    assert torch.equal(generate(tiny_model, speech, None, m0, steps=2, noise=table.numpy()), a)
    # changing only the noise of the last frame changes only the last frame
    table[-1] += 1.0
    d = generate(tiny_model, speech, None, m0, steps=2, noise=table)
    assert torch.equal(d[:-1], a[:-1]) and not torch.allclose(d[-1], a[-1])


def test_missing_listener_is_silence_and_short_stream_is_zero_padded(
    tiny_model, speech: np.ndarray, m0: torch.Tensor
) -> None:
    silent = np.zeros_like(speech)
    assert torch.equal(
        generate(tiny_model, speech, None, m0, steps=1, seed=0),
        generate(tiny_model, speech, silent, m0, steps=1, seed=0),
    )
    short_other = speech[:1000] * 0.5
    padded_self, padded_other = pair_streams(speech, short_other)
    assert len(padded_other) == len(speech) and not padded_other[1000:].any()
    assert torch.equal(
        generate(tiny_model, speech, short_other, m0, steps=1, seed=0),
        generate(tiny_model, padded_self, padded_other, m0, steps=1, seed=0),
    )
    # a longer listener stream lengthens the clip: the avatar keeps listening after it stops speaking
    longer = generate(tiny_model, speech[:2000], speech, m0, steps=1, seed=0)
    assert longer.shape[0] == num_output_frames(len(speech))


def test_the_listener_audio_matters(tiny_model, speech: np.ndarray, m0: torch.Tensor) -> None:
    talk = generate(tiny_model, speech, None, m0, steps=1, seed=0)
    listen = generate(tiny_model, np.zeros_like(speech), speech, m0, steps=1, seed=0)
    assert not torch.allclose(talk, listen)


def test_four_and_five_branches_agree(tiny_model, speech: np.ndarray, m0: torch.Tensor) -> None:
    four = generate(tiny_model, speech, None, m0, steps=2, seed=0, cfg=CfgScales())
    five = generate(tiny_model, speech, None, m0, steps=2, seed=0, cfg=CfgScales(anchor=1e-30))
    torch.testing.assert_close(four, five, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"audio_self": np.zeros(1279, np.float32)}, "too short"),
        ({"audio_self": np.zeros((2, 3200), np.float32)}, "1-D mono"),
        ({"audio_self": np.zeros(3200, np.int16)}, "float samples"),
        ({"m0": torch.zeros(1, 256)}, "m0 must be one motion latent of 512"),
        ({"steps": 0}, "from 1 to 20"),
        ({"noise": np.zeros((2, 512), np.float32)}, r"noise must be \[frames >= 4, 512\]"),
    ],
)
def test_input_errors(tiny_model, m0: torch.Tensor, kwargs: dict, message: str) -> None:
    args = {"audio_self": np.zeros(3200, np.float32), "audio_other": None, "m0": m0, **kwargs}
    steps = args.pop("steps", 1)
    noise = args.pop("noise", None)
    with pytest.raises(InputError, match=message):
        generate(tiny_model, args["audio_self"], args["audio_other"], args["m0"], steps=steps, noise=noise, seed=0)


def test_unseeded_runs_differ_and_leave_the_global_rng_alone(tiny_model, speech: np.ndarray, m0: torch.Tensor) -> None:
    state = torch.random.get_rng_state()
    a = generate(tiny_model, speech, None, m0, steps=1)
    b = generate(tiny_model, speech, None, m0, steps=1)
    assert not torch.allclose(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)
