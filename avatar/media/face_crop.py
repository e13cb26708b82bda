"""The official face crop of the reference portrait (official ``app.py process_image``; docs/architecture.md §2):

1. MediaPipe FaceLandmarker (478 landmarks, IMAGE mode, confidences 0.5) on the RGB image. Up to two faces are
   looked for, so that a picture with several people is an error rather than a silent choice.
2. Face box = min/max of all landmarks in pixels (normalised coordinates clipped to [0, 1], times w / h, cast to int);
   centre = integer midpoint; side = int(1.6 × the longer box side).
3. The square [centre − side//2, centre + side//2) is copied into a black side × side canvas (anything outside the
   image stays black; for an odd side the last row and column stay black too).
4. Bicubic resize with antialias to the renderer size on the [0, 1] tensor (torchvision ``Resize(512, BICUBIC)``),
   normalised to [-1, 1], mapped back to [0, 1], clipped and cast to uint8 by truncation: the official
   ``X_resize.png``. This image, normalised to [-1, 1], is what the renderer encodes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from avatar.media.image import PortraitError, PortraitInput, describe_source, load_image

if TYPE_CHECKING:
    from avatar.settings import ModelSettings

CROP_SCALE = 1.6  # official union_bbox_scale
MIN_SIDE = 64  # smaller images hold too few pixels for a face the renderer can use
MAX_DETECT_SIDE = 2048  # larger images are shrunk for detection only; landmarks are normalised coordinates
MAX_FACES = 2  # look for two so that "several faces" can be reported
CONFIDENCE = 0.5
LANDMARKS = 478
GET_LANDMARKER = "run `python -m agent download-files` to fetch it, or set DYSTREAM_MODEL__FACE_LANDMARKER to the file"


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
    what = describe_source(source)
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
