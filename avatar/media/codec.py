"""Media files of the offline path (docs/architecture.md §4 audio loading, §8 muxing), with PyAV.

- ``load_audio``: any audio (or video-with-audio) file PyAV can decode → float32 mono at the requested rate. Samples
  are scaled as ``librosa.load`` returns them (int16 / 32768); channels are averaged (``librosa.to_mono``), not mixed
  with ffmpeg's louder downmix matrix.
- ``write_mp4``: RGB frames (H.264, yuv420p) and one mono audio track (AAC) in an MP4 at 25 fps. The audio is trimmed
  or padded with silence to the video's duration and interleaved with it as frames arrive. The file is written to a
  temporary name in the target folder and renamed when complete; on any failure it is deleted, so the output path
  either holds a whole video or nothing.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import tempfile
import time
import wave
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avatar.errors import InputError

log = logging.getLogger(__name__)

MODEL_SAMPLE_RATE = 16_000
VIDEO_CODEC = "libx264"
AUDIO_CODEC = "aac"
X264_OPTIONS = {"crf": "18", "preset": "fast"}


class MediaError(InputError):
    """An audio or video file that cannot be read or written; the message names it and the fix."""


def _open_input(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise MediaError(f"audio file {path} does not exist: check the path")
    if path.is_dir():
        raise MediaError(f"audio path {path} is a folder: pass an audio file (wav, mp3, flac, m4a, ...)")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(
            f"cannot read audio file {path} ({exc}): it is not a media file PyAV/ffmpeg can decode; "
            "convert it to WAV, FLAC or MP3"
        ) from exc


def decode_audio(path: str | os.PathLike[str], sample_rate: int | None = MODEL_SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """The first audio stream of ``path`` as float32 mono samples, and their rate.

    ``sample_rate`` None keeps the file's own rate; otherwise the audio is resampled to it.
    """
    path = Path(path).expanduser()
    with _open_input(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path} has no audio stream: pass a file that contains audio")
        stream = container.streams.audio[0]
        rate = int(sample_rate or stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise MediaError(f"{path}: the audio stream has no sample rate; convert the file to WAV first")
        resampler: av.AudioResampler | None = None
        chunks: list[np.ndarray] = []

        def take(frames: list[av.AudioFrame]) -> None:
            for frame in frames:
                chunks.append(frame.to_ndarray().reshape(len(frame.layout.channels), -1).mean(axis=0))

        try:
            for frame in container.decode(stream):
                if resampler is None:
                    # planar float at the target rate, channels kept: they are averaged above
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=rate)
                take(resampler.resample(frame))
            if resampler is not None:
                take(resampler.resample(None))
        except (av.FFmpegError, ValueError) as exc:
            raise MediaError(f"cannot decode the audio of {path} ({exc}): the file is damaged or truncated") from exc
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise MediaError(f"{path} contains no audio samples: pass a non-empty audio file")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    _warn_if_truncated(path, len(samples) / rate)
    return samples, rate


TRUNCATION_TOLERANCE_S = 0.02


def _warn_if_truncated(path: Path, decoded_s: float) -> None:
    """A WAV whose header promises more audio than the file holds was cut short (an interrupted copy or
    download): ffmpeg decodes what is there without a word, so say it."""
    try:
        with wave.open(str(path), "rb") as wav:  # the header's data size, not what follows it
            promised_s = wav.getnframes() / wav.getframerate()
    except (wave.Error, EOFError, OSError, ZeroDivisionError):
        return  # not a PCM WAV: no header to compare with
    if decoded_s < promised_s - TRUNCATION_TOLERANCE_S:
        log.warning(
            "audio file is truncated: using the audio it holds; copy or export it again for the whole",
            extra={"file": str(path), "header_s": round(promised_s, 2), "holds_s": round(decoded_s, 2)},
        )


def load_audio(path: str | os.PathLike[str], sample_rate: int = MODEL_SAMPLE_RATE) -> np.ndarray:
    """Float32 mono samples of ``path`` at ``sample_rate`` (16 kHz by default: what the model reads)."""
    return decode_audio(path, sample_rate)[0]


STALE_TEMP_S = 600.0  # a temporary file of ours untouched this long belongs to a run that was killed


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Make sure an MP4 can be written at ``path`` before any long work starts; nothing is created here."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise MediaError(f"output {path} is a folder: pass a file name such as {path / 'out.mp4'}")
    if path.suffix.lower() != ".mp4":
        raise MediaError(f"output {path} must end in .mp4: the video is written as MP4 (H.264 + AAC)")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise MediaError(f"cannot write the output {path} ({existing} is not a writable folder): choose another")
    return path


def _remove_stale_temps(folder: Path, name: str) -> None:
    """Temporary files an earlier, killed write of ``name`` left in ``folder``."""
    now = time.time()
    for stale in folder.glob(f".{glob.escape(name)}.*.mp4.tmp"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > STALE_TEMP_S:
                stale.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _AudioTrack:
    """Feeds the audio encoder in step with the video, so that the track ends exactly where the video does."""

    def __init__(self, container: av.container.OutputContainer, audio: np.ndarray, sample_rate: int) -> None:
        self.stream = container.add_stream(AUDIO_CODEC, rate=sample_rate, layout="mono")
        self.container = container
        self.audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        self.rate = sample_rate
        self.written = 0

    def write_until(self, end: int) -> None:
        """Encode samples [written, end); past the end of the given audio, silence."""
        if end <= self.written:
            return
        chunk = self.audio[self.written : end]
        if len(chunk) < end - self.written:
            chunk = np.pad(chunk, (0, end - self.written - len(chunk)))
        frame = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.written
        frame.time_base = Fraction(1, self.rate)
        self.container.mux(self.stream.encode(frame))
        self.written = end

    def flush(self) -> None:
        self.container.mux(self.stream.encode(None))


def write_mp4(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    audio: np.ndarray,
    sample_rate: int,
    fps: int = 25,
) -> int:
    """Write ``frames`` ([H,W,3] uint8 RGB, all the same size) and ``audio`` (mono float) to an MP4 at ``path``.

    Returns the number of frames written. The audio is cut or padded with silence to ``frames / fps`` seconds.
    """
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MediaError(f"cannot create the folder of {path} ({exc.strerror or exc}): choose another") from exc
    _remove_stale_temps(path.parent, path.stem)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    count = 0
    try:
        with av.open(tmp_name, mode="w", format="mp4") as container:
            video: av.video.stream.VideoStream | None = None
            track: _AudioTrack | None = None
            for frame in frames:
                frame = np.asarray(frame)
                if video is None:
                    video = _add_video_stream(container, frame, fps)
                    track = _AudioTrack(container, audio, sample_rate)
                elif frame.shape != (video.height, video.width, 3):
                    raise ValueError(
                        f"frame {count} has shape {frame.shape}; expected {(video.height, video.width, 3)}"
                    )
                picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
                picture.pts = count
                container.mux(video.encode(picture))
                count += 1
                track.write_until(count * sample_rate // fps)
            if video is None or track is None:
                raise InputError(f"no frames to write to {path}: the audio is too short to give a frame")
            container.mux(video.encode(None))
            track.flush()
        tmp.chmod(0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("video written", extra={"path": str(path), "frames": count, "fps": fps, "seconds": round(count / fps, 2)})
    return count


def _add_video_stream(
    container: av.container.OutputContainer, frame: np.ndarray, fps: int
) -> av.video.stream.VideoStream:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frames must be [H,W,3] uint8 RGB arrays, got shape {frame.shape} dtype {frame.dtype}")
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 (yuv420p) needs even frame sizes, got {width}x{height}")
    stream = container.add_stream(VIDEO_CODEC, rate=fps, options=dict(X264_OPTIONS))
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = Fraction(1, fps)
    return stream
