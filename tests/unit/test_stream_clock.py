"""Wall-clock pacing of the engine, on a fake clock: due times, run-ahead, re-anchoring after a stall."""

from __future__ import annotations

import threading

import pytest

from avatar.stream_clock import FrameClock


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeStop(threading.Event):
    """``wait(timeout)`` advances the fake time instead of sleeping."""

    def __init__(self, clock: FakeTime) -> None:
        super().__init__()
        self.clock = clock
        self.slept: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.slept.append(timeout)
        self.clock.t += timeout
        return self.is_set()


def test_ticks_are_due_one_period_apart_minus_the_run_ahead() -> None:
    now = FakeTime()
    clock = FrameClock(25, run_ahead_s=0.04, now=now)
    clock.start()
    stop = FakeStop(now)
    assert clock.due(0) == pytest.approx(99.96) and clock.due(10) == pytest.approx(100.36)
    for k in range(50):
        assert clock.wait(k, stop)
        assert now.t >= clock.due(k) - 1e-9  # never earlier than due
        now.t += 0.01  # the work of a tick: well inside the period
    assert now.t == pytest.approx(100.0 + 48 * 0.04 + 0.01)  # 25 ticks per second of fake time
    assert clock.late_ticks == 0 and clock.reanchors == 0


def test_a_stall_reanchors_instead_of_bursting() -> None:
    now = FakeTime()
    clock = FrameClock(25, run_ahead_s=0.0, now=now)
    clock.start()
    stop = FakeStop(now)
    assert clock.wait(0, stop)
    now.t += 0.5  # a half-second stall (12.5 periods)
    assert clock.wait(1, stop)  # late: runs at once, and the clock moves to now
    assert clock.reanchors == 1 and clock.late_ticks == 1
    stop.slept.clear()
    assert clock.wait(2, stop)
    assert stop.slept == [pytest.approx(0.04)]  # the next tick one period later, not a burst of 12 at once


def test_small_lateness_is_caught_up_without_reanchoring() -> None:
    now = FakeTime()
    clock = FrameClock(25, run_ahead_s=0.0, now=now)
    clock.start()
    stop = FakeStop(now)
    clock.wait(0, stop)
    now.t += 0.06  # 1.5 periods of work: late, but within max_late (2 periods)
    clock.wait(1, stop)
    now.t += 0.01
    clock.wait(2, stop)
    assert clock.reanchors == 0
    assert now.t == pytest.approx(clock.due(2))  # back on the original grid


def test_stop_ends_the_wait() -> None:
    now = FakeTime()
    clock = FrameClock(25, run_ahead_s=0.0, now=now)
    stop = FakeStop(now)
    stop.set()
    assert not clock.wait(5, stop)
    with pytest.raises(ValueError):
        FrameClock(0, 0.0)
