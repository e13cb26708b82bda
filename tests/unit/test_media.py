"""Audio decoding (any format/rate → 16 kHz mono) and MP4 muxing (whole file or nothing), on the shared samples."""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from avatar.errors import InputError
from avatar.media.codec import MediaError, decode_audio, load_audio, write_mp4
from avatar.offline import num_output_frames
from config.settings import get_settings


def sample(name: str) -> Path:
    path = get_settings().samples_dir / name
    assert path.is_file(), f"shared sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared/samples folder"
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """int16 wav; ``samples`` [n] or [n, channels] in [-1, 1]."""
    data = np.asarray(samples).reshape(len(samples), -1)
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(data.shape[1])
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def probe(path: Path) -> dict[str, float]:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        info = {
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "fps": float(video.average_rate),
            "video_codec": video.codec_context.name,
            "audio_codec": audio.codec_context.name,
            "audio_rate": audio.codec_context.sample_rate,
        }
        info["frames"] = sum(1 for _ in container.decode(video=0))
        container.seek(0)
        info["audio_samples"] = sum(frame.samples for frame in container.decode(audio=0))
    return info


def test_16k_wav_is_read_exactly_as_int16_over_32768() -> None:
    path = sample("dyadic_self.wav")
    with wave.open(str(path)) as fh:
        raw = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == (151_144,)
    np.testing.assert_array_equal(audio, raw.astype(np.float32) / 32768)
    assert num_output_frames(len(audio)) == 235


def test_44k_stereo_is_resampled_and_downmixed_to_16k_mono() -> None:
    audio = load_audio(sample("speech_44k_stereo.wav"))
    native, rate = decode_audio(sample("speech_44k_stereo.wav"), sample_rate=None)
    assert rate == 44_100 and native.ndim == 1
    assert audio.ndim == 1 and abs(len(audio) - len(native) * 16_000 / 44_100) <= 2
    assert num_output_frames(len(audio)) == 373
    assert 0.01 < float(np.sqrt(np.mean(audio**2))) < 1.0


def test_channels_are_averaged_not_summed(tmp_path: Path) -> None:
    left = 0.5 * np.sin(np.linspace(0, 200 * np.pi, 16_000))
    path = write_wav(tmp_path / "left_only.wav", np.stack([left, np.zeros_like(left)], axis=1), 16_000)
    expected = (np.clip(left, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32768 / 2
    np.testing.assert_allclose(load_audio(path), expected, atol=1e-6)


def test_resampling_keeps_a_tone(tmp_path: Path) -> None:
    t = np.arange(44_100) / 44_100
    path = write_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 44_100)
    audio = load_audio(path)
    assert abs(len(audio) - 16_000) <= 2
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(audio)) / 16_000)
    middle = slice(200, len(audio) - 200)  # away from the resampler's edges
    assert np.max(np.abs(audio[middle] - expected[middle])) < 0.01


def test_unreadable_audio_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "voice.wav"
    junk.write_bytes(b"this is not audio" * 100)
    with pytest.raises(MediaError, match=r"cannot (read|decode).*voice\.wav"):
        load_audio(junk)
    with pytest.raises(MediaError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(sample("portrait_512.png"))
    assert issubclass(MediaError, InputError)


def test_a_truncated_wav_is_reported_with_both_durations(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = write_wav(tmp_path / "whole.wav", np.sin(np.arange(32000) / 10.0) * 0.5, 16000)  # 2 s
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 10720])  # the header still promises 2 s; 0.67 s follow it
    caplog.set_level(logging.INFO, logger="avatar.media.codec")
    assert len(load_audio(whole)) == 32000
    assert not [record for record in caplog.records if record.levelno == logging.WARNING]
    audio = load_audio(cut)
    assert len(audio) == 10720  # what it holds is used
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert "truncated" in warning.getMessage() and warning.file == str(cut)
    assert (warning.header_s, warning.holds_s) == (2.0, 0.67)


def frames_of(count: int, size: tuple[int, int] = (64, 96)) -> list[np.ndarray]:
    h, w = size
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    return [np.broadcast_to((ramp + 4 * i) % 256, (h, w, 3)).astype(np.uint8) for i in range(count)]


@pytest.mark.parametrize("audio_seconds", [0.5, 1.2, 3.0])
def test_mp4_has_the_frames_and_audio_cut_or_padded_to_the_video(tmp_path: Path, audio_seconds: float) -> None:
    out = tmp_path / "clip.mp4"
    audio = 0.3 * np.sin(np.linspace(0, 2000 * np.pi, int(audio_seconds * 16_000))).astype(np.float32)
    frames = frames_of(30)
    assert write_mp4(out, iter(frames), audio, 16_000, fps=25) == 30
    info = probe(out)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (30, 96, 64, 25.0)
    assert (info["video_codec"], info["audio_codec"], info["audio_rate"]) == ("h264", "aac", 16_000)
    # 30 frames = 1.2 s; AAC ends on a 1024-sample packet: within one video frame (640 samples)
    assert abs(info["audio_samples"] - 1.2 * 16_000) <= 640 + 1024
    with av.open(str(out)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(first.astype(int) - frames[0].astype(int)).mean() < 4  # H.264 at crf 18 on a smooth ramp


def test_failed_write_leaves_no_file_and_keeps_an_old_one(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"previous video")

    def broken():
        yield from frames_of(5)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_mp4(out, broken(), np.zeros(16_000, np.float32), 16_000)
    assert out.read_bytes() == b"previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"], "temporary files were left behind"

    with pytest.raises(InputError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", iter([]), np.zeros(16_000, np.float32), 16_000)
    assert not (tmp_path / "empty.mp4").exists()


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(MediaError, match="cannot write the output"):
        write_mp4(blocker / "out.mp4", iter(frames_of(2)), np.zeros(1600, np.float32), 16_000)
    with pytest.raises(MediaError, match="is a folder"):
        write_mp4(tmp_path, iter(frames_of(2)), np.zeros(1600, np.float32), 16_000)
