"""Wall-clock pacing of the engine's timeline, on a fake clock: due times, lateness, re-anchoring after a stall."""

from __future__ import annotations

import pytest

from avatar.stream.clock import FrameClock


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def run_tick(clock: FrameClock, now: FakeTime, k: int) -> None:
    """What the engine's clock task does: wait the delay (here: advance the fake time), then take tick k."""
    delay = clock.delay(k)
    if delay > 0:
        now.t += delay


def test_ticks_are_due_one_period_apart() -> None:
    now = FakeTime()
    clock = FrameClock(25, now=now)
    clock.start()
    assert clock.due(0) == pytest.approx(100.0) and clock.due(10) == pytest.approx(100.4)
    for k in range(50):
        run_tick(clock, now, k)
        assert now.t >= clock.due(k) - 1e-9  # never earlier than due
        now.t += 0.01  # the work of a tick: well inside the period
    assert now.t == pytest.approx(100.0 + 49 * 0.04 + 0.01)  # 25 ticks per second of fake time
    assert clock.late_ticks == 0 and clock.reanchors == 0


def test_a_clock_aligned_to_another_timeline_ticks_in_phase_with_it() -> None:
    now = FakeTime()
    first = FrameClock(25, now=now)
    first.start()
    now.t += 0.513  # a second conversation starts later, between two of the first one's ticks
    second = FrameClock(25, now=now)
    second.start(aligned_to=first.due(0))
    assert second.due(0) == pytest.approx(first.due(13))  # its first tick waits for the first one's next (7 ms)
    assert second.due(5) == pytest.approx(first.due(18))
    third = FrameClock(25, now=now)
    third.start(aligned_to=now.t)  # on a tick of the timeline: due at once
    assert third.due(0) == pytest.approx(now.t)


def test_a_stall_reanchors_instead_of_bursting() -> None:
    now = FakeTime()
    clock = FrameClock(25, now=now)
    clock.start()
    run_tick(clock, now, 0)
    now.t += 0.5  # a half-second stall (12.5 periods)
    assert clock.delay(1) == 0.0  # late: at once, and the clock moves to now
    assert clock.reanchors == 1 and clock.late_ticks == 1
    assert clock.delay(2) == pytest.approx(0.04)  # the next tick one period later, not a burst of 12 at once


def test_small_lateness_is_caught_up_without_reanchoring() -> None:
    now = FakeTime()
    clock = FrameClock(25, now=now)
    clock.start()
    run_tick(clock, now, 0)
    now.t += 0.07  # tick 1 is 0.75 periods late: within max_late (2 periods)
    assert clock.delay(1) < 0
    run_tick(clock, now, 2)
    assert clock.reanchors == 0 and clock.late_ticks == 1
    assert now.t == pytest.approx(clock.due(2))  # back on the original grid


def test_fps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameClock(0)
