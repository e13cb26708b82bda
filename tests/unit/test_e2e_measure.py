"""The receiver-side measurements of the end-to-end harness find what they claim, to within a few milliseconds."""

from __future__ import annotations

import numpy as np
import pytest
from livekit.plugins.dystream.diagnostics import has_beep

from bench.harness import measure
from bench.harness.browser import BrowserCall
from bench.harness.client import AttributeChange, VideoSample
from bench.harness.deployment import make_clips
from bench.harness.signals import SAMPLE_RATE, beep_starts, read_wav, reply_clip, speech_end, speech_onset
from config.settings import get_settings


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    path = get_settings().samples_dir / "dyadic_self.wav"
    assert path.is_file(), f"sample {path} missing: set DYSTREAM_SAMPLES_DIR"
    return read_wav(path)


def received(pcm: np.ndarray, start: float, chunk: int = 160, jitter_s: float = 0.0, seed: int = 0):
    """(times, samples) as the client records them: 10 ms chunks stamped on arrival, with some arrival jitter."""
    rng = np.random.default_rng(seed)
    times = []
    for i in range(0, len(pcm), chunk):
        arrival = start + i / SAMPLE_RATE + rng.uniform(0, jitter_s)
        times.append(arrival + np.arange(min(chunk, len(pcm) - i)) / SAMPLE_RATE)
    return np.concatenate(times), pcm


def test_beep_onsets_are_found_within_5_ms_in_a_reply_clip(speech: np.ndarray) -> None:
    clip = reply_clip(speech, seconds=5.0)
    times, pcm = received(clip, start=100.0, jitter_s=0.002)
    onsets = measure.audio_beep_onsets(times, pcm)
    expected = [100.0 + s for s in beep_starts(5.0)]
    assert len(onsets) == len(expected)
    assert np.abs(np.asarray(onsets) - expected).max() < 0.005


def test_flash_onsets_and_av_offsets(speech: np.ndarray) -> None:
    clip = reply_clip(speech, seconds=5.0)
    frames = clip.reshape(-1, 640)
    video_delay = 0.033
    video = [
        VideoSample(200.0 + k * 0.04 + video_delay, 128, 128, 255.0 if has_beep(f) else 0.0)
        for k, f in enumerate(frames)
    ]
    times, pcm = received(clip, start=200.0)
    offsets = measure.av_offsets_ms(measure.audio_beep_onsets(times, pcm), measure.video_flash_onsets(video))
    assert len(offsets) == len(beep_starts(5.0))
    assert all(abs(o - 33.0) < 5.0 for o in offsets), offsets


def test_speech_stop_finds_where_the_avatar_fell_silent(speech: np.ndarray) -> None:
    clip = reply_clip(speech, seconds=5.0)
    cut = int(2.3 * SAMPLE_RATE)
    pcm = np.concatenate([clip[:cut], np.zeros(2 * SAMPLE_RATE, np.int16)])
    times, pcm = received(pcm, start=10.0)
    stop = measure.speech_stop(times, pcm, after=12.25)
    assert stop is not None and abs(stop - 12.3) < 0.011
    assert measure.speech_stop(times, pcm, after=15.0) is None, "no sound ends after 15 s"


def test_video_rate_and_gaps() -> None:
    video = [VideoSample(k * 0.04, 64, 64, 0.0) for k in range(500) if k != 100]
    fps, gap = measure.video_rate(video, 1.0, 10.0)
    assert fps == pytest.approx(24.9, abs=0.11) and gap == pytest.approx(80.0, abs=0.5)
    assert measure.max_gap_ms(video, 5.0, 15.0) == pytest.approx(40.0, abs=0.5)


def test_state_lookups() -> None:
    states = [
        AttributeChange(1.0, "a", "dystream.state", "idle"),
        AttributeChange(2.0, "a", "dystream.state", "listening"),
    ]
    assert measure.state_at(states, 1.5) == "idle" and measure.state_at(states, 2.5) == "listening"
    assert measure.first_state_after(states, 1.1, {"listening", "both"}) == 2.0
    assert measure.first_state_after(states, 2.1, {"listening"}) is None


