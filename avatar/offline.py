"""Whole-clip motion generation, the official offline path (docs/architecture.md §4–§5, ``Audio2FaceGPT.inference``).

1. Pad both streams to the same length (the shorter one with trailing zeros; no listener → zeros), prepend 94
   frames of silence (94·640 samples), normalise each whole stream, append 80 zeros, encode each stream once and
   bring it to 25 fps: t = N // 640 feature frames.
2. Fuse the audio of every frame for every CFG branch.
3. Start from 94 copies of m0 and, for generated frame j = 0 … t − 96, run the transformer on the last 94 latents
   with the audio of clip frames j+1 … j+94, sample the next latent from noise row j, and append it.

Output frame j lines up with the input audio at [40 j, 40 j + 40) ms; there are floor(N / 640) − 1 frames for N input
samples.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from avatar.errors import InputError
from avatar.motion.audio import SAMPLES_PER_FRAME, input_values, to_25fps
from avatar.motion.generator import MotionGenerator
from avatar.sampling.cfg import CfgScales, branch_gates
from avatar.sampling.sampler import SampleTrace, check_steps, sample_latent

NoiseSource = np.ndarray | torch.Tensor | Callable[[int], torch.Tensor]


@dataclass
class GenerationTrace:
    """Per generated frame: transformer output at the last position, c_n, and the latent after each step."""

    last_hidden: list[torch.Tensor] = field(default_factory=list)
    cn: list[torch.Tensor] = field(default_factory=list)
    z_out: list[torch.Tensor] = field(default_factory=list)


def num_output_frames(num_samples: int) -> int:
    """Frames generated for ``num_samples`` input samples at 16 kHz: floor(N / 640) − 1."""
    return num_samples // SAMPLES_PER_FRAME - 1


def _as_mono(audio: np.ndarray | None, name: str) -> np.ndarray | None:
    if audio is None:
        return None
    x = np.asarray(audio)
    if x.ndim != 1:
        raise InputError(f"{name} must be 1-D mono samples at 16 kHz, got shape {x.shape}: downmix/resample first")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{name} must be float samples in [-1, 1] (int16 / 32768), got dtype {x.dtype}")
    return x.astype(np.float32, copy=False)


def pair_streams(audio_self: np.ndarray, audio_other: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Both streams at the same length: the shorter one gets trailing zeros; a missing listener is silence."""
    self_ = _as_mono(audio_self, "audio_self")
    other = _as_mono(audio_other, "audio_other")
    if self_ is None:
        raise InputError("audio_self is required (the avatar's own voice; zeros for a listening-only clip)")
    if other is None:
        other = np.zeros_like(self_)
    n = max(len(self_), len(other))
    return np.pad(self_, (0, n - len(self_))), np.pad(other, (0, n - len(other)))


def clip_features(model: MotionGenerator, audio_self: np.ndarray, audio_other: np.ndarray) -> torch.Tensor:
    """25 fps features [2, t, A] (self, other) of equal-length streams, with the 94-frame silent prefix."""
    prefix = np.zeros(model.config.context * SAMPLES_PER_FRAME, dtype=np.float32)
    feats = []
    for encoder, stream in ((model.audio_encoder_face, audio_self), (model.audio_encoder_face_other, audio_other)):
        values = torch.from_numpy(input_values(np.concatenate([prefix, stream])))
        feat50 = encoder(values[None].to(device=model.device, dtype=model.dtype))
        feats.append(to_25fps(feat50)[0])
    return torch.stack(feats)


def _noise_getter(
    noise: NoiseSource | None, seed: int | None, frames: int, face_dim: int, device: torch.device
) -> Callable[[int], torch.Tensor]:
    if callable(noise):
        return noise
    if noise is not None:
        table = torch.as_tensor(np.asarray(noise, dtype=np.float32) if isinstance(noise, np.ndarray) else noise)
        if table.ndim != 2 or table.shape[0] < frames or table.shape[1] != face_dim:
            raise InputError(f"noise must be [frames >= {frames}, {face_dim}], got shape {tuple(table.shape)}")
        return lambda j: table[j]
    generator = torch.Generator(device).manual_seed(int(seed) if seed is not None else secrets.randbits(63))
    return lambda j: torch.randn(face_dim, generator=generator, device=device)


@torch.inference_mode()
def generate(
    model: MotionGenerator,
    audio_self: np.ndarray,
    audio_other: np.ndarray | None,
    m0: torch.Tensor,
    *,
    steps: int = 5,
    cfg: CfgScales | None = None,
    noise: NoiseSource | None = None,
    seed: int | None = None,
    progress: bool = False,
    trace: GenerationTrace | None = None,
) -> torch.Tensor:
    """Motion latents [T, F] for a whole clip, T = floor(len / 640) − 1 (len of the longer unpadded stream).

    ``m0`` [1, F] (or [F]) is the portrait's motion latent: the anchor and the initial history. ``noise``: a
    [T, F] table or ``f(j) -> [F]`` giving the start latent of frame j; else drawn from a generator seeded with
    ``seed`` (row j = j-th draw), so a run is replayable. ``audio_other=None`` means a silent listener.
    """
    cfg = cfg or CfgScales()
    steps = check_steps(steps)
    audio_self, audio_other = pair_streams(audio_self, audio_other)
    frames = num_output_frames(len(audio_self))
    if frames < 1:
        raise InputError(
            f"audio is too short: {len(audio_self)} samples give no frame; pass at least "
            f"{2 * SAMPLES_PER_FRAME} samples (80 ms at 16 kHz)"
        )
    config = model.config
    m0 = torch.as_tensor(m0).reshape(1, -1).to(device=model.device, dtype=model.dtype)
    if m0.shape[1] != config.face_dim:
        raise InputError(f"m0 must be one motion latent of {config.face_dim} values, got shape {tuple(m0.shape)}")
    next_noise = _noise_getter(noise, seed, frames, config.face_dim, model.device)

    feats = clip_features(model, audio_self, audio_other)
    branches = cfg.branches
    fused = model.fuse(feats[0], feats[1], branches)  # [B, t, H]; clip frame r in column r
    anchor_gate = branch_gates(branches, device=model.device, dtype=model.dtype).anchor
    context = config.context
    history = m0.expand(context, -1).clone()
    out = torch.empty(frames, config.face_dim, dtype=torch.float32, device=model.device)
    for j in tqdm(range(frames), desc="motion", unit="frame", disable=not progress):
        hidden = model.last_hidden(history, fused[:, j + 1 : j + 1 + context], m0, anchor_gate)
        c_n = model.output_proj(model.output_norm(hidden))
        step_trace = SampleTrace() if trace is not None else None
        latent = sample_latent(model, c_n, next_noise(j), steps, cfg, step_trace)
        out[j] = latent
        history = torch.cat([history[1:], latent[None].to(history.dtype)])
        if trace is not None and step_trace is not None:
            trace.last_hidden.append(hidden.float().cpu())
            trace.cn.append(c_n.float().cpu())
            trace.z_out.append(torch.stack(step_trace.z_out).cpu())
    return out
