"""VAD backends on the real dyadic sample: windows, speech/silence, input handling, errors."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from livekit.plugins.dystream.vad import SileroVad, WebRtcVad, create_vad

from config.settings import VadSettings, get_settings


def read_wav(name: str) -> np.ndarray:
    path = Path(get_settings().samples_dir) / name
    assert path.is_file(), f"sample {path} is missing: set DYSTREAM_SAMPLES_DIR to the shared samples folder"
    with wave.open(str(path)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(f.readframes(f.getnframes()), np.int16)


def classify(vad, audio: np.ndarray, chunk: int = 160) -> list:
    windows = []
    for start in range(0, len(audio), chunk):
        windows += vad.push(audio[start : start + chunk])
    return windows + vad.flush()


@pytest.fixture(params=["silero", "webrtc"])
def backend(request) -> str:
    return request.param


def test_user_speech_then_digital_silence(backend: str) -> None:
    # dyadic_other.wav: the user talks for ~2.2 s, then exact zeros
    audio = read_wav("dyadic_other.wav")
    windows = classify(create_vad(VadSettings(backend=backend)), audio)
    ends = np.cumsum([len(w.samples) for w in windows]) / 16000
    speech = np.array([w.speech for w in windows])
    assert speech[(ends > 0.3) & (ends < 2.0)].mean() > 0.8
    assert not speech[ends > 2.8].any()


def test_windows_cover_the_input_exactly(backend: str) -> None:
    audio = read_wav("dyadic_self.wav")[:16000]
    vad = create_vad(VadSettings(backend=backend))
    rng = np.random.default_rng(0)
    windows, start = [], 0
    while start < len(audio):
        size = int(rng.integers(1, 900))
        windows += vad.push(audio[start : start + size])
        start += size
    windows += vad.flush()
    assert all(len(w.samples) == vad.window_samples for w in windows[:-1])
    np.testing.assert_array_equal(np.concatenate([w.samples for w in windows]), audio)


def test_chunking_does_not_change_decisions() -> None:
    audio = read_wav("dyadic_self.wav")[32000:64000]
    one = [w.probability for w in classify(SileroVad(), audio, chunk=len(audio))]
    many = [w.probability for w in classify(SileroVad(), audio, chunk=97)]
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_float_input_is_scaled_like_int16() -> None:
    audio = read_wav("dyadic_other.wav")[:16000]
    ints = [w.speech for w in classify(WebRtcVad(), audio)]
    floats = [w.speech for w in classify(WebRtcVad(), audio.astype(np.float32) / 32767.0)]
    assert ints == floats


def test_reset_drops_buffered_audio() -> None:
    vad = SileroVad()
    vad.push(np.ones(300, np.int16))
    vad.reset()
    assert vad.flush() == []


def test_bad_input_names_the_fix() -> None:
    vad = WebRtcVad()
    with pytest.raises(ValueError, match="downmix"):
        vad.push(np.zeros((320, 2), np.int16))
    with pytest.raises(ValueError, match="int16"):
        vad.push(np.zeros(320, np.int32))
    with pytest.raises(ValueError, match="WEBRTC_AGGRESSIVENESS"):
        WebRtcVad(7)


def test_silero_leaves_torch_threads_alone() -> None:
    # importing silero_vad sets torch's threads to 1 process-wide; a fresh process shows whether we undo it
    code = (
        "import torch; torch.set_num_threads(2); "
        "from livekit.plugins.dystream.vad import SileroVad; SileroVad(); print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "2"
