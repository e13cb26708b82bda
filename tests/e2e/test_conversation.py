"""A conversation with the avatar in a real LiveKit room, in both plugin modes, checked from the user's side."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from bench.harness import measure

MODES = ["in-process", "remote"]
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


MAX_FRAME_GAP_MS = 80.0  # two frame periods


def test_video_is_25_fps_at_the_configured_size_without_gaps(conversations, mode: str, expected_size) -> None:
    conversation = conversations(mode)
    fps, window_gap_ms = conversation.video_fps()
    assert 24.0 <= fps <= 26.0, f"{mode}: {fps:.2f} fps over 10 s"
    sizes = {(v.width, v.height) for v in conversation.client.video}
    assert sizes == {expected_size}, f"{mode}: received sizes {sizes}, configured {expected_size}"
    gap = conversation.max_frame_gap_ms()
    assert gap <= MAX_FRAME_GAP_MS, (
        f"{mode}: largest gap between frames {gap:.0f} ms (10 s window: {window_gap_ms:.0f} ms)"
    )


def test_audio_carries_the_agents_speech_in_sync_with_the_video(conversations, mode: str) -> None:
    conversation = conversations(mode)
    times, pcm = conversation.client.audio_timeline()
    beeps = measure.audio_beep_onsets(times, pcm)
    # greeting (3 beeps) + the reply until the barge-in + the answer after it (7 beeps)
    assert len(beeps) >= 8, f"{mode}: only {len(beeps)} beeps of the agent's clips arrived"
    offsets = conversation.av_offsets_ms()
    assert len(offsets) >= 0.8 * len(beeps), f"{mode}: {len(offsets)} flashes paired with {len(beeps)} beeps"
    # once the receiver's audio jitter buffer has settled (the first seconds of a call are reported, not judged)
    settled = conversation.av_offsets_ms(settled=True)
    assert len(settled) >= 8, f"{mode}: only {len(settled)} beeps after the receiver settled"
    worst = max(settled, key=abs)
    assert abs(worst) <= 40.0, f"{mode}: A/V offsets {[round(o) for o in offsets]} ms (video minus audio, in order)"


def test_the_agents_voice_is_heard_in_real_time_without_holes(conversations, mode: str) -> None:
    conversation = conversations(mode)
    stretches = conversation.audio_stretches()
    assert len(stretches) >= 3, f"{mode}: {len(stretches)} replies heard (greeting, reply, answer)"
    assert all(abs(s - 1.0) <= 0.05 for s in stretches), f"{mode}: heard/true duration {stretches}"
    hole = conversation.largest_audio_hole_ms()
    assert hole <= 20.0, f"{mode}: a {hole:.0f} ms hole in the agent's voice"


def test_state_follows_who_is_talking(conversations, mode: str) -> None:
    conversation = conversations(mode)
    latencies = conversation.listening_latencies_ms()
    assert len(latencies) == len(conversation.turns) >= 1, f"{mode}: the avatar never showed listening"
    assert max(latencies) <= 300.0, f"{mode}: listening {latencies} ms after the user's speech onset"
    assert conversation.release_latencies_ms(), f"{mode}: the state stayed on listening after the user stopped"
    # while the answer after the barge-in plays, the avatar shows speaking
    states = conversation.client.states()
    times, pcm = conversation.client.audio_timeline()
    answer_beeps = [t for t in measure.audio_beep_onsets(times, pcm) if t > conversation.bargeins[-1].onset + 3.0]
    assert answer_beeps, f"{mode}: the answer after the barge-in was not heard"
    shown = [measure.state_at(states, t) for t in answer_beeps[1:]]
    assert all(s in {"speaking", "both"} for s in shown), f"{mode}: states while the agent talks: {shown}"
    # speaking as the replies are heard (greeting included), and never idle in the middle of one
    delays = conversation.speaking_delays_ms()
    assert delays and all(abs(d) <= 200.0 for d in delays), f"{mode}: speaking shown {delays} ms from the audio"
    assert not conversation.idle_while_speaking(), f"{mode}: idle while a reply played"


def test_barge_in_stops_the_avatar_and_reports_the_interruption(conversations, mode: str) -> None:
    conversation = conversations(mode)
    (bargein,) = conversation.bargeins
    assert bargein.interrupted_at is not None, f"{mode}: the agent never interrupted its speech"
    assert bargein.finished_interrupted_at is not None, f"{mode}: playback_finished(interrupted=True) never came"
    assert bargein.audio_stopped_at is not None, f"{mode}: the avatar kept talking over the user"
    stop_ms = (bargein.audio_stopped_at - bargein.interrupted_at) * 1000.0
    assert stop_ms <= 150.0, f"{mode}: avatar audio stopped {stop_ms:.0f} ms after the interruption"
    interrupted = [e for e in conversation.events if e["event"] == "playback_finished" and e["interrupted"]]
    assert len(interrupted) == 1, f"{mode}: interrupted playbacks reported: {interrupted}"


def test_every_playback_is_reported_finished_exactly_once(conversations, mode: str) -> None:
    events = conversations(mode).events
    started = [e for e in events if e["event"] == "playback_started"]
    finished = [e for e in events if e["event"] == "playback_finished"]
    # greeting, the interrupted reply, the answer
    assert len(started) == len(finished) == 3, f"{mode}: {len(started)} started, {len(finished)} finished"
    assert [e["interrupted"] for e in finished] == [False, True, False]


def test_workers_answer_their_health_check(deployments, mode: str) -> None:
    deployment = deployments(mode)
    ports = [deployment.agent_http_port] + ([deployment.avatar_http_port] if mode == "remote" else [])
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
            assert reply.status == 200 and reply.read() == b"OK"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/worker", timeout=5) as reply:
            info = json.loads(reply.read())
        assert info["agent_name"] in {deployment.agent_name, deployment.avatar_agent_name}
        # bound to 127.0.0.1 only: another address of this machine (all of 127/8 reaches it) is refused
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()


def prometheus_samples(port: int) -> dict[str, float]:
    """The samples of a worker's ``/metrics``, by name and labels as Prometheus' text format writes them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_the_avatars_metrics_reach_the_workers_prometheus_endpoint(conversations, deployments, mode: str) -> None:
    conversation = conversations(mode)
    deployment = deployments(mode)
    # the worker whose job processes run the avatar: the agent's in-process, the avatar worker's in remote mode
    port = deployment.agent_prometheus_port if mode == "in-process" else deployment.avatar_prometheus_port
    samples = prometheus_samples(port)
    slots = {o: samples.get(f'dystream_video_slots_total{{outcome="{o}"}}', 0.0) for o in ("shown", "repeated")}
    # every frame the user received left the worker through a slot (its own picture or the last one again)
    assert slots["shown"] > 0 and sum(slots.values()) >= 0.8 * len(conversation.client.video), (
        f"{mode}: the worker's metrics count {slots} slots; the user received {len(conversation.client.video)} frames"
    )
    assert samples.get("dystream_interruptions_total", 0.0) >= 1, f"{mode}: the barge-in was not counted"
    assert samples.get("dystream_frame_seconds_count", 0.0) > 0, f"{mode}: no engine time observed"
