"""The reference portrait: face crop, m0 and the appearance volume, cached on disk (docs/architecture.md §2).

Crop (official ``app.py process_image``):
1. MediaPipe FaceLandmarker (478 landmarks, IMAGE mode, confidences 0.5) on the RGB image. Up to two faces are
   looked for, so that a picture with several people is an error rather than a silent choice.
2. Face box = min/max of all landmarks in pixels (normalised coordinates clipped to [0, 1], times w / h, cast to int);
   centre = integer midpoint; side = int(1.6 × the longer box side).
3. The square [centre − side//2, centre + side//2) is copied into a black side × side canvas (anything outside the
   image stays black; for an odd side the last row and column stay black too).
4. Bicubic resize with antialias to the renderer size on the [0, 1] tensor (torchvision ``Resize(512, BICUBIC)``),
   normalised to [-1, 1], mapped back to [0, 1], clipped and cast to uint8 by truncation: the official
   ``X_resize.png``. This image, normalised to [-1, 1], is what the renderer encodes.

``prepare_portrait`` runs ``Renderer.encode_portrait`` once per (cropped image, renderer weights) and keeps the result
in ``settings.model.portrait_cache_dir``: ``<key>.npz`` in the official layout (``motion_latent`` [1, 512],
``mask_img_path``, ``ref_img_path``, ``video_id``), ``<key>.f_app.safetensors`` (the appearance volume) and
``<key>_resize.png`` (the crop). Every file is written atomically; the npz is written last and marks a whole entry.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from avatar.errors import InputError
from avatar.weights.reader import save_safetensors

if TYPE_CHECKING:
    from avatar.renderer import Renderer
    from avatar.settings import ModelSettings

log = logging.getLogger(__name__)

CROP_SCALE = 1.6  # official union_bbox_scale
MIN_SIDE = 64  # smaller images hold too few pixels for a face the renderer can use
MAX_DETECT_SIDE = 2048  # larger images are shrunk for detection only; landmarks are normalised coordinates
MAX_FACES = 2  # look for two so that "several faces" can be reported
CONFIDENCE = 0.5
LANDMARKS = 478
GET_LANDMARKER = "run `python -m agent download-files` to fetch it, or set DYSTREAM_MODEL__FACE_LANDMARKER to the file"

PortraitInput = str | os.PathLike[str] | Image.Image | np.ndarray


class PortraitError(InputError):
    """A portrait that cannot be used; the message names it and the fix."""


@dataclass
class PortraitState:
    """What the avatar needs of its portrait, computed once: the crop, its motion latent m0 and appearance volume."""

    image: np.ndarray  # [S, S, 3] uint8 RGB, the renderer's input
    m0: torch.Tensor  # [1, 512] float32 motion latent (anchor and initial history)
    f_app: torch.Tensor  # [1, 32, 16, S/8, S/8] float32 appearance volume
    key: str = ""  # cache key: hash of the crop and of the renderer weights
    cached: bool = False  # True when m0 and f_app were read from the cache


# ---------------------------------------------------------------------------------------------------- reading images
def _describe(source: PortraitInput) -> str:
    if isinstance(source, str | os.PathLike):
        return f"portrait {source}"
    return f"portrait ({type(source).__name__})"


def load_image(source: PortraitInput) -> np.ndarray:
    """The portrait as [H, W, 3] uint8 RGB: EXIF rotation applied; grey, RGBA, palette or 16-bit images converted."""
    what = _describe(source)
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


# ---------------------------------------------------------------------------------------------------- face detection
def _landmarker_path(settings: ModelSettings) -> Path:
    path = Path(settings.face_landmarker_path).expanduser()
    if not path.is_file():
        raise PortraitError(f"MediaPipe face landmarker model not found at {path}: {GET_LANDMARKER}")
    return path


_detect_lock = threading.Lock()


def detect_faces(image: np.ndarray, model_path: str | os.PathLike[str]) -> list[np.ndarray]:
    """Landmarks of up to two faces in ``image`` ([H, W, 3] uint8), each [478, 2] normalised (x, y) in [0, 1]."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    height, width = image.shape[:2]
    if max(height, width) > MAX_DETECT_SIDE:
        scale = MAX_DETECT_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=MAX_FACES,
        min_face_detection_confidence=CONFIDENCE,
        min_face_presence_confidence=CONFIDENCE,
        min_tracking_confidence=CONFIDENCE,
    )
    with _detect_lock:
        try:
            landmarker = vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise PortraitError(
                f"cannot load the face landmarker model {model_path} ({exc}): {GET_LANDMARKER}"
            ) from exc
        with landmarker:
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    return [np.array([(p.x, p.y) for p in face], dtype=np.float64) for face in result.face_landmarks]


