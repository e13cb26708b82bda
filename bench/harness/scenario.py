"""A conversation with the avatar, as a user would have it, and what it measured.

The user joins a room (which dispatches the agent), hears the greeting, says something, hears the reply, and
interrupts the next reply half-way (barge-in). Measured on the user's side: the avatar's video cadence and gaps, the
A/V offset of every beep/flash pair, how fast ``dystream.state`` follows the user's voice, how fast the avatar falls
silent after the agent decides it was interrupted; on the agent's side (its events file): playback started/finished
and the avatar's playback latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent.events import read_events

from . import measure
from .client import UserClient, user_token
from .deployment import Deployment

USER_STATES = {"listening", "both"}
SPEAKING_STATES = {"speaking", "both"}
BEEP_EVERY_S, BEEP_S, FIRST_BEEP_S = 0.6, 0.2, 0.4  # signals.reply_clip's beeps
FPS_WINDOW_S = 10.0
RECEIVER_SETTLE_S = 4.0


@dataclass
class Turn:
    onset: float
    end: float
    listening_at: float | None = None
    released_at: float | None = None  # state no longer shows the user speaking


@dataclass
class BargeIn:
    onset: float
    interrupted_at: float | None = None  # the agent interrupted its speech (events file)
    finished_interrupted_at: float | None = None  # playback_finished(interrupted=True) reached the agent
    audio_stopped_at: float | None = None  # the user heard the avatar fall silent


@dataclass
class Conversation:
    mode: str
    room: str
    client: UserClient
    joined_at: float
    first_video_at: float | None = None
    turns: list[Turn] = field(default_factory=list)
    bargeins: list[BargeIn] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    # -- derived measurements -------------------------------------------------------------------------------
    def video_fps(self) -> tuple[float, float]:
        """(fps, largest gap ms) over 10 s starting 1 s after the first frame."""
        assert self.first_video_at is not None
        return measure.video_rate(self.client.video, self.first_video_at + 1.0, FPS_WINDOW_S)

    def max_frame_gap_ms(self) -> float:
        assert self.first_video_at is not None
        last = self.client.video[-1].t
        return measure.max_gap_ms(self.client.video, self.first_video_at + 1.0, last)

    def av_offsets_ms(self, *, settled: bool = False) -> list[float]:
        """Video minus audio (ms) for every beep/flash pair; with ``settled``, only those from
        ``RECEIVER_SETTLE_S`` after the avatar's audio began to arrive: a WebRTC receiver starts its audio jitter
        buffer high (about 100 ms here) and brings it down over the first seconds of a call."""
        times, pcm = self.client.audio_timeline()
        beeps = measure.audio_beep_onsets(times, pcm)
        pairs = measure.av_pairs(beeps, measure.video_flash_onsets(self.client.video))
        start = times[0] + RECEIVER_SETTLE_S if settled and len(times) else -float("inf")
        return [offset for t, offset in pairs if t >= start]

    def reply_runs(self) -> list[list[float]]:
        """The heard beep onsets of each reply (greeting included) of at least three beeps."""
        times, pcm = self.client.audio_timeline()
        runs = measure.beep_runs(measure.audio_beep_onsets(times, pcm), BEEP_EVERY_S)
        return [run for run in runs if len(run) >= 3]

    def audio_stretches(self) -> list[float]:
        """Per reply: heard duration / clip duration (from its beeps)."""
        return [measure.stretch(run, BEEP_EVERY_S) for run in self.reply_runs()]

    def largest_audio_hole_ms(self) -> float:
        """The longest silence inside any reply, from its first beep to the end of its last."""
        times, pcm = self.client.audio_timeline()
        holes = [measure.largest_hole_ms(times, pcm, run[0], run[-1] + BEEP_S) for run in self.reply_runs()]
        return max(holes, default=0.0)

    def speaking_delays_ms(self) -> list[float]:
        """Per reply: when ``dystream.state`` turned to speaking minus when the reply began to be heard (its first
        beep is ``FIRST_BEEP_S`` into the clip)."""
        delays = []
        for run in self.reply_runs():
            heard = run[0] - FIRST_BEEP_S
            if measure.state_at(self.client.states(), heard - 0.5) in SPEAKING_STATES:
                continue  # already speaking (an answer right after a barge-in): no change to time
            shown = measure.first_state_after(self.client.states(), heard - 0.5, SPEAKING_STATES)
            if shown is not None:
                delays.append((shown - heard) * 1000.0)
        return delays

    def idle_while_speaking(self) -> list[float]:
        """Times the state showed idle while a reply was being heard (from its first beep to its last)."""
        return [
            change.t
            for run in self.reply_runs()
            for change in self.client.states()
            if run[0] < change.t < run[-1] and change.value == "idle"
        ]

    def listening_latencies_ms(self) -> list[float]:
        return [(t.listening_at - t.onset) * 1000.0 for t in self.turns if t.listening_at is not None]

    def release_latencies_ms(self) -> list[float]:
        return [(t.released_at - t.end) * 1000.0 for t in self.turns if t.released_at is not None]

    def bargein_stops_ms(self) -> list[float]:
        return [
            (b.audio_stopped_at - b.interrupted_at) * 1000.0
            for b in self.bargeins
            if b.audio_stopped_at is not None and b.interrupted_at is not None
        ]

    def bargein_from_onset_ms(self) -> list[float]:
        return [(b.audio_stopped_at - b.onset) * 1000.0 for b in self.bargeins if b.audio_stopped_at is not None]

    def playback_latencies_ms(self) -> list[float]:
        """Agent side: a reply handed to the avatar -> the avatar reports its playback started. The greeting is left
        out: it waits for the avatar to join the room (in remote mode, for the avatar worker's video track)."""
        created = [e["t"] for e in self.events if e["event"] == "speech_created"]
        started = [e["t"] for e in self.events if e["event"] == "playback_started"]
        latencies = []
        for this, following in zip(created[1:], [*created[2:], float("inf")], strict=True):
            # a speech that never played (dropped, or interrupted first) has no start before the next one
            playing = [t for t in started if this <= t < following]
            if playing:
                latencies.append((playing[0] - this) * 1000.0)
        return latencies

    def receiver_audio(self) -> dict[str, float | None]:
        """The receiver's audio jitter buffer delay (p50 / max of its half-second means) and the audio it concealed
        over the call: a sender that stalls makes the receiver conceal, then hold the voice longer from then on."""
        samples = self.client.receiver
        delays = [s.jitter_buffer_ms for s in samples]
        return {
            "jitter_buffer_ms_p50": measure.percentile(delays, 50),
            "jitter_buffer_ms_max": measure.percentile(delays, 100),
            "concealed_ms": round(samples[-1].concealed_ms - samples[0].concealed_ms, 1) if samples else None,
        }

    def summary(self) -> dict[str, Any]:
        fps, _ = self.video_fps()
        offsets = [abs(o) for o in self.av_offsets_ms()]
        settled = [abs(o) for o in self.av_offsets_ms(settled=True)]
        p = measure.percentile
        sizes = sorted({(v.width, v.height) for v in self.client.video})
        return {
            "mode": self.mode,
            "video_fps": round(fps, 2),
            "video_size": [list(s) for s in sizes],
            "max_frame_gap_ms": round(self.max_frame_gap_ms(), 1),
            "audio_stretch": [round(s, 3) for s in self.audio_stretches()],
            "largest_audio_hole_ms": round(self.largest_audio_hole_ms(), 1),
            "speaking_state_delay_ms": [round(d) for d in self.speaking_delays_ms()],
            "idle_while_speaking": len(self.idle_while_speaking()),
            "av_offset_ms": {"p50": p(offsets, 50), "p95": p(offsets, 95), "n": len(offsets)},
            "av_offset_settled_ms": {"p50": p(settled, 50), "p95": p(settled, 95), "max": p(settled, 100)},
            "av_offset_signed_ms": {"p50": p(self.av_offsets_ms(), 50), "note": "video minus audio; < 0: video early"},
            "receiver_audio": self.receiver_audio(),
            "listening_latency_ms": {
                "p50": p(self.listening_latencies_ms(), 50),
                "p95": p(self.listening_latencies_ms(), 95),
                "n": len(self.listening_latencies_ms()),
            },
            "listening_release_ms": {"p50": p(self.release_latencies_ms(), 50)},
            "bargein_stop_ms": {"p50": p(self.bargein_stops_ms(), 50), "p95": p(self.bargein_stops_ms(), 95)},
            "bargein_from_user_onset_ms": {"p50": p(self.bargein_from_onset_ms(), 50)},
            "playback_started_latency_ms": {
                "p50": p(self.playback_latencies_ms(), 50),
                "p95": p(self.playback_latencies_ms(), 95),
            },
        }


async def until(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Session:
    """A user in a room of ``deployment``; the steps of a conversation as methods."""

    def __init__(self, deployment: Deployment, room: str | None = None, identity: str = "user") -> None:
        self.deployment = deployment
        self.room = room or f"e2e-{deployment.mode}-{uuid.uuid4().hex[:6]}"
        self.identity = identity
        self.conversation: Conversation | None = None

    @property
    def client(self) -> UserClient:
        assert self.conversation is not None
        return self.conversation.client

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.deployment.events_file, room=self.room)

    def events_after(self, name: str, t: float) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == name and e["t"] >= t]

    async def join(self, timeout: float = 90.0) -> Conversation:
        server = self.deployment.server
        token = user_token(server.api_key, server.api_secret, self.room, self.identity, self.deployment.agent_name)
        client = UserClient(server.url, token)
        joined = time.time()
        await client.connect()
        self.conversation = Conversation(self.deployment.mode, self.room, client, joined)
        self.conversation.first_video_at = await asyncio.wait_for(asyncio.shield(client.first_video), timeout)
        return self.conversation

    async def wait_quiet(self, timeout: float = 30.0) -> None:
        """Until the agent has no speech playing (its last playback finished) and the avatar shows idle."""

        def quiet() -> bool:
            events = self.events()
            started = [e["t"] for e in events if e["event"] == "playback_started"]
            finished = [e["t"] for e in events if e["event"] == "playback_finished"]
            playing = bool(started) and (not finished or max(started) > max(finished))
            states = self.client.states()
            return not playing and bool(states) and states[-1].value == "idle"

        await until(quiet, timeout, "the agent to finish speaking and the avatar to be idle")

    async def wait_playback_started(self, after: float, timeout: float = 20.0) -> float:
        found = await until(lambda: self.events_after("playback_started", after), timeout, "playback_started")
        return found[0]["t"]

    async def wait_playback_finished(self, after: float, timeout: float = 30.0) -> dict[str, Any]:
        found = await until(lambda: self.events_after("playback_finished", after), timeout, "playback_finished")
        return found[0]

    async def user_turn(self, timeout: float = 10.0) -> Turn:
        """The user says the utterance; record when the avatar shows it listening, and when it stops."""
        utterance = self.client.speak(self.deployment.clips.utterance)
        onset = await asyncio.wait_for(utterance.onset, timeout)
        end = await asyncio.wait_for(utterance.ended, timeout)
        turn = Turn(onset=onset, end=end)
        self.conversation.turns.append(turn)

        def listening() -> float | None:
            return measure.first_state_after(self.client.states(), onset - 0.05, USER_STATES)

        with contextlib.suppress(TimeoutError):  # the tests report what did not happen
            turn.listening_at = await until(listening, 3.0, "the avatar to show listening")
            turn.released_at = await until(lambda: self._released(end), 3.0, "the state to leave listening")
        return turn

    def _released(self, end: float) -> float | None:
        for change in self.client.states():
            if change.t >= end and change.value not in USER_STATES:
                return change.t
        return None

    async def barge_in(self, after_reply_s: float = 1.5) -> BargeIn:
        """Wait for the agent's reply to play ``after_reply_s``, then talk over it."""
        started = await self.wait_playback_started(self.conversation.turns[-1].end)
        await asyncio.sleep(max(0.0, started + after_reply_s - time.time()))
        utterance = self.client.speak(self.deployment.clips.utterance)
        onset = await asyncio.wait_for(utterance.onset, 10.0)
        bargein = BargeIn(onset=onset)
        self.conversation.bargeins.append(bargein)
        with contextlib.suppress(TimeoutError):  # the tests report what did not happen
            interrupted = await until(lambda: self.events_after("speech_interrupted", onset), 10.0, "interruption")
            bargein.interrupted_at = interrupted[0]["t"]
            finished = await until(
                lambda: [e for e in self.events_after("playback_finished", onset) if e.get("interrupted")],
                10.0,
                "playback_finished(interrupted=True)",
            )
            bargein.finished_interrupted_at = finished[0]["t"]
        await asyncio.wait_for(utterance.ended, 10.0)
        await asyncio.sleep(0.5)
        times, pcm = self.client.audio_timeline()
        bargein.audio_stopped_at = measure.speech_stop(times, pcm, bargein.interrupted_at or onset)
        return bargein

    async def leave(self, *, wait_closed: bool = False) -> Conversation:
        """Leave the room; with ``wait_closed``, also wait until the agent's session has ended (the room closes a
        few seconds after the last user left), so the next conversation does not share the CPU with this one."""
        assert self.conversation is not None
        await self.client.leave()
        if wait_closed:
            await until(lambda: self.events_after("session_closed", 0.0), 30.0, "the agent's session to close")
        self.conversation.events = self.events()
        return self.conversation


async def converse(deployment: Deployment, *, turns: int = 0, bargeins: int = 1, room: str | None = None):
    """Join and hear the greeting; take ``turns`` turns, each answered in full; then ``bargeins`` times: a turn,
    its answer interrupted half-way by the user, and the answer to that, heard in full."""
    session = Session(deployment, room)
    conversation = await session.join()
    try:
        await session.wait_playback_finished(conversation.joined_at, timeout=30.0)  # the greeting
        for number in range(turns + bargeins):
            await session.wait_quiet()
            turn_started = time.time()
            await session.user_turn()
            await session.wait_playback_started(turn_started)
            if number < turns:
                await session.wait_playback_finished(turn_started)
                continue
            bargein = await session.barge_in()
            answered_after = (bargein.finished_interrupted_at or bargein.onset + 2.5) + 0.01
            await session.wait_playback_finished(answered_after, timeout=30.0)
        # at least the fps window of video
        await asyncio.sleep(max(0.0, conversation.first_video_at + 1.0 + FPS_WINDOW_S + 0.5 - time.time()))
    finally:
        await session.leave(wait_closed=True)
    return conversation
