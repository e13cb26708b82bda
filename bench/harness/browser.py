"""The playground in a real browser, as a user meets the avatar: `dystream playground` started as a user starts it,
Debian's Chromium (headless, driven through Playwright) opens its page, clicks Join (the gesture that lets the page
play audio; no autoplay flags) and speaks through a fake microphone that plays a WAV file in a loop.

The page measures what it receives (``agent/playground/static/playground.js``): every presented video frame (its
display time and the diagnostic square's brightness), the avatar's voice and the microphone as they pass the page's
audio graph, and each ``dystream.state`` as it arrives. :class:`BrowserCall` reads those measurements with the same
functions as the Python client's (beeps against flashes, ``measure.py``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from pathlib import Path

import numpy as np

from agent.local.processes import WorkerProcess
from agent.local.server import free_port

from . import priority
from .client import AttributeChange, VideoSample
from .deployment import REPO_ROOT, Clips, measured_worker_env
from .measure import (
    audio_beep_onsets,
    av_pairs,
    beep_runs,
    first_state_after,
    largest_hole_ms,
    percentile,
    stretch,
    video_flash_onsets,
)
from .signals import SAMPLE_RATE, write_wav

QUIET_BEFORE_S = 3.0  # the fake microphone's loop: quiet, the user's utterance, quiet while the agent answers
QUIET_AFTER_S = 8.0
SETTLE_S = 4.0  # a receiver's jitter buffers settle after the first audio (as for the Python client)
BEEP_EVERY_S = 0.6
ONSET_WINDOW_S = 0.01
ONSET_RMS = 0.02
ONSET_QUIET_S = 0.3
STATE_WAIT_S = 1.0  # an onset this close to the end of the call is not counted: its state may come after the end
FPS_WINDOW_S = 5.0
READY = "open http://"

EXPORT = """() => {
  const m = window.playground.measured;
  const blocks = (list) => ({
    t: list.map((b) => b.t), context: list.map((b) => b.context), pcm: list.flatMap((b) => Array.from(b.pcm)),
  });
  return {
    frames: m.frames, audio: blocks(m.audio), mic: blocks(m.mic), states: m.states, listening: m.listening,
    receiver: m.receiver, sync: m.sync,
  };
}"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise FileNotFoundError("Debian's chromium is not installed: run scripts/install.sh (apt-get install chromium)")
    return path


