"""FlowMatchEuler schedule, classifier-free guidance and the per-frame sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.errors import InputError
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.sampling.cfg import BRANCHES_4, BRANCHES_5, CfgScales, branch_gates
from avatar.sampling.sampler import SampleTrace, check_steps, euler_step, flow_match_schedule, sample_latent


def test_five_steps_exactly_as_the_official_scheduler() -> None:
    schedule = flow_match_schedule(5)
    assert schedule.timesteps.dtype == torch.int64
    assert schedule.timesteps.tolist() == [1000, 750, 500, 250, 1]
    expected = np.array([1.0, 0.75025, 0.5005, 0.25075, 0.001, 0.0], dtype=np.float32)
    assert schedule.sigmas.dtype == torch.float32
    np.testing.assert_array_equal(schedule.sigmas.numpy(), expected)


@pytest.mark.parametrize(
    ("steps", "timesteps"),
    [
        (1, [1000]),
        (3, [1000, 500, 1]),
        (10, [1000, 889, 778, 667, 556, 445, 334, 223, 112, 1]),
    ],
)
def test_other_step_counts(steps: int, timesteps: list[int]) -> None:
    schedule = flow_match_schedule(steps)
    assert schedule.steps == steps
    assert schedule.timesteps.tolist() == timesteps
    assert schedule.sigmas[0].item() == 1.0 and schedule.sigmas[-1].item() == 0.0
    assert torch.all(schedule.sigmas[1:] < schedule.sigmas[:-1])
    # σ is float32(t_float / 1000): within float32 rounding of the integer timestep / 1000
    np.testing.assert_allclose(schedule.sigmas[:-1].numpy(), np.array(timesteps) / 1000, atol=1e-3)


@pytest.mark.parametrize("steps", [0, 21, -1, 2.5, "5", True, None])
def test_steps_are_validated(steps: object) -> None:
    with pytest.raises(InputError, match="from 1 to 20"):
        check_steps(steps)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="from 1 to 20"):
        flow_match_schedule(steps)  # type: ignore[arg-type]


def test_guidance_formula_and_order() -> None:
    x0 = torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3) ** 1.5  # rows: uncond, anchor, self, other, all
    u, k, a, o, al = x0
    cfg = CfgScales(audio=0.3, audio_other=0.7, anchor=0.2, all=1.5)
    expected = u + 0.3 * (a - u) + 0.7 * (o - u) + 0.2 * (k - u) + 1.5 * (al - u)
    assert torch.equal(cfg.combine(x0), expected)
    assert cfg.branches == BRANCHES_5


def test_skipping_the_anchor_branch_is_exact_when_its_scale_is_zero() -> None:
    x0 = torch.randn(5, 512, generator=torch.Generator().manual_seed(0))
    cfg = CfgScales()  # official 0.5 / 0.5 / 0 / 1.0
    assert cfg.branches == BRANCHES_4
    assert torch.equal(cfg.combine(x0), cfg.combine(x0[[0, 2, 3, 4]]))
    with pytest.raises(InputError, match="3 branch predictions"):
        cfg.combine(x0[:3])
    with pytest.raises(InputError, match="4 branch predictions but expected 5"):
        CfgScales(anchor=1.0).combine(x0[:4])


def test_branch_gates() -> None:
    gates = branch_gates(BRANCHES_5)
    assert gates.audio_self.tolist() == [0, 0, 1, 0, 1]
    assert gates.audio_other.tolist() == [0, 0, 0, 1, 1]
    assert gates.anchor.tolist() == [0, 1, 0, 0, 1]
    assert branch_gates(BRANCHES_4).anchor.tolist() == [0, 0, 0, 1]


def test_euler_step_is_the_x0_line() -> None:
    z, x0 = torch.tensor([2.0]), torch.tensor([0.5])
    s = flow_match_schedule(5).sigmas
    assert torch.allclose(euler_step(z, x0, s[0], s[1]), x0 + s[1] * (z - x0), atol=1e-6)
    assert torch.allclose(euler_step(z, x0, s[4], s[5]), x0, atol=1e-6)  # σ_next = 0 lands on x0


@pytest.fixture(scope="module")
def tiny_model():
    return random_motion_generator(MotionConfig.tiny(), seed=0)


def test_sample_latent_runs_all_branches_in_one_head_call(tiny_model) -> None:
    calls: list[tuple[int, ...]] = []
    hook = tiny_model.diffusion_head.register_forward_hook(lambda m, args, out: calls.append(tuple(out.shape)))
    try:
        c_n = torch.randn(4, 512)
        trace = SampleTrace()
        with torch.inference_mode():
            latent = sample_latent(tiny_model, c_n, torch.randn(1, 512), steps=3, trace=trace)
    finally:
        hook.remove()
    assert calls == [(4, 512)] * 3
    assert latent.shape == (512,) and latent.dtype == torch.float32
    assert len(trace.z_out) == 3 and torch.equal(trace.z_out[-1], latent)
    assert torch.equal(trace.z_in[1], trace.z_out[0])


def test_one_step_returns_the_guided_x0_of_the_noise(tiny_model) -> None:
    c_n, noise = torch.randn(4, 512), torch.randn(1, 512)
    cfg = CfgScales()
    with torch.inference_mode():
        latent = sample_latent(tiny_model, c_n, noise, steps=1, cfg=cfg)
        temb = tiny_model.time_embed(torch.tensor([1000]))
        x0 = cfg.combine(tiny_model.diffusion_head(noise, c_n, temb))
    torch.testing.assert_close(latent, x0, atol=1e-5, rtol=1e-5)


def test_sample_latent_input_errors(tiny_model) -> None:
    with pytest.raises(InputError, match="c_n must be"):
        sample_latent(tiny_model, torch.randn(4, 256), torch.randn(512))
    with pytest.raises(InputError, match="noise must hold 512"):
        sample_latent(tiny_model, torch.randn(4, 512), torch.randn(1, 100))
    with pytest.raises(InputError, match="from 1 to 20"):
        sample_latent(tiny_model, torch.randn(4, 512), torch.randn(512), steps=0)
