"""One model per process: the loaded DyStream models (and prepared portraits), cached at module level.

Loading the weights takes seconds and gigabytes, so a worker loads them once, ideally in its prewarm hook:

    def prewarm(proc: JobProcess) -> None:
        dystream.load_models()          # every AvatarSession / avatar job in this process reuses it

The cache is keyed by what changes the loaded weights (checkpoint files, device, dtype, random or real, size, seed);
sampler settings such as ``steps`` do not reload anything.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from config.settings import ModelSettings, Settings, get_settings

from .log import logger

if TYPE_CHECKING:
    from avatar.models import AvatarModels

_lock = threading.Lock()
_models: dict[tuple[Any, ...], AvatarModels] = {}


def load_models(
    settings: ModelSettings | None = None,
    *,
    random_weights: bool | None = None,
    size: Literal["full", "tiny"] | None = None,
    seed: int = 0,
) -> AvatarModels:
    """The models for ``settings`` (default: the process settings), loaded on first use and then shared."""
    from avatar.models import load_avatar_models

    avatar = get_settings().avatar
    settings = settings or get_settings().model
    random_weights = avatar.random_weights if random_weights is None else random_weights
    size = size or avatar.size
    weights = () if random_weights else (str(settings.motion_checkpoint_path), str(settings.renderer_checkpoint_path))
    key = (weights, settings.device, settings.dtype, random_weights, size, seed)
    with _lock:
        if key not in _models:
            started = time.perf_counter()
            _models[key] = load_avatar_models(settings, random_weights=random_weights, size=size, seed=seed)
            logger.info(
                "avatar models loaded",
                size=size,
                random_weights=random_weights,
                device=settings.device,
                seconds=round(time.perf_counter() - started, 2),
            )
        return _models[key]


def clear_models() -> None:
    """Forget the cached models (tests; freeing GPU memory)."""
    with _lock:
        _models.clear()


def prepare_portrait(portrait: Any, models: AvatarModels, settings: Settings) -> Any:
    """The portrait's state for the engine (crop, m0, appearance volume; cached on disk by ``avatar.portrait``).

    ``portrait``: a path, a PIL image or an [H, W, 3] uint8 array; None uses ``settings.avatar.portrait``.
    """
    from avatar.portrait import prepare_portrait as prepare

    portrait = portrait if portrait is not None else settings.avatar.portrait
    if portrait is None:
        raise ValueError(
            "no portrait: pass AvatarSession(portrait=...) or set DYSTREAM_AVATAR__PORTRAIT to an image file"
        )
    return prepare(portrait, models.renderer, settings.model)
