"""The audio front end: utterance normalisation, wav2vec2 frame counts, 25 fps resampling, branch fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.errors import InputError
from avatar.motion.audio import SAMPLES_PER_FRAME, TAIL_PAD, input_values, normalize_utterance, to_25fps, wav2vec_frames
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.sampling.cfg import BRANCHES_4, BRANCHES_5


@pytest.fixture(scope="module")
def tiny_model():
    return random_motion_generator(MotionConfig.tiny(), seed=0)


def test_normalisation_is_zero_mean_unit_variance() -> None:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(16000) + 0.02).astype(np.float32)
    y = normalize_utterance(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert abs(float(y.mean())) < 1e-6
    assert abs(float(y.std()) - 1.0) < 1e-4
    std = np.float32(np.sqrt(np.float64(x.var()) + 1e-7))  # float64 square root, float32 division
    np.testing.assert_array_equal(y, (x - x.mean()) / std)


def test_silence_stays_silence_and_tail_is_zero() -> None:
    zeros = np.zeros(3200, np.float32)
    assert not normalize_utterance(zeros).any()
    values = input_values(np.ones(1000, np.float32) * 0.5)
    assert values.shape == (1000 + TAIL_PAD,)
    assert not values[-TAIL_PAD:].any()


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros((2, 100), np.float32), "1-D mono"),
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
    ],
)
def test_bad_audio_is_rejected(audio: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        normalize_utterance(audio)


@pytest.mark.parametrize("samples", [640 * 100, 640 * 100 + 1, 640 * 100 + 319, 640 * 100 + 320, 640 * 100 + 639])
def test_encoder_gives_two_features_per_frame(tiny_model, samples: int) -> None:
    audio = np.random.default_rng(samples).standard_normal(samples).astype(np.float32)
    values = torch.from_numpy(input_values(audio))[None]
    with torch.inference_mode():
        feat50 = tiny_model.audio_encoder_face(values)
        feat25 = to_25fps(feat50)
    frames = samples // SAMPLES_PER_FRAME
    assert feat50.shape == (1, wav2vec_frames(samples + TAIL_PAD), tiny_model.config.audio_dim)
    assert feat50.shape[1] in (2 * frames, 2 * frames + 1)
    assert feat25.shape[1] == frames


def test_to_25fps_is_linear_with_aligned_corners() -> None:
    feat50 = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1).repeat(1, 1, 3)
    feat25 = to_25fps(feat50)
    assert feat25.shape == (1, 5, 3)
    # output i samples source position i·(L−1)/(T−1) = i·9/4
    np.testing.assert_allclose(feat25[0, :, 0].numpy(), np.arange(5) * 9 / 4, rtol=1e-6)
    with pytest.raises(InputError, match="frames >= 2"):
        to_25fps(torch.zeros(1, 1, 3))


def test_encoder_rejects_short_or_batched_wrong_input(tiny_model) -> None:
    with pytest.raises(InputError, match="at least 400"):
        tiny_model.audio_encoder_face(torch.zeros(1, 399))
    with pytest.raises(InputError, match=r"\[batch, samples\]"):
        tiny_model.audio_encoder_face(torch.zeros(400))


def test_fusion_gates_after_the_projection(tiny_model) -> None:
    feat_self, feat_other = torch.randn(7, 32), torch.randn(7, 32)
    with torch.inference_mode():
        fused = tiny_model.fuse(feat_self, feat_other)
        fused4 = tiny_model.fuse(feat_self, feat_other, BRANCHES_4)
        bias = tiny_model.audio_audioother_fusion.bias
        only_self = tiny_model.audio_audioother_fusion(
            torch.cat([tiny_model.audio_proj(feat_self), torch.zeros(7, 64)], dim=-1)
        )
    assert fused.shape == (len(BRANCHES_5), 7, 64)
    assert torch.equal(fused[0], bias.expand(7, -1)), "uncond = fusion bias only (projection biases gated too)"
    assert torch.equal(fused[1], fused[0]), "the anchor branch hears nothing"
    torch.testing.assert_close(fused[2], only_self)
    assert not torch.allclose(fused[4], fused[2])
    torch.testing.assert_close(fused4, fused[[0, 2, 3, 4]])
    with pytest.raises(InputError, match="pad the shorter stream"):
        tiny_model.fuse(feat_self, feat_other[:5])
