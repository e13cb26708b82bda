"""FrameSlots: the picture at each slot of the audio's clock, with made-up times: on time, late (dropped, the last
one repeated), rendering every other tick, slots bunched after a jump, and an interruption."""

from __future__ import annotations

import pytest
from livekit.plugins.dystream.pacer import FrameSlots

P = 0.04


def test_pictures_on_time_are_shown_at_their_slots() -> None:
    slots: FrameSlots[str] = FrameSlots(P)
    shown, last = [], None
    for k in range(5):
        slots.add_slot(k, 10.0 + k * P)
        slots.add_picture(k, f"p{k}")
        at = slots.next_at(last, now=9.9)
        assert at == pytest.approx(10.0 + k * P)
        shown.append(slots.take(at))
        last = at
    assert shown == ["p0", "p1", "p2", "p3", "p4"]
    assert (slots.shown, slots.repeated, slots.dropped) == (5, 0, 0)


def test_a_late_picture_is_dropped_and_the_last_one_repeated_meanwhile() -> None:
    slots: FrameSlots[str] = FrameSlots(P)
    for k in range(4):
        slots.add_slot(k, 10.0 + k * P)
    slots.add_picture(0, "p0")
    assert slots.take(10.0) == "p0"
    assert slots.take(10.04) == "p0"  # picture 1 is not there: repeat, the track keeps its rate
    slots.add_picture(1, "p1")  # too late: its audio has been heard
    slots.add_picture(3, "p3")
    assert slots.take(10.08) == "p0"
    assert slots.take(10.12) == "p3"
    assert (slots.shown, slots.repeated, slots.dropped) == (2, 2, 1)


def test_rendering_every_other_tick_repeats_each_picture_once() -> None:
    slots: FrameSlots[str] = FrameSlots(P)
    out = []
    for k in range(6):
        slots.add_slot(k, 10.0 + k * P)
        if k % 2 == 0:
            slots.add_picture(k, f"p{k}")
        out.append(slots.take(10.0 + k * P))
    assert out == ["p0", "p0", "p2", "p2", "p4", "p4"]
    assert (slots.shown, slots.repeated, slots.dropped) == (3, 3, 0)


def test_bunched_slots_show_the_newest_picture_and_keep_the_spacing() -> None:
    slots: FrameSlots[str] = FrameSlots(P)
    for k in range(3):  # three ticks whose audio leaves at nearly the same time (the queue had run dry)
        slots.add_slot(k, 10.0 + k * 0.005)
        slots.add_picture(k, f"p{k}")
    at = slots.next_at(9.99, now=9.99)
    assert at == pytest.approx(9.99 + 0.5 * P)  # not sooner than half a period after the last capture
    assert slots.take(at) == "p2"  # the newest due picture; the older ones are dropped
    assert slots.dropped == 2
    assert slots.next_at(at, now=at) == pytest.approx(at + P)  # nothing due: one period on, a repeat
    assert slots.take(at + P) == "p2"


def test_an_interruption_drops_the_pending_slots_and_their_pictures_never_show() -> None:
    slots: FrameSlots[str] = FrameSlots(P)
    for k in range(4):
        slots.add_slot(k, 10.0 + k * P)
        slots.add_picture(k, f"p{k}")
    assert slots.take(10.0) == "p0"
    slots.clear()  # the speech audio of ticks 1-3 was dropped
    assert slots.take(10.04) == "p0"  # the last picture stays
    slots.add_slot(4, 10.29)
    slots.add_picture(4, "p4")
    # the video keeps its period while the new slot is far, then meets it with a single longer interval
    assert slots.next_at(10.04, now=10.04) == pytest.approx(10.04 + P)
    assert slots.take(10.08) == "p0"
    assert slots.next_at(10.08, now=10.08) == pytest.approx(10.08 + P)
    assert slots.take(10.12) == "p0"
    assert slots.next_at(10.12, now=10.12) == pytest.approx(10.16)
    assert slots.take(10.16) == "p0"
    assert slots.next_at(10.16, now=10.16) == pytest.approx(10.16 + P)
    assert slots.take(10.2) == "p0"
    assert slots.next_at(10.2, now=10.2) == pytest.approx(10.24)
    assert slots.take(10.24) == "p0"
    assert slots.next_at(10.24, now=10.24) == pytest.approx(10.29)  # 1.25 periods: the one longer interval
    assert slots.take(10.29) == "p4"
    assert slots.dropped == 3  # pictures 1-3, overtaken
