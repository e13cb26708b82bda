"""The streaming engine's audio inputs: segment bookkeeping of the agent's speech, the user's jitter buffer."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.errors import InputError
from avatar.stream.queues import (
    FRAME_SAMPLES,
    LiveBuffer,
    SampleFifo,
    SelfQueue,
    SelfQueueFull,
    as_float_pcm,
    to_int16,
)

LOOKAHEAD = 960  # 60 ms


def _speech(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, n, dtype=np.int16) | 1  # never 0, so padding is visible


def _drain(queue: SelfQueue, ticks: int) -> list:
    return [queue.take() for _ in range(ticks)]


def test_fifo_reads_across_chunks() -> None:
    fifo = SampleFifo()
    for start in range(0, 100, 7):
        fifo.push(np.arange(start, min(start + 7, 100), dtype=np.float32))
    assert fifo.size == 100
    np.testing.assert_array_equal(fifo.peek(10), np.arange(10))
    np.testing.assert_array_equal(fifo.read(30), np.arange(30))
    np.testing.assert_array_equal(fifo.read(50), np.arange(30, 80))
    assert fifo.drop(5) == 5
    np.testing.assert_array_equal(fifo.read(1000), np.arange(85, 100))
    assert fifo.size == 0 and fifo.read(3).size == 0


def test_pcm_conversion_round_trips_int16_and_rejects_bad_input() -> None:
    pcm = _speech(1000)
    np.testing.assert_array_equal(to_int16(as_float_pcm(pcm, "x")), pcm)
    assert as_float_pcm(np.full((5, 1), 0.5, np.float32), "x").shape == (5,)
    with pytest.raises(InputError, match="1-D mono"):
        as_float_pcm(np.zeros((10, 2), np.float32), "self audio")
    with pytest.raises(InputError, match="NaN"):
        as_float_pcm(np.array([0.0, np.nan], np.float32), "other audio")
    with pytest.raises(InputError, match="int16 or float32"):
        as_float_pcm(np.zeros(4, np.int32), "self audio")


@pytest.mark.parametrize("length", [640 * 7, 640 * 7 + 123, 50])
def test_segment_plays_all_its_audio_640_per_frame_then_ends(length: int) -> None:
    queue = SelfQueue(LOOKAHEAD, 16000 * 10)
    pcm = _speech(length)
    segment = queue.push(pcm[: length // 2])
    assert queue.push(pcm[length // 2 :]) == segment
    queue.end_segment()
    ticks = _drain(queue, length // FRAME_SAMPLES + 3)
    speaking = [t for t in ticks if t.speaking]
    assert all(t.audio.shape == (FRAME_SAMPLES,) and t.segment_id == segment for t in speaking)
    played = to_int16(np.concatenate([t.audio for t in speaking]))
    expected = np.zeros(-(-length // FRAME_SAMPLES) * FRAME_SAMPLES, np.int16)
    expected[:length] = pcm
    np.testing.assert_array_equal(played, expected)  # the pushed audio, zero-padded to whole frames
    assert [t.segment_end for t in ticks].count(True) == 1 and speaking[-1].segment_end
    assert all(not t.speaking and t.segment_id is None for t in ticks[len(speaking) :])


def test_segment_waits_for_first_frame_plus_lookahead_then_underruns_with_silence() -> None:
    queue = SelfQueue(LOOKAHEAD, 16000 * 10)
    pcm = _speech(FRAME_SAMPLES + LOOKAHEAD)
    segment = queue.push(pcm[:FRAME_SAMPLES])
    idle = queue.take()
    assert not idle.speaking and idle.segment_id is None  # 40 ms queued, lookahead missing: not yet
    np.testing.assert_array_equal(to_int16(idle.lookahead[:FRAME_SAMPLES]), pcm[:FRAME_SAMPLES])  # peeks at it
    queue.push(pcm[FRAME_SAMPLES:])
    first = queue.take()
    assert first.speaking and first.segment_id == segment
    np.testing.assert_array_equal(to_int16(first.audio), pcm[:FRAME_SAMPLES])
    np.testing.assert_array_equal(to_int16(first.lookahead), pcm[FRAME_SAMPLES:])
    queue.take()  # 320 samples left, segment still open: underrun
    underrun = queue.take()
    assert underrun.segment_id == segment and not underrun.speaking and not underrun.audio.any()
    queue.end_segment()
    tail = queue.take()
    assert tail.speaking and tail.segment_end and tail.audio[:320].all() and not tail.audio[320:].any()


def test_each_tick_shows_what_is_queued_past_the_models_lookahead_without_waiting_for_it() -> None:
    foresight = 4 * FRAME_SAMPLES
    queue = SelfQueue(LOOKAHEAD, 16000 * 10, foresight=foresight)
    pcm = _speech(FRAME_SAMPLES + LOOKAHEAD + 700)
    queue.push(pcm)
    first = queue.take()
    assert first.speaking, "a segment starts on its first frame and the model's lookahead, not on the foresight"
    assert first.ahead.shape == (foresight,) and first.lookahead.shape == (LOOKAHEAD,)
    np.testing.assert_array_equal(to_int16(first.ahead[: LOOKAHEAD + 700]), pcm[FRAME_SAMPLES:])
    assert not first.ahead[LOOKAHEAD + 700 :].any(), "zeros where nothing is queued yet"
    np.testing.assert_array_equal(first.lookahead, first.ahead[:LOOKAHEAD])


def test_lookahead_crosses_into_the_next_queued_segment() -> None:
    queue = SelfQueue(LOOKAHEAD, 16000 * 10)
    a, b = _speech(FRAME_SAMPLES + 100, 1), _speech(3 * FRAME_SAMPLES, 2)
    queue.push(a)
    queue.end_segment()
    second = queue.push(b)
    queue.end_segment()
    first = queue.take()
    # after the first frame: a's 100 samples, its zero padding to a whole frame, then b
    expected = np.concatenate([a[FRAME_SAMPLES:], np.zeros(540, np.int16), b[: LOOKAHEAD - 640]])
    np.testing.assert_array_equal(to_int16(first.lookahead), expected)
    assert queue.take().segment_end
    nxt = queue.take()
    assert nxt.speaking and nxt.segment_id == second


def test_end_after_everything_played_gives_a_silent_end_frame() -> None:
    queue = SelfQueue(0, 16000)
    segment = queue.push(_speech(FRAME_SAMPLES))
    assert queue.take().speaking
    assert not queue.take().speaking  # open, nothing queued
    queue.end_segment()
    end = queue.take()
    assert end.segment_end and end.segment_id == segment and not end.speaking


def test_clear_drops_everything_now_and_next_push_opens_a_new_segment() -> None:
    queue = SelfQueue(LOOKAHEAD, 16000 * 10)
    segment = queue.push(_speech(16000))
    queue.take()
    assert queue.clear() == segment
    assert queue.queued == 0
    tick = queue.take()
    assert not tick.speaking and tick.segment_id is None and not tick.audio.any()
    assert queue.clear() is None
    assert queue.push(_speech(100)) == segment + 1


def test_self_queue_is_bounded() -> None:
    queue = SelfQueue(LOOKAHEAD, 16000)
    queue.push(_speech(12000))
    with pytest.raises(SelfQueueFull, match="MAX_QUEUED_SELF_S"):
        queue.push(_speech(8000))
    assert queue.queued == 12000


def test_live_buffer_takes_the_frame_that_ends_lookahead_before_the_live_edge() -> None:
    live = LiveBuffer(LOOKAHEAD, max_backlog=3200)
    audio = (np.arange(1, 4001) % 1000).astype(np.float32) / 1000
    live.push(audio[:2000])
    tick = live.take()
    # 2000 received, 1600 needed: 400 beyond need stay as backlog (within max_backlog)
    np.testing.assert_array_equal(tick.audio, audio[:640])
    np.testing.assert_array_equal(tick.lookahead, audio[640:1600])
    assert tick.span == (0, 640) and tick.inserted == 0
    assert tick.lag_ms == pytest.approx((2000 - 640) / 16)


def test_live_buffer_starvation_inserts_zeros_and_keeps_the_lookahead_real() -> None:
    live = LiveBuffer(LOOKAHEAD, max_backlog=3200)
    nothing = live.take()
    assert not nothing.audio.any() and nothing.span == (0, 0) and nothing.inserted == FRAME_SAMPLES
    audio = np.linspace(0.1, 0.9, 1200, dtype=np.float32)
    live.push(audio)  # 1200 < 1600 needed: 400 zeros go in front, the rest stays ahead as lookahead
    tick = live.take()
    assert tick.inserted == 400 and not tick.audio[:400].any()
    np.testing.assert_array_equal(tick.audio[400:], audio[:240])
    np.testing.assert_array_equal(tick.lookahead, audio[240:1200])
    assert tick.span == (0, 240) and tick.lag_ms == pytest.approx(60)
    assert live.inserted_total == 640 + 400


def test_live_buffer_burst_drops_the_oldest_to_bound_the_delay() -> None:
    live = LiveBuffer(LOOKAHEAD, max_backlog=3200)
    audio = np.linspace(-1, 1, 16000, dtype=np.float32)
    live.push(audio)  # one second at once
    tick = live.take()
    assert tick.dropped == 16000 - 1600
    np.testing.assert_array_equal(tick.audio, audio[-1600:-960])  # the newest audio, lookahead behind the edge
    assert tick.span == (14400, 15040) and tick.lag_ms == pytest.approx(60)
    live.push(audio[:3000])  # within max_backlog beyond need: kept
    assert live.take().dropped == 0


def test_a_prebuffer_holds_a_reply_until_that_much_more_has_come() -> None:
    queue = SelfQueue(lookahead=960, max_queued=16000 * 10, prebuffer=3200)  # 200 ms
    queue.push(np.ones(640 + 960 + 3199, np.float32) * 0.1)
    assert not queue.take().speaking  # 1 sample short of the first 40 ms + lookahead + prebuffer
    queue.push(np.ones(1, np.float32) * 0.1)
    assert queue.take().speaking