def microphone_loop(utterance: np.ndarray, folder: Path) -> Path:
    """The fake microphone's file: quiet, the user's utterance, quiet (Chromium plays it in a loop)."""
    quiet_before = np.zeros(int(QUIET_BEFORE_S * SAMPLE_RATE), np.int16)
    quiet_after = np.zeros(int(QUIET_AFTER_S * SAMPLE_RATE), np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    return write_wav(folder / "microphone.wav", np.concatenate([quiet_before, utterance, quiet_after]))


def start_playground(
    folder: Path, samples_dir: Path, clips: Clips, *, remote: bool = False
) -> tuple[WorkerProcess, str]:
    """`dystream playground` with the tiny random model, the beep clips and the diagnostic overlay; its URL once the
    workers have registered."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = measured_worker_env(folder)
    command = (
        "python", "-m", "agent", "playground", "--port", str(port), "--random-weights", "--size", "tiny",
        "--portrait", str(Path(samples_dir) / "portrait.png"),
        "--greeting", str(clips.greeting), "--reply", str(clips.reply),
        *(["--remote"] if remote else []),
    )  # fmt: skip
    name = "playground-remote" if remote else "playground"
    # at the workers' normal priority; the browser, started by the measuring process, is on its own machine in a
    # deployment (priority.py)
    process = WorkerProcess(name, command, env, folder, REPO_ROOT, preexec_fn=priority.normal)
    process.start()
    try:
        process.wait_for_log(READY, timeout=300)
    except BaseException:
        process.stop()
        raise
    return process, f"http://127.0.0.1:{port}/"


def browse(url: str, microphone: Path, seconds: float, screenshot: Path) -> BrowserCall:
    """Join the playground's room from headless Chromium, stay ``seconds`` of received audio, screenshot, leave."""
    from playwright.sync_api import sync_playwright

    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(url)
            page.click("#join")
            page.wait_for_function(
                "() => { const a = window.playground.measured.audio;"
                f" return a.length > 0 && a[a.length - 1].t - a[0].t > {seconds * 1000} }}",
                timeout=(seconds + 120) * 1000,
            )
            page.screenshot(path=str(screenshot), full_page=True)
            data = page.evaluate(EXPORT)
            page.click("#join")  # leave
        finally:
            browser.close()
    return BrowserCall.from_page(data, screenshot)


@dataclass
class BrowserCall:
    """What the page measured over one call; times in seconds of the page's clock (performance.now).

    The avatar's voice has two clocks: ``audio_times``, when each sample leaves the page's audio output (where the
    voice is heard, and what lip sync and the replies' durations are measured on), and ``audio_graph_times``, the
    audio graph's own sample clock (contiguous while the graph runs). They part where the page's audio output stalls
    (a headless browser's output device on a busy machine): the output then plays on later, which is the page's
    device and not a hole in the voice that reached it, so holes are found on the graph's clock."""

    frames: list[dict]
    audio_times: np.ndarray
    audio_graph_times: np.ndarray
    audio: np.ndarray
    mic_times: np.ndarray
    mic: np.ndarray
    states: list[AttributeChange]
    page_listening_ms: list[float]
    receiver: list[dict]
    sync: list[dict]
    screenshot: Path

    @classmethod
    def from_page(cls, data: dict, screenshot: Path) -> BrowserCall:
        def samples(blocks: dict, clock: str = "t") -> tuple[np.ndarray, np.ndarray]:
            pcm = np.asarray(blocks["pcm"], dtype=np.int16)
            n = len(pcm) // max(1, len(blocks[clock]))
            starts = np.asarray(blocks[clock], dtype=np.float64) / 1000.0
            times = (starts[:, None] + np.arange(n)[None, :] / SAMPLE_RATE).reshape(-1)
            return times, pcm[: times.size]

        audio_times, audio = samples(data["audio"])
        audio_graph_times, _ = samples(data["audio"], "context")
        mic_times, mic = samples(data["mic"])
        states = [AttributeChange(s["t"] / 1000.0, "avatar", "dystream.state", s["value"]) for s in data["states"]]
        return cls(
            data["frames"], audio_times, audio_graph_times, audio, mic_times, mic, states, data["listening"],
            data["receiver"], data["sync"], screenshot,
        )  # fmt: skip

    @cached_property
    def settled_from(self) -> float:
        """When the receiver has settled: ``SETTLE_S`` after the avatar's voice began to arrive."""
        loud = np.flatnonzero(np.abs(self.audio) > 0.01 * 32768)
        return float(self.audio_times[loud[0]]) + SETTLE_S if loud.size else float("inf")

    def settled_frames(self) -> list[dict]:
        return [f for f in self.frames if f["t"] / 1000.0 >= self.settled_from]

    def fps_windows(self) -> list[float]:
        """Presented frames per second in consecutive ``FPS_WINDOW_S`` windows after settling."""
        frames, out = self.settled_frames(), []
        start = frames[0] if frames else None
        for frame in frames:
            span_ms = frame["t"] - start["t"]
            if span_ms >= FPS_WINDOW_S * 1000:
                out.append((frame["presented"] - start["presented"]) * 1000.0 / span_ms)
                start = frame
        return out

    def largest_frame_gap_ms(self) -> float:
        times = [f["t"] for f in self.settled_frames()]
        return float(np.diff(times).max()) if len(times) > 1 else float("inf")

    def av_offsets_ms(self) -> list[float]:
        """Video minus audio (ms) per beep/flash pair after settling (positive: the picture comes late)."""
        beeps = audio_beep_onsets(self.audio_times, self.audio)
        flashes = video_flash_onsets([VideoSample(f["t"] / 1000.0, 0, 0, f["patch"]) for f in self.frames])
        return [offset for t, offset in av_pairs(beeps, flashes) if t >= self.settled_from]

    def playout_offsets_ms(self) -> list[float]:
        """The browser's own lip sync once settled, every 500 ms: the sender's capture time of the voice played minus
        that of the picture shown (the receivers' ``estimatedPlayoutTimestamp``; positive: the picture comes late, as
        in ``av_offsets_ms``). Free of the page's audio output, which the beeps and flashes are timed through."""
        return [s["audio"] - s["video"] for s in self.sync if s["t"] / 1000.0 >= self.settled_from]

    def speech_onsets(self) -> list[float]:
        """Onsets of the user's utterances on the microphone: a loud 10 ms window after 300 ms of quiet."""
        win = int(ONSET_WINDOW_S * SAMPLE_RATE)
        n = self.mic.size // win * win
        x = self.mic[:n].astype(np.float64).reshape(-1, win) / 32768.0
        loud = np.sqrt((x * x).mean(axis=1)) > ONSET_RMS
        quiet_needed, quiet, onsets = int(ONSET_QUIET_S / ONSET_WINDOW_S), 0, []
        for i, is_loud in enumerate(loud):
            if is_loud and quiet >= quiet_needed:
                onsets.append(float(self.mic_times[i * win]))
            quiet = 0 if is_loud else quiet + 1
        return onsets

    def listening_latencies_ms(self) -> list[float | None]:
        """Per speech onset once the call has settled (``settled_from``: the avatar was in the room and speaking) and
        at least ``STATE_WAIT_S`` before the end of the call, the time to the next ``listening`` / ``both`` at the
        page (None: never came)."""
        out: list[float | None] = []
        last = float(self.audio_times[-1]) - STATE_WAIT_S if self.audio_times.size else float("-inf")
        for onset in (t for t in self.speech_onsets() if self.settled_from <= t <= last):
            shown = first_state_after(self.states, onset, {"listening", "both"})
            out.append(None if shown is None else (shown - onset) * 1000.0)
        return out

    def replies(self) -> list[dict]:
        """Per reply heard (a run of at least 5 beeps): heard over true duration, the largest hole in the voice that
        reached the page (ms, on the audio graph's clock) and the longest stall of the page's audio output in it."""
        runs = beep_runs(audio_beep_onsets(self.audio_times, self.audio), BEEP_EVERY_S)
        out = []
        for run in (run for run in runs if len(run) >= 5):
            first, last = (int(np.argmax(self.audio_times >= t)) for t in (run[0], run[-1]))
            start, end = self.audio_graph_times[first], self.audio_graph_times[last]
            output_lag = self.audio_times[first:last] - self.audio_graph_times[first:last]
            out.append({
                "stretch": stretch(run, BEEP_EVERY_S),
                "largest_hole_ms": largest_hole_ms(self.audio_graph_times, self.audio, start, end),
                "output_stall_ms": float(np.diff(output_lag).max(initial=0.0)) * 1000.0,
            })  # fmt: skip
        return out

    def receiver_concealed(self) -> dict:
        """What the voice's receiver concealed once settled (packets late or lost; the browser's inbound-rtp counters
        every 500 ms): events, the total and the largest concealed per event in one reading (ms)."""
        readings = [r for r in self.receiver if r["t"] / 1000.0 >= self.settled_from]
        if len(readings) < 2:
            return {"events": None, "total_ms": None, "largest_ms": None}
        first, last = readings[0], readings[-1]
        ms_per_sample = (last["t"] - first["t"]) / max(1, last["received"] - first["received"])
        per_event = [
            (b["concealed"] - a["concealed"]) * ms_per_sample / (b["concealments"] - a["concealments"])
            for a, b in pairwise(readings)
            if b["concealments"] > a["concealments"]
        ]
        return {
            "events": last["concealments"] - first["concealments"],
            "total_ms": (last["concealed"] - first["concealed"]) * ms_per_sample,
            "largest_ms": max(per_event, default=0.0),
        }

    def summary(self) -> dict:
        offsets = self.av_offsets_ms()
        absolute = [abs(o) for o in offsets]
        playout = self.playout_offsets_ms()
        playout_absolute = [abs(o) for o in playout]
        latencies = self.listening_latencies_ms()
        listening = [v for v in latencies if v is not None]
        replies = self.replies()

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "presented_fps_windows": [round(v, 2) for v in self.fps_windows()],
            "largest_frame_gap_ms": rounded(self.largest_frame_gap_ms()),
            "av_offset_ms": {
                "pairs": len(offsets),
                "signed_p50": rounded(percentile(offsets, 50)),
                "abs_p50": rounded(percentile(absolute, 50)),
                "abs_p95": rounded(percentile(absolute, 95)),
                "abs_max": rounded(percentile(absolute, 100)),
            },
            "playout_offset_ms": {
                "readings": len(playout),
                "signed_p50": rounded(percentile(playout, 50)),
                "abs_p95": rounded(percentile(playout_absolute, 95)),
                "abs_max": rounded(percentile(playout_absolute, 100)),
            },
            "listening_latency_ms": [round(v) for v in listening],
            "listening_missed": len(latencies) - len(listening),
            "replies": [{k: round(v, 3) for k, v in reply.items()} for reply in replies],
            "receiver_concealed": {k: rounded(v) for k, v in self.receiver_concealed().items()},
        }
