"""Sampling one motion latent (docs/architecture.md §7): FlowMatchEuler steps with classifier-free guidance.

The schedule is diffusers' ``FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1)`` after
``set_timesteps(S)``: timesteps ``linspace(1000, 1, S)`` (float64), σ = t/1000 as float32, a final σ = 0, and the
integer timesteps ``int64(σ·1000)`` given to the time embedding. Each step predicts x0 for every CFG branch in one
batched call of the flow head, combines them (``CfgScales.combine``), and moves z along the Euler line:
``v = (z − x0)/(σ + 1e-9)``, ``z ← z + (σ_next − σ)·v``. The last step (σ_next = 0) returns x0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from avatar.errors import InputError
from avatar.sampling.cfg import CfgScales

if TYPE_CHECKING:
    from avatar.motion.generator import MotionGenerator

MIN_STEPS, MAX_STEPS = 1, 20
NUM_TRAIN_TIMESTEPS = 1000
SIGMA_EPS = 1e-9


@dataclass(frozen=True)
class Schedule:
    timesteps: torch.Tensor  # [S] int64, what the time embedding sees
    sigmas: torch.Tensor  # [S + 1] float32, ending with 0

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not MIN_STEPS <= steps <= MAX_STEPS:
        raise InputError(f"sampler steps must be an integer from {MIN_STEPS} to {MAX_STEPS}, got {steps!r}")
    return int(steps)


def flow_match_schedule(steps: int) -> Schedule:
    """Timesteps and sigmas of ``steps`` FlowMatchEuler steps (S=5 → t = 1000, 750, 500, 250, 1)."""
    steps = check_steps(steps)
    sigma_min = float(np.float32(1.0 / NUM_TRAIN_TIMESTEPS))  # the float32 σ of training timestep 1
    t = np.linspace(1.0 * NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, steps)
    sigmas = torch.from_numpy(t / NUM_TRAIN_TIMESTEPS).to(torch.float32)
    timesteps = (sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    return Schedule(timesteps=timesteps, sigmas=torch.cat([sigmas, torch.zeros(1)]))


def euler_step(z: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One FlowMatchEuler step from an x0 prediction: ``z + (σ_next − σ) · (z − x0) / (σ + 1e-9)``."""
    velocity = (z - x0) / (sigma + SIGMA_EPS)
    return z + (sigma_next - sigma) * velocity


@functools.cache
def _on_device(steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps and sigmas of ``steps`` on ``device``, made once: a frame copies nothing from the host."""
    schedule = flow_match_schedule(steps)
    with torch.inference_mode(False):  # kept tensors: usable in and out of inference mode
        return schedule.timesteps.to(device), schedule.sigmas.to(device)


@dataclass
class SampleTrace:
    """Per-step internals of one sampled latent (for parity checks and debugging)."""

    temb: torch.Tensor | None = None
    z_in: list[torch.Tensor] = field(default_factory=list)
    x0_branches: list[torch.Tensor] = field(default_factory=list)
    z_out: list[torch.Tensor] = field(default_factory=list)


@torch.inference_mode()
def sample_latent(
    model: MotionGenerator,
    c_n: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 5,
    cfg: CfgScales | None = None,
    trace: SampleTrace | None = None,
) -> torch.Tensor:
    """Sample the next motion latent [F] (float32) from the per-branch conditions ``c_n`` [B, F].

    ``noise`` [1, F] (or [F]) is the start latent at σ = 1. ``c_n`` rows follow ``cfg.branches`` (5 rows are also
    accepted when the anchor branch is skipped). Of ``model`` only ``config.face_dim``, ``time_embed`` and
    ``diffusion_head`` are used, so a stand-in with those works too.
    """
    return sample_latents(model, c_n, noise.reshape(1, -1), steps, cfg, trace)[0]


@torch.inference_mode()
def sample_latents(
    model: MotionGenerator,
    c_n: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 5,
    cfg: CfgScales | None = None,
    trace: SampleTrace | None = None,
) -> torch.Tensor:
    """``sample_latent`` for N sessions at once: ``c_n`` [N·B, F] (session-major: the B branch rows of session 0,
    then of session 1, …), ``noise`` [N, F] → latents [N, F]. One flow-head call per step covers every session and
    branch; each session's latent is the one it gets alone."""
    cfg = cfg or CfgScales()
    face_dim = model.config.face_dim
    if c_n.ndim != 2 or c_n.shape[1] != face_dim:
        raise InputError(f"c_n must be [branches, {face_dim}], got {tuple(c_n.shape)}")
    z = noise.to(device=c_n.device, dtype=torch.float32)
    sessions = z.shape[0]
    if z.ndim != 2 or z.shape[1] != face_dim:
        raise InputError(f"noise must hold {face_dim} values (one latent), got shape {tuple(noise.shape)}")
    if c_n.shape[0] % sessions:
        raise InputError(f"c_n has {c_n.shape[0]} rows, not a whole number of branches for {sessions} sessions")
    branches = c_n.shape[0] // sessions
    timesteps, sigmas = _on_device(steps, c_n.device)
    temb = model.time_embed(timesteps)
    if trace is not None:
        trace.temb = temb
    for s in range(steps):
        # one session: its z broadcasts over the branches, as in the official sampler
        z_rows = z if sessions == 1 else z[:, None].expand(-1, branches, -1).reshape(-1, face_dim)
        x0_branches = model.diffusion_head(z_rows.to(c_n.dtype), c_n, temb[s : s + 1]).float()
        x0 = cfg.combine(x0_branches.view(sessions, branches, face_dim).transpose(0, 1))
        z_in, z = z, euler_step(z, x0, sigmas[s], sigmas[s + 1])
        if trace is not None:
            trace.z_in.append(z_in[0])
            trace.x0_branches.append(x0_branches)
            trace.z_out.append(z[0])
    return z
