"""The offline path end to end: one portrait and one or two voices → one MP4 (docs/architecture.md §2, §4, §5, §8).

1. Portrait → crop, m0 and the appearance volume (``avatar.media.portrait``, cached).
2. Self and other audio → 16 kHz mono; no other track means a silent listener.
3. Whole-clip motion generation (``avatar.offline.generate``): floor(N / 640) − 1 latents.
4. Each latent is rendered with the FIRST generated latent as the flow source (official ``app.py``), a few at a time.
5. Frames and audio are muxed at 25 fps: the mix if given, else self + other summed, cut to the video's length.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avatar.media.codec import MODEL_SAMPLE_RATE, check_writable, decode_audio, load_audio, write_mp4
from avatar.media.face_crop import crop_portrait
from avatar.media.image import PortraitInput
from avatar.media.portrait import prepare_portrait
from avatar.models import AvatarModels
from avatar.offline import generate
from avatar.renderer import to_uint8
from avatar.sampling.cfg import CfgScales
from avatar.settings import ModelSettings

log = logging.getLogger(__name__)

FPS = 25
RENDER_BATCH = 4  # frames rendered at once: bounds the activations held in memory


@dataclass(frozen=True)
class RenderResult:
    """What was written."""

    out: Path
    frames: int
    size: int  # frames are size x size
    fps: int
    duration_s: float
    audio: str  # "mix", "self+other" or "self"
    seconds: float  # wall time of the whole render
    portrait_cached: bool


def render_frames(
    models: AvatarModels, latents: torch.Tensor, f_app: torch.Tensor, batch: int = RENDER_BATCH, progress: bool = True
) -> Iterator[np.ndarray]:
    """[H, W, 3] uint8 frames for ``latents`` [T, 512]; the flow source is the first latent (official app.py)."""
    renderer = models.renderer
    source = latents[:1]
    with tqdm(total=len(latents), desc="render", unit="frame", disable=not progress) as bar:
        for start in range(0, len(latents), batch):
            chunk = latents[start : start + batch]
            yield from to_uint8(renderer.render(source, chunk, f_app))
            bar.update(len(chunk))


def _soundtrack(
    audio_self: np.ndarray, audio_other: np.ndarray | None, mix: str | os.PathLike[str] | None
) -> tuple[np.ndarray, int, str]:
    if mix is not None:
        samples, rate = decode_audio(mix, sample_rate=None)
        return samples, rate, "mix"
    if audio_other is None:
        return audio_self, MODEL_SAMPLE_RATE, "self"
    n = max(len(audio_self), len(audio_other))
    summed = np.pad(audio_self, (0, n - len(audio_self))) + np.pad(audio_other, (0, n - len(audio_other)))
    return summed, MODEL_SAMPLE_RATE, "self+other"


def check_inputs(
    image: PortraitInput,
    audio_self: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: ModelSettings,
    *,
    audio_other: str | os.PathLike[str] | None = None,
    audio_mix: str | os.PathLike[str] | None = None,
    crop: bool = True,
    size: int = 512,
) -> None:
    """Every input of ``render_video`` read once (seconds at most), so that a bad one fails before the models load."""
    check_writable(out)
    for path in (audio_self, audio_other, audio_mix):
        if path is not None:
            load_audio(path)
    crop_portrait(image, settings, size, crop=crop)


def render_video(
    image: PortraitInput,
    audio_self: str | os.PathLike[str],
    out: str | os.PathLike[str],
    models: AvatarModels,
    settings: ModelSettings,
    *,
    audio_other: str | os.PathLike[str] | None = None,
    audio_mix: str | os.PathLike[str] | None = None,
    steps: int | None = None,
    seed: int | None = None,
    crop: bool = True,
    progress: bool = True,
    batch: int = RENDER_BATCH,
) -> RenderResult:
    """Render ``image`` speaking ``audio_self`` (and listening to ``audio_other``) into the MP4 ``out``.

    ``steps`` and ``seed`` default to ``settings.steps`` / ``settings.seed``; CFG scales come from ``settings``.
    Inputs are all checked before the long work starts; ``out`` appears only when the video is complete.
    """
    started = time.perf_counter()
    out = check_writable(out)
    voice = load_audio(audio_self)
    listener = load_audio(audio_other) if audio_other is not None else None
    track, track_rate, track_kind = _soundtrack(voice, listener, audio_mix)
    portrait = prepare_portrait(image, models.renderer, settings, crop=crop)
    log.info(
        "render started",
        extra={
            "out": str(out),
            "seconds_of_audio": round(
                max(len(voice), len(listener) if listener is not None else 0) / MODEL_SAMPLE_RATE, 2
            ),
            "listener": listener is not None,
            "soundtrack": track_kind,
            "random_weights": models.random_weights,
        },
    )
    latents = generate(
        models.motion,
        voice,
        listener,
        portrait.m0,
        steps=steps if steps is not None else settings.steps,
        cfg=CfgScales.from_settings(settings),
        seed=seed if seed is not None else settings.seed,
        progress=progress,
    )
    f_app = portrait.f_app.to(models.renderer.device, models.renderer.dtype)
    frames = write_mp4(out, render_frames(models, latents, f_app, batch, progress), track, track_rate, fps=FPS)
    result = RenderResult(
        out=out,
        frames=frames,
        size=models.renderer.config.image_size,
        fps=FPS,
        duration_s=frames / FPS,
        audio=track_kind,
        seconds=time.perf_counter() - started,
        portrait_cached=portrait.cached,
    )
    log.info("render finished", extra={"out": str(out), "frames": frames, "seconds": round(result.seconds, 1)})
    return result
