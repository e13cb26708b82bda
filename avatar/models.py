"""The two networks of DyStream loaded together: the motion generator and the LIA renderer.

Real weights come from the paths in ``settings.model`` (``download-files`` fetches them). Random weights build an
untrained model of the full or the tiny size, so that the whole pipeline runs on a machine without weights; its output
is noise shaped like a face video, which the log says loudly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from avatar.errors import InputError
from avatar.motion.checkpoints import load_motion_generator, random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.precision import Precision
from avatar.renderer import Renderer, RendererConfig, load_renderer, random_renderer
from avatar.settings import ModelSettings
from avatar.weights.reader import GET_WEIGHTS

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
Size = Literal["full", "tiny"]


@dataclass
class AvatarModels:
    """The loaded networks and where they run."""

    motion: MotionGenerator
    renderer: Renderer
    device: torch.device
    dtype: torch.dtype
    random_weights: bool = False
    size: Size = "full"


def resolve_device(name: str) -> torch.device:
    """``name`` as a torch device, or a clear error when it is not available here."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {name!r} asked for, but no CUDA GPU is available: use --device cpu (DYSTREAM_MODEL__DEVICE)"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {name!r}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {name!r} asked for, but MPS is not available: use --device cpu")
    return device


def weights_file(path: Path) -> Path:
    """``path``'s ``.safetensors`` sibling when it is present (tensors only, nothing to unpickle), else ``path``."""
    path = Path(path).expanduser()
    converted = path.with_suffix(".safetensors")
    return converted if converted.is_file() else path


def weights_present(settings: ModelSettings) -> bool:
    """Whether both checkpoints (or their ``.safetensors`` conversions) are on disk."""
    paths = (settings.motion_checkpoint_path, settings.renderer_checkpoint_path)
    return all(weights_file(path).is_file() for path in paths)


def load_avatar_models(
    settings: ModelSettings, *, random_weights: bool = False, size: Size = "full", seed: int = 0
) -> AvatarModels:
    """The motion generator and the renderer on ``settings.device`` in ``settings.dtype``.

    ``random_weights``: untrained models of ``size`` ("full": the official sizes, "tiny": small, fast, 128 px frames)
    seeded with ``seed``. Otherwise the official weights at ``settings.motion_checkpoint_path`` and
    ``settings.renderer_checkpoint_path`` (full size only).
    """
    if size not in ("full", "tiny"):
        raise InputError(f"model size {size!r} is unknown: use full or tiny")
    device = resolve_device(settings.device)
    dtype = DTYPES[settings.dtype]
    Precision(settings.precision, device)  # the TF32 switches of this process
    if random_weights:
        motion_config, renderer_config = (
            (MotionConfig.tiny(), RendererConfig.tiny()) if size == "tiny" else (MotionConfig(), RendererConfig())
        )
        log.warning(
            "RANDOM WEIGHTS: the avatar model is untrained and its video will not look like the portrait; "
            "run `python -m agent download-files` and drop --random-weights for the real model",
            extra={"size": size, "seed": seed},
        )
        motion = random_motion_generator(motion_config, seed=seed, device=device, dtype=dtype)
        renderer = random_renderer(renderer_config, seed=seed, device=device, dtype=dtype)
        return AvatarModels(motion, renderer, device, dtype, random_weights=True, size=size)
    if size != "full":
        raise InputError("the tiny model exists only with random weights: add --random-weights, or use --size full")
    motion_path = weights_file(settings.motion_checkpoint_path)
    renderer_path = weights_file(settings.renderer_checkpoint_path)
    missing = [str(p) for p in (motion_path, renderer_path) if not p.exists()]
    if missing:
        raise InputError(
            f"DyStream weights not found ({', '.join(missing)}): {GET_WEIGHTS}; or set "
            "DYSTREAM_MODEL__CHECKPOINTS_DIR (--checkpoints) to where they are; or try --random-weights"
        )
    motion = load_motion_generator(motion_path, device=device, dtype=dtype)
    renderer = load_renderer(renderer_path, device=device, dtype=dtype)
    if motion.config.face_dim != renderer.config.latent_dim:
        raise InputError(
            f"motion latent size {motion.config.face_dim} ({motion_path}) differs from the renderer's "
            f"{renderer.config.latent_dim} ({renderer_path}): the two checkpoints do not belong together"
        )
    return AvatarModels(motion, renderer, device, dtype, random_weights=False, size="full")