def face_box(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in pixels: min/max of all landmarks, clipped to the image, cast to int."""
    points = np.clip(landmarks, 0.0, 1.0)
    xs = (points[:, 0] * width).astype(np.int64)
    ys = (points[:, 1] * height).astype(np.int64)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def square_crop(image: np.ndarray, box: tuple[int, int, int, int], scale: float = CROP_SCALE) -> np.ndarray:
    """The ×``scale`` square around the box centre, black where it leaves the image (official layout)."""
    left, top, right, bottom = box
    side = int(max(right - left, bottom - top) * scale)
    half = side // 2
    cx, cy = (left + right) // 2, (top + bottom) // 2
    x0, y0 = cx - half, cy - half
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    height, width = image.shape[:2]
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(cx + half, width), min(cy + half, height)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return canvas


def resize_like_official(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``Resize(size, BICUBIC)`` (antialias) of the [0, 1] tensor, then the official round trip to uint8
    through [-1, 1] with truncation."""
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    h, w = x.shape[-2:]
    short, long = min(h, w), max(h, w)
    target = (size, size * long // short) if h <= w else (size * long // short, size)
    y = F.interpolate(x, size=target, mode="bicubic", antialias=True, align_corners=False)
    y = (y - 0.5) / 0.5
    y = ((y + 1) / 2).clamp(0, 1)
    return (y[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()


def crop_portrait(source: PortraitInput, settings: ModelSettings, size: int = 512, *, crop: bool = True) -> np.ndarray:
    """The renderer's input image [size, size, 3] uint8 for ``source``.

    ``crop`` False: ``source`` is already a square face crop; it is only resized to ``size``.
    """
    what = _describe(source)
    image = load_image(source)
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise PortraitError(
            f"{what} is {width}x{height} pixels: use a photo at least {MIN_SIDE}x{MIN_SIDE} (512+ is best)"
        )
    if not crop:
        if height != width:
            raise PortraitError(
                f"{what} is {width}x{height}, not square: without the face crop (--no-crop) pass a square portrait, "
                "or let the face crop run"
            )
        return image if height == size else resize_like_official(image, size)
    faces = detect_faces(image, _landmarker_path(settings))
    if not faces:
        raise PortraitError(
            f"no face found in {what}: use a photo with one clearly visible, roughly frontal face "
            "(or --no-crop for an already cropped portrait)"
        )
    if len(faces) > 1:
        raise PortraitError(f"several faces found in {what}: crop the image to the one person the avatar should be")
    return resize_like_official(square_crop(image, face_box(faces[0], width, height)), size)


def to_model_input(image: np.ndarray) -> torch.Tensor:
    """[S, S, 3] uint8 → [1, 3, S, S] float32 in [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``)."""
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    return (x - 0.5) / 0.5


# ---------------------------------------------------------------------------------------------------- the cache
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
        source_name = str(source) if isinstance(source, str | os.PathLike) else _describe(source)
        cache.store(key, image, m0, f_app, source_name)
    log.info("portrait encoded", extra={"key": key, "size": size})
    return PortraitState(image=image, m0=m0, f_app=f_app, key=key, cached=False)
