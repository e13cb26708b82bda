"""The on-disk cache of encoded portraits (docs/architecture.md §2), in ``settings.model.portrait_cache_dir``.

One entry per (cropped image, renderer weights): ``<key>.npz`` in the official layout (``motion_latent`` [1, 512],
``mask_img_path``, ``ref_img_path``, ``video_id``), ``<key>.f_app.safetensors`` (the appearance volume) and
``<key>_resize.png`` (the crop). Every file is written atomically; the npz is written last and marks a whole entry.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from avatar.media.image import PortraitError
from avatar.weights.reader import save_safetensors

if TYPE_CHECKING:
    from avatar.renderer import Renderer

log = logging.getLogger(__name__)

_fingerprints: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def renderer_fingerprint(renderer: Renderer) -> str:
    """SHA-256 over every tensor of the renderer (names, shapes, dtypes, values), computed once per instance."""
    known = _fingerprints.get(renderer)
    if known is not None:
        return known
    digest = hashlib.sha256()
    for name, tensor in renderer.state_dict().items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    _fingerprints[renderer] = fingerprint = digest.hexdigest()
    return fingerprint


def cache_key(image: np.ndarray, renderer: Renderer) -> str:
    """Hash of the cropped image and of the renderer weights: a random and a real renderer never share an entry."""
    digest = hashlib.sha256()
    digest.update(f"{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    digest.update(renderer_fingerprint(renderer).encode())
    return digest.hexdigest()[:32]


def read_motion_latent(path: str | os.PathLike[str]) -> np.ndarray:
    """m0 [1, 512] float32 from an official ``.npz`` (``motion_latent``, or row 0 of ``random_data``)."""
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as data:
            key = "motion_latent" if "motion_latent" in data.files else "random_data"
            if key not in data.files:
                raise PortraitError(f"{path} has neither 'motion_latent' nor 'random_data': is it a DyStream npz?")
            latent = np.asarray(data[key], dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise PortraitError(f"cannot read the motion latent npz {path} ({exc})") from exc
    latent = latent.reshape(-1, latent.shape[-1])[:1]
    if latent.shape[0] != 1:
        raise PortraitError(f"{path}: '{key}' is empty")
    return latent


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_motion_npz(path: Path, m0: np.ndarray, image_path: Path, ref_img_path: str, video_id: str) -> None:
    """The official portrait npz: ``motion_latent`` [1, 512], ``mask_img_path``, ``ref_img_path``, ``video_id``."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        motion_latent=np.asarray(m0, dtype=np.float32).reshape(1, -1),
        mask_img_path=np.array(str(image_path)),
        ref_img_path=np.array(ref_img_path),
        video_id=np.array(video_id),
    )
    _atomic_write(path, buffer.getvalue())


class PortraitCache:
    """m0 and f_app per cache key, in ``folder``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        return self.folder / f"{key}.npz", self.folder / f"{key}.f_app.safetensors", self.folder / f"{key}_resize.png"

    def load(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        npz, volume, _ = self.paths(key)
        if not (npz.is_file() and volume.is_file()):
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            m0 = torch.from_numpy(read_motion_latent(npz))
            f_app = load_file(str(volume))["f_app"]
        except (PortraitError, SafetensorError, OSError, KeyError) as exc:
            log.warning("portrait cache entry unreadable, recomputing", extra={"key": key, "error": str(exc)})
            return None
        return m0, f_app

    def store(self, key: str, image: np.ndarray, m0: torch.Tensor, f_app: torch.Tensor, source: str) -> None:
        npz, volume, png = self.paths(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            _atomic_write(png, buffer.getvalue())
            save_safetensors({"f_app": f_app}, volume)
            write_motion_npz(npz, m0.numpy(), png, source, key)  # last: marks the entry complete
        except OSError as exc:
            log.warning("portrait cache not written", extra={"folder": str(self.folder), "error": str(exc)})
