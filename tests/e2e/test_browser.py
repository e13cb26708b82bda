"""The playground in a real browser (``bench/harness/browser.py``): `dystream playground` as a user starts it, headless
Chromium joins with a fake microphone, and the page must show the avatar at 25 fps, its ``listening`` state when the
user speaks, and play the agent's replies over their true duration; Ctrl+C must leave nothing running. The page's
screenshot is kept beside the test output (``<e2e dir>/browser/playground-<attempt>.png``).

The voice must reach the page without holes: no silence over 20 ms inside a reply in what reaches the page's audio
graph, and nothing over 20 ms concealed at once by its receiver. The lip-sync offset must stay within ±40 ms, read
two ways: the median of the beeps in the voice against the flashes of the diagnostic square, and the median of the
browser's own reading (its receivers' ``estimatedPlayoutTimestamp``). The spread of single beep/flash pairs is not
asserted: the page times the voice where it leaves its own audio output, and a headless browser's output device stalls
on a busy machine (``output_stall_ms``), which moves single pairs by tens of milliseconds (README, "In a browser").
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from bench.harness.browser import BrowserCall, browse, chromium, microphone_loop, start_playground
from bench.harness.measure import percentile

MODE = "in-process"
FPS = 25
CALL_S = 46.0  # of received audio: the greeting and three of the microphone's turns (one each 13.65 s) in 41 s settled


@pytest.fixture(scope="module")
def playground(deployments, clips, samples_dir: Path, e2e_dir: Path):
    """The playground alone on the machine (the other tests' workers stopped)."""
    try:
        chromium()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    deployments.stop_all()
    process, url = start_playground(e2e_dir / "browser", samples_dir, clips)
    try:
        yield process, url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def calls(playground, clips, e2e_dir: Path):
    """One call per attempt (a failed test runs again on a fresh call, never on the one it failed on)."""
    _, url = playground
    microphone = microphone_loop(clips.utterance, e2e_dir / "browser")
    done: dict[int, BrowserCall] = {}

    def get(attempt: int) -> BrowserCall:
        if attempt not in done:
            done[attempt] = browse(url, microphone, CALL_S, e2e_dir / "browser" / f"playground-{attempt}.png")
        return done[attempt]

    return get


@pytest.fixture
def call(calls, request: pytest.FixtureRequest) -> BrowserCall:
    return calls(getattr(request.node, "execution_count", 1))


def test_the_page_shows_the_avatar_at_the_configured_fps(call: BrowserCall) -> None:
    windows = call.fps_windows()
    assert len(windows) >= 5, f"only {len(windows)} windows of video after settling ({call.screenshot})"
    assert min(windows) >= FPS - 1, f"presented fps per 5 s window: {windows} ({call.screenshot})"
    assert call.largest_frame_gap_ms() <= 200, f"a {call.largest_frame_gap_ms():.0f} ms freeze in the video"
    assert call.screenshot.stat().st_size > 0


def test_the_avatar_listens_when_the_user_speaks(call: BrowserCall) -> None:
    latencies = call.listening_latencies_ms()
    assert len(latencies) >= 3, f"the fake microphone's speech was heard {len(latencies)} times after settling"
    assert None not in latencies, f"no listening state after some speech onsets: {latencies}"
    assert max(latencies) <= 300, f"listening shown {latencies} ms after the user's speech onsets"
    assert call.page_listening_ms, "the page's own listening-latency figure stayed empty"


def test_the_replies_are_heard_over_their_true_duration(call: BrowserCall) -> None:
    replies = call.replies()
    assert len(replies) >= 2, f"{len(replies)} replies with their beeps heard in the page"
    for reply in replies:
        assert 0.95 <= reply["stretch"] <= 1.05, f"a reply was heard over {reply['stretch']:.3f} of its duration"


def test_the_voice_reaches_the_page_without_holes(call: BrowserCall) -> None:
    holes = [round(reply["largest_hole_ms"]) for reply in call.replies()]
    assert holes and max(holes) <= 20, f"largest hole per reply in the voice that reached the page: {holes} ms"
    concealed = call.receiver_concealed()
    assert concealed["largest_ms"] is not None, "the page read no receiver statistics for the voice"
    assert concealed["largest_ms"] <= 20, f"the voice's receiver concealed {concealed} ms"


def test_the_voice_and_the_picture_are_in_sync_in_the_page(call: BrowserCall) -> None:
    pairs = call.av_offsets_ms()
    assert len(pairs) >= 10, f"only {len(pairs)} beeps paired with flashes after settling ({call.screenshot})"
    offset = percentile(pairs, 50)
    assert abs(offset) <= 40, f"the picture {offset:+.0f} ms from the voice (median of {len(pairs)} beeps/flashes)"
    readings = call.playout_offsets_ms()
    assert len(readings) >= 20, f"the page read the browser's playout clocks {len(readings)} times after settling"
    own = percentile(readings, 50)
    assert abs(own) <= 40, f"the browser plays the picture {own:+.0f} ms from the voice (median of its own readings)"


def test_ctrl_c_stops_everything(playground) -> None:
    process, _ = playground
    root = psutil.Process(process.pid)
    started = [root, *root.children(recursive=True)]
    assert len(started) >= 3, f"expected the playground, the LiveKit server and the agent worker: {started}"
    os.kill(process.pid, signal.SIGINT)
    root.wait(timeout=60)
    _, alive = psutil.wait_procs(started[1:], timeout=30)
    assert not alive, f"still running after Ctrl+C: {[p.cmdline() for p in alive]}"
