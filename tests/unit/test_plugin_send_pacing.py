"""SendPacer: the agent's speech leaves for a remote avatar worker at most the lead ahead of real time."""

from __future__ import annotations

import asyncio

from livekit.plugins.dystream.send_pacing import SendPacer

FRAME_S = 0.02


class FakeClock:
    """Time moves only when the pacer sleeps, or when the test says so."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def waits(clock: FakeClock) -> list[float]:
    return [s for s in clock.sleeps if s > 1e-9]  # not float rounding


def send(pacer: SendPacer, clock: FakeClock, seconds: float) -> list[float]:
    """Send ``seconds`` of speech in 20 ms frames as fast as allowed; how far ahead of real time each frame left."""
    leads = []

    async def run() -> None:
        started = None
        sent = 0.0
        for _ in range(round(seconds / FRAME_S)):
            if started is None:
                started = clock.now()
            leads.append(sent - (clock.now() - started))
            await pacer.sent(FRAME_S)
            sent += FRAME_S

    asyncio.run(run())
    return leads


def test_a_reply_leaves_at_real_time_rate_the_lead_ahead() -> None:
    clock = FakeClock()
    pacer = SendPacer(0.5, now=clock.now, sleep=clock.sleep)
    leads = send(pacer, clock, 3.0)
    # the first half second at once, then frame by frame: never more than the lead ahead, never behind it
    assert max(leads) <= 0.5 + 1e-9
    assert min(leads[round(0.5 / FRAME_S) :]) >= 0.5 - FRAME_S - 1e-9
    assert len(waits(clock)) == round(2.5 / FRAME_S)  # a wait per frame after the lead
    assert abs((clock.t - 100.0) - 2.5) < 1e-6  # 3 s of speech took 2.5 s to hand over


def test_a_sender_behind_real_time_is_not_held_back() -> None:
    clock = FakeClock()
    pacer = SendPacer(0.5, now=clock.now, sleep=clock.sleep)

    async def slow_tts() -> None:
        for _ in range(50):
            await pacer.sent(FRAME_S)
            clock.t += 2 * FRAME_S  # the TTS makes 20 ms of speech in 40 ms

    asyncio.run(slow_tts())
    assert waits(clock) == []


def test_each_segment_counts_from_its_own_first_frame() -> None:
    clock = FakeClock()
    pacer = SendPacer(0.5, now=clock.now, sleep=clock.sleep)
    send(pacer, clock, 1.0)
    clock.t += 30.0  # the user talks for a while
    pacer.restart()  # the next reply (or an interruption)
    clock.sleeps.clear()
    leads = send(pacer, clock, 1.0)
    # without the restart the 30 s pause would let the whole reply out at once; with it, the lead again
    assert max(leads) <= 0.5 + 1e-9 and len(waits(clock)) == round(0.5 / FRAME_S)
