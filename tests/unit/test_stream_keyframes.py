"""On a rung that skips ticks, the engine's pictures follow the sound onsets of the agent's voice: a sound's first tick
gets a picture of its own, a picture due just before an onset waits for it, and with no onset the cadence holds."""

from __future__ import annotations

import numpy as np
import pytest
from livekit.plugins.dystream.diagnostics import has_beep

from avatar.stream.keyframes import FORESIGHT, Keyframes, OnsetFinder
from avatar.stream.ladder import ladder
from bench.harness.signals import read_wav, reply_clip
from config.settings import get_settings

FRAME = 640
LOOKAHEAD = 960  # the default 60 ms
RUNGS = {rung.name: rung for rung in ladder(5)}


def tone(ticks: int, level: float, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(ticks * FRAME) / 16000
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def run(audio: np.ndarray, rung_name: str, *, ahead: int = FORESIGHT) -> list:
    """The plan of every tick of float ``audio`` (whole ticks), fed one tick at a time with what is queued after it,
    as the engine's self queue shows it (``FORESIGHT``)."""
    keyframes, rung = Keyframes(), RUNGS[rung_name]
    padded = np.concatenate([audio, np.zeros(ahead, np.float32)])
    plans = []
    for k in range(len(audio) // FRAME):
        start = k * FRAME
        plans.append(
            keyframes.plan(k, rung, padded[start : start + FRAME], padded[start + FRAME : start + FRAME + ahead])
        )
    return plans


def test_the_onset_finder_marks_where_a_sound_starts_and_sees_it_coming() -> None:
    audio = np.concatenate([tone(3, 0.005), tone(4, 0.3), tone(3, 0.4)])  # faint, a beep, a little louder
    finder = OnsetFinder()
    found = []
    for k in range(10):
        after = audio[(k + 1) * FRAME : (k + 1) * FRAME + LOOKAHEAD]
        onsets = finder.step(audio[k * FRAME : (k + 1) * FRAME], np.pad(after, (0, LOOKAHEAD - after.size)))
        found.append((onsets.now, onsets.ahead))
    assert [now for now, _ in found] == [False, False, False, True, False, False, False, False, False, False]
    assert [ahead for _, ahead in found[:4]] == [None, 2, 1, None], "seen coming (half a tick is enough), then in it"


def test_with_no_onset_the_lowest_rung_keeps_its_cadence() -> None:
    plans = run(tone(30, 0.2, freq=300.0), "third")  # one steady sound: a single onset, at its start
    rendered = [k for k, plan in enumerate(plans) if plan.render]
    assert rendered == list(range(0, 30, 3))
    assert [k for k, plan in enumerate(plans) if plan.generate] == rendered, "a latent only for each picture"


@pytest.mark.parametrize("gap", [1, 2, 3])
def test_an_onset_gets_its_own_picture_and_a_picture_due_before_it_waits(gap: int) -> None:
    """The render thread is left free for the onset's picture: no picture is rendered in the ticks just before it."""
    onset = 6 + gap  # the cadence renders ticks 0, 3, 6; the sound starts 1 to 3 ticks after 6
    audio = np.concatenate([tone(onset, 0.03, freq=300.0), tone(30 - onset, 0.3)])
    plans = run(audio, "third")
    rendered = [k for k, plan in enumerate(plans) if plan.render]
    assert onset in rendered and plans[onset].onset
    assert 6 not in rendered, "the picture due at tick 6 waited for the onset it saw coming"
    assert rendered == [0, 3, *range(onset, 30, 3)]
    assert len(rendered) <= len(range(0, 30, 3)), "the onset costs no extra picture"


def test_every_beep_of_a_reply_clip_gets_a_picture_on_its_first_tick_on_every_rung() -> None:
    speech = read_wav(get_settings().samples_dir / "dyadic_self.wav")
    clip = reply_clip(speech, seconds=12.0).astype(np.float32) / 32768.0
    ticks = clip[: len(clip) // FRAME * FRAME].reshape(-1, FRAME)
    beep_ticks = [k for k in range(len(ticks)) if has_beep(ticks[k]) and (k == 0 or not has_beep(ticks[k - 1]))]
    assert len(beep_ticks) >= 15
    for name, rung in RUNGS.items():
        plans = run(clip[: len(ticks) * FRAME], name)
        rendered = [k for k, plan in enumerate(plans) if plan.render]
        assert all(plans[k].render and plans[k].onset for k in beep_ticks), name
        gaps = np.diff(rendered)
        assert gaps.max() <= 2 * rung.render_every, f"{name}: a picture held for {gaps.max()} ticks"
        # the onsets move the cadence more than they add to it: at most a third more pictures than the rung's rate
        assert len(rendered) <= len(ticks) / rung.render_every * 4 / 3 + 1, f"{name}: {len(rendered)} pictures"


def test_when_behind_only_the_newest_tick_or_a_recent_onset_is_worked_on() -> None:
    rung = RUNGS["third"]
    quiet, loud = tone(1, 0.003)[:FRAME], tone(1, 0.3)[:FRAME]
    keyframes = Keyframes()
    no_lookahead = np.zeros(LOOKAHEAD, np.float32)
    assert keyframes.plan(0, rung, quiet, no_lookahead).render
    assert not keyframes.plan(1, rung, quiet, no_lookahead, behind=2).generate
    assert keyframes.plan(2, rung, loud, no_lookahead, behind=1).render, "an onset one tick behind the newest"
    assert not keyframes.plan(3, rung, loud, no_lookahead).render, "the newest, one tick after that picture"
    stale = Keyframes()
    stale.plan(0, rung, quiet, no_lookahead)
    assert not stale.plan(1, rung, loud, no_lookahead, behind=3).generate, "an onset a whole picture behind"
