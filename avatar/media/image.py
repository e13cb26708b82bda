"""Reading the reference portrait: a path, a PIL image or an array in, [H, W, 3] uint8 RGB out, with the EXIF
rotation applied (docs/architecture.md §2). ``PortraitError`` is the error of every step of the portrait's
preparation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from avatar.errors import InputError

PortraitInput = str | os.PathLike[str] | Image.Image | np.ndarray


class PortraitError(InputError):
    """A portrait that cannot be used; the message names it and the fix."""


def describe_source(source: PortraitInput) -> str:
    """How error messages and the cache name ``source``."""
    if isinstance(source, str | os.PathLike):
        return f"portrait {source}"
    return f"portrait ({type(source).__name__})"


def load_image(source: PortraitInput) -> np.ndarray:
    """The portrait as [H, W, 3] uint8 RGB: EXIF rotation applied; grey, RGBA, palette or 16-bit images converted."""
    what = describe_source(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, what)
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if not path.is_file():
            raise PortraitError(f"{what} does not exist or is not a file: check the path")
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise PortraitError(f"cannot read {what} ({exc}): pass a PNG, JPEG or WebP image") from exc
    else:
        raise PortraitError(f"{what}: pass an image path, a PIL image or an [H, W, 3] uint8 array")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # transparent pixels become white, as most viewers show them
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise PortraitError(f"{what} has shape {array.shape}: pass an [H, W, 3] RGB array")
    if array.dtype != np.uint8:
        raise PortraitError(f"{what} has dtype {array.dtype}: pass uint8 RGB values 0..255")
    return np.ascontiguousarray(array[:, :, :3])