def test_the_users_utterance_begins_from_silence_and_its_onset_and_end_are_found(tmp_path) -> None:
    pcm = make_clips(get_settings().samples_dir, tmp_path).utterance
    onset = speech_onset(pcm)
    assert onset >= SAMPLE_RATE // 20, "the utterance must begin from silence, as a user's turn does"
    assert np.abs(pcm[: onset - SAMPLE_RATE // 100]).max() < 0.01 * 32768
    padded = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.int16), pcm, np.zeros(SAMPLE_RATE // 2, np.int16)])
    assert speech_onset(padded) == pytest.approx(SAMPLE_RATE // 2 + onset, abs=1)
    assert speech_end(padded) <= SAMPLE_RATE // 2 + len(pcm)


def test_a_hole_is_a_silence_between_two_sounds_not_where_the_voice_was_cut(speech: np.ndarray) -> None:
    clip = reply_clip(speech, seconds=5.0)
    times, pcm = received(clip, start=100.0)
    assert measure.largest_hole_ms(times, pcm, 100.0, 105.0) < 5.0

    holed = clip.copy()
    holed[SAMPLE_RATE : SAMPLE_RATE + SAMPLE_RATE // 20] = 0  # 50 ms of silence one second in
    times, pcm = received(holed, start=100.0)
    assert abs(measure.largest_hole_ms(times, pcm, 100.0, 105.0) - 50.0) <= 10.0

    missing = np.r_[times[:SAMPLE_RATE], times[SAMPLE_RATE + 480 :]]  # 30 ms of samples never arrived
    gapped = np.r_[pcm[:SAMPLE_RATE], pcm[SAMPLE_RATE + 480 :]]
    assert abs(measure.largest_hole_ms(missing, gapped, 100.0, 105.0) - 30.0) <= 1.0

    # a barge-in cuts the reply 30 ms into a beep: silence to the end of the window is not a hole
    cut_at = int((beep_starts(5.0)[3] + 0.03) * SAMPLE_RATE)
    cut = clip.copy()
    cut[cut_at:] = 0
    times, pcm = received(cut, start=100.0)
    window_end = 100.0 + beep_starts(5.0)[3] + 0.2
    assert measure.largest_hole_ms(times, pcm, 100.0, window_end) < 5.0


def page_export(pcm: np.ndarray, *, stall_at_s: float, stall_s: float) -> dict:
    """What the playground page exports for one call's voice: 128-sample blocks, each with the audio graph's time of
    its first sample and when that sample leaves the page's output, which stalls ``stall_s`` at ``stall_at_s``."""
    blocks = range(0, len(pcm) // 128 * 128, 128)
    context = [1000.0 * i / SAMPLE_RATE for i in blocks]
    heard = [500.0 + c + (1000.0 * stall_s if c >= 1000.0 * stall_at_s else 0.0) for c in context]
    receiver = [
        {"t": 500.0 + 500.0 * k, "received": 24000 * k, "concealed": 480 * (k >= 10), "concealments": int(k >= 10)}
        for k in range(int(len(pcm) / SAMPLE_RATE * 2))
    ]
    # the browser's playout clocks (ms of the sender's capture clock): the picture 120 ms early in the first 4 s, while
    # the receivers settle, then 20 ms early
    sync = [
        {"t": t, "audio": 9e11 + t, "video": 9e11 + t + (120.0 if t < 4000.0 else 20.0)}
        for t in (500.0 + 500.0 * k for k in range(int(len(pcm) / SAMPLE_RATE * 2)))
    ]
    return {
        "frames": [],
        "audio": {"t": heard, "context": context, "pcm": pcm[: len(context) * 128].tolist()},
        "mic": {"t": [], "context": [], "pcm": []},
        "states": [],
        "listening": [],
        "receiver": receiver,
        "sync": sync,
    }


def test_the_browser_finds_holes_in_the_voice_and_not_in_its_own_audio_output(speech: np.ndarray, tmp_path) -> None:
    clip = np.concatenate([reply_clip(speech, seconds=5.0), np.zeros(SAMPLE_RATE, np.int16)])
    stalled = BrowserCall.from_page(page_export(clip, stall_at_s=2.0, stall_s=0.05), tmp_path / "page.png")
    (reply,) = stalled.replies()
    assert reply["largest_hole_ms"] < 5.0, "a stall of the page's audio output is not a hole in the voice"
    assert reply["output_stall_ms"] == pytest.approx(50.0, abs=1.0)
    assert reply["stretch"] == pytest.approx(1.0 + 0.05 / 4.8, abs=0.002)  # heard 50 ms longer, as played

    holed = clip.copy()
    holed[2 * SAMPLE_RATE : 2 * SAMPLE_RATE + SAMPLE_RATE // 25] = 0  # 40 ms of silence two seconds in
    (reply,) = BrowserCall.from_page(page_export(holed, stall_at_s=9.0, stall_s=0.0), tmp_path / "page.png").replies()
    assert abs(reply["largest_hole_ms"] - 40.0) <= 10.0
    assert reply["output_stall_ms"] < 1.0

    concealed = stalled.receiver_concealed()  # 480 samples at 48 kHz at 5.5 s, once settled (4 s after the voice began)
    assert concealed == {
        "events": 1,
        "total_ms": pytest.approx(10.0, abs=0.5),
        "largest_ms": pytest.approx(10.0, abs=0.5),
    }


def test_the_browser_reads_its_own_lip_sync_once_settled(speech: np.ndarray, tmp_path) -> None:
    clip = np.concatenate([reply_clip(speech, seconds=5.0), np.zeros(SAMPLE_RATE, np.int16)])
    call = BrowserCall.from_page(page_export(clip, stall_at_s=9.0, stall_s=0.0), tmp_path / "page.png")
    offsets = call.playout_offsets_ms()
    settled_readings = [t for t in (500.0 + 500.0 * k for k in range(12)) if t / 1000.0 >= call.settled_from]
    assert len(offsets) == len(settled_readings) >= 3
    assert offsets == pytest.approx([-20.0] * len(offsets))  # the picture 20 ms early: negative, as av_offsets_ms
    assert call.summary()["playout_offset_ms"]["abs_p95"] == pytest.approx(20.0)
