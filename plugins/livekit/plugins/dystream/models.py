"""One model per process: the loaded DyStream models (and prepared portraits), cached at module level, and the
engine built from them for one portrait (``build_engine``), which both modes use.

Loading the weights takes seconds and gigabytes, so a worker loads them once, ideally in its prewarm hook:

    def prewarm(proc: JobProcess) -> None:
        dystream.load_models()          # every AvatarSession / avatar job in this process reuses it

The cache is keyed by what changes the loaded weights (checkpoint files, device, dtype, random or real, size, seed);
sampler settings such as ``steps`` do not reload anything.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np

from avatar.settings import ModelSettings

from .errors import DyStreamException
from .log import logger
from .settings import DyStreamSettings, read_settings

if TYPE_CHECKING:
    from PIL import Image

    from avatar.models import AvatarModels

PortraitInput: TypeAlias = "str | os.PathLike[str] | np.ndarray | Image.Image"

_lock = threading.Lock()
_models: dict[tuple[Any, ...], AvatarModels] = {}


def load_models(
    settings: ModelSettings | None = None,
    *,
    random_weights: bool | None = None,
    size: Literal["full", "tiny"] | None = None,
    seed: int = 0,
) -> AvatarModels:
    """The models for ``settings``, loaded on first use and then shared; what is not given comes from the
    environment (``DYSTREAM_MODEL__*``, ``DYSTREAM_AVATAR__RANDOM_WEIGHTS``, ``DYSTREAM_AVATAR__SIZE``)."""
    from avatar.models import load_avatar_models

    if settings is None or random_weights is None or size is None:
        environment = read_settings()
        settings = settings or environment.model
        random_weights = environment.avatar.random_weights if random_weights is None else random_weights
        size = size or environment.avatar.size
    weights = () if random_weights else (str(settings.motion_checkpoint_path), str(settings.renderer_checkpoint_path))
    key = (weights, settings.device, settings.dtype, random_weights, size, seed)
    with _lock:
        if key not in _models:
            started = time.perf_counter()
            _models[key] = load_avatar_models(settings, random_weights=random_weights, size=size, seed=seed)
            logger.info(
                "avatar models loaded",
                extra={
                    "size": size,
                    "random_weights": random_weights,
                    "device": settings.device,
                    "seconds": round(time.perf_counter() - started, 2),
                },
            )
        return _models[key]


def clear_models() -> None:
    """Forget the cached models (tests; freeing GPU memory)."""
    with _lock:
        _models.clear()


def prepare_portrait(portrait: PortraitInput | None, models: AvatarModels, settings: DyStreamSettings) -> Any:
    """The portrait's state for the engine (crop, m0, appearance volume; cached on disk by ``avatar.media.portrait``).

    ``portrait``: a path, a PIL image or an [H, W, 3] uint8 array; None uses ``settings.avatar.portrait``.
    """
    from avatar.media.portrait import prepare_portrait as prepare

    portrait = portrait if portrait is not None else settings.avatar.portrait
    if portrait is None:
        raise DyStreamException(
            "no portrait: pass AvatarSession(portrait=...) or set DYSTREAM_AVATAR__PORTRAIT to an image file"
        )
    return prepare(portrait, models.renderer, settings.model)


async def build_engine(
    portrait: PortraitInput | None, settings: DyStreamSettings, *, models: AvatarModels | None = None
) -> tuple[Any, tuple[int, int]]:
    """An ``AvatarStream`` for ``portrait`` with ``models`` (default: the process's cached ones, ``load_models``),
    and its video size (width, height)."""
    from avatar.stream.engine import AvatarStream

    avatar = settings.avatar
    if models is None:
        models = await asyncio.to_thread(
            load_models, settings.model, random_weights=avatar.random_weights, size=avatar.size
        )
    state = await asyncio.to_thread(prepare_portrait, portrait, models, settings)
    engine = AvatarStream(
        models.motion,
        models.renderer,
        state,
        stream=settings.stream,
        model=settings.model,
        noise_seed=settings.model.seed,
    )
    size = models.renderer.config.image_size  # frames are square, the renderer's output size
    return engine, (size, size)
