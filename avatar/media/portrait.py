"""The reference portrait, prepared once: face crop, m0 and the appearance volume, cached on disk
(docs/architecture.md §2).

``prepare_portrait`` reads the image (``image``), crops the face as the official code does (``face_crop``), runs
``Renderer.encode_portrait`` once per (cropped image, renderer weights) and keeps the result in
``settings.model.portrait_cache_dir`` (``portrait_cache``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from avatar.media.face_crop import crop_portrait
from avatar.media.image import PortraitInput, describe_source
from avatar.media.portrait_cache import PortraitCache, cache_key

if TYPE_CHECKING:
    from avatar.renderer import Renderer
    from avatar.settings import ModelSettings

log = logging.getLogger(__name__)


@dataclass
class PortraitState:
    """What the avatar needs of its portrait, computed once: the crop, its motion latent m0 and appearance volume."""

    image: np.ndarray  # [S, S, 3] uint8 RGB, the renderer's input
    m0: torch.Tensor  # [1, 512] float32 motion latent (anchor and initial history)
    f_app: torch.Tensor  # [1, 32, 16, S/8, S/8] float32 appearance volume
    key: str = ""  # cache key: hash of the crop and of the renderer weights
    cached: bool = False  # True when m0 and f_app were read from the cache


def to_model_input(image: np.ndarray) -> torch.Tensor:
    """[S, S, 3] uint8 → [1, 3, S, S] float32 in [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``)."""
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    return (x - 0.5) / 0.5


def prepare_portrait(
    source: PortraitInput,
    renderer: Renderer,
    settings: ModelSettings,
    *,
    crop: bool = True,
    use_cache: bool = True,
) -> PortraitState:
    """Crop ``source`` (path, PIL image or [H, W, 3] uint8 array) and encode it with ``renderer``, through the cache."""
    size = renderer.config.image_size
    image = crop_portrait(source, settings, size, crop=crop)
    key = cache_key(image, renderer)
    cache = PortraitCache(settings.portrait_cache_dir)
    if use_cache and (hit := cache.load(key)) is not None:
        m0, f_app = hit
        log.info("portrait from cache", extra={"key": key, "folder": str(cache.folder)})
        return PortraitState(image=image, m0=m0, f_app=f_app, key=key, cached=True)
    m0, f_app = renderer.encode_portrait(to_model_input(image))
    m0 = m0.detach().to("cpu", torch.float32)
    f_app = f_app.detach().to("cpu", torch.float32)
    if use_cache:
        source_name = str(source) if isinstance(source, str | os.PathLike) else describe_source(source)
        cache.store(key, image, m0, f_app, source_name)
    log.info("portrait encoded", extra={"key": key, "size": size})
    return PortraitState(image=image, m0=m0, f_app=f_app, key=key, cached=False)
