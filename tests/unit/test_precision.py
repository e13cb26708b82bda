"""``model.precision``: fp32 is the reference, tf32 changes nothing off CUDA, bf16 autocasts the hot path only."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from avatar.errors import InputError
from avatar.motion.generator import MotionGenerator
from avatar.precision import Precision
from avatar.renderer import Renderer
from avatar.stream.core import StepResult, StreamCore


def _run(motion: MotionGenerator, renderer: Renderer, precision: str, trace: bool = True) -> list[StepResult]:
    size = renderer.config.image_size
    m0, f_app = renderer.encode_portrait(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(4)))
    rng = np.random.default_rng(0)
    voice, other = (0.1 * rng.standard_normal((2, 8 * 640))).astype(np.float32)
    core = StreamCore(motion, renderer, m0, f_app, seed=3, precision=precision, trace=trace)
    results = list(core.run_clip(voice, other, render=True))
    assert core.history.dtype == torch.float32 and core.fused is not None and core.fused.dtype == torch.float32
    return results


def test_tf32_is_fp32_off_cuda(motion: MotionGenerator, renderer: Renderer) -> None:
    fp32, tf32 = _run(motion, renderer, "fp32"), _run(motion, renderer, "tf32")
    for a, b in zip(fp32, tf32, strict=True):
        torch.testing.assert_close(a.latent, b.latent, atol=0, rtol=0)
        np.testing.assert_array_equal(a.rgb, b.rgb)


def test_bf16_autocasts_the_hot_path_and_stays_close_to_fp32(motion: MotionGenerator, renderer: Renderer) -> None:
    fp32, bf16 = _run(motion, renderer, "fp32"), _run(motion, renderer, "bf16")
    latents = torch.stack([r.latent for r in fp32]), torch.stack([r.latent for r in bf16])
    assert all(x.dtype == torch.float32 for x in latents)  # the sampler's output stays float32
    deviation = float((latents[1] - latents[0]).norm() / latents[0].norm())
    assert 1e-4 < deviation < 0.1  # it did run in bfloat16 (8 bits of mantissa), and still follows fp32
    assert float(torch.nn.functional.cosine_similarity(*latents, dim=1).min()) > 0.99
    frames = np.stack([r.rgb for r in fp32]).astype(float), np.stack([r.rgb for r in bf16]).astype(float)
    psnr = 10 * np.log10(255**2 / ((frames[0] - frames[1]) ** 2).mean())
    assert 20 < psnr < 80


def test_a_traced_stage_under_bf16_replays_what_autocast_did(
    motion: MotionGenerator, renderer: Renderer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="avatar.stream.traced"):
        traced = _run(motion, renderer, "bf16")
    assert not [r for r in caplog.records if "tracing failed" in r.getMessage()]  # every stage ran traced
    eager = _run(motion, renderer, "bf16", trace=False)
    for a, b in zip(traced, eager, strict=True):
        torch.testing.assert_close(a.latent, b.latent, atol=1e-5, rtol=1e-5)
        assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max() <= 1


def test_an_unknown_precision_names_the_setting() -> None:
    with pytest.raises(InputError, match="fp32, tf32, bf16.*DYSTREAM_MODEL__PRECISION"):
        Precision("fp16", torch.device("cpu"))
