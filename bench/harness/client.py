"""The user side of a call: a `livekit.rtc` participant that talks into a microphone track and records the avatar.

Everything it receives is stamped on the wall clock (``time.time()``, the clock the agent's event log uses too):
each video frame of the avatar (its size and the brightness of the diagnostic square), each chunk of the avatar's
audio, and each change of a participant attribute. The microphone sends silence between utterances, in real time,
like a real one.

Media is timed where a viewer's player would present it, not when this Python process got round to reading it (on a
2-core machine shared with the server and the workers it is sometimes tens of ms late): a video frame at the render
time WebRTC's receiver gave it (the frame's ``timestamp_us``, on the monotonic clock), and the native stream keeps up
to a second of frames instead of dropping those this process is slow to take; the audio, which the receiver plays out
as a continuous 10 ms stream, at the earliest time consistent with every later chunk's arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import api, rtc
from livekit.plugins.dystream.diagnostics import read_patch
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2, video_frame_pb2

from .signals import SAMPLE_RATE, speech_end, speech_onset

MIC_CHUNK = SAMPLE_RATE // 100  # 10 ms
MIC_QUEUE_MS = 40
RECEIVER_STATS_S = 0.5
VIDEO_QUEUE_FRAMES = 25
AVATAR_VIDEO_TRACK = "avatar_video"
AVATAR_AUDIO_TRACK = "avatar_audio"
STATE_ATTRIBUTE = "dystream.state"


@dataclass(frozen=True)
class VideoSample:
    t: float
    width: int
    height: int
    patch: float


@dataclass(frozen=True)
class AudioChunk:
    t: float
    pcm: np.ndarray  # int16 mono at SAMPLE_RATE


@dataclass(frozen=True)
class ReceiverSample:
    """What the WebRTC receiver reported about the avatar's audio: its jitter buffer's mean delay since the previous
    sample, and the audio it had concealed so far (played though nothing had arrived for it)."""

    t: float
    jitter_buffer_ms: float
    concealed_ms: float


@dataclass(frozen=True)
class AttributeChange:
    t: float
    identity: str
    key: str
    value: str


@dataclass
class Utterance:
    """One thing the user said: when its first sample, its speech onset and its speech end left the microphone."""

    pcm: np.ndarray
    onset_index: int
    end_index: int
    started: asyncio.Future[float] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    onset: asyncio.Future[float] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    ended: asyncio.Future[float] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _brightness(frame: rtc.VideoFrame) -> np.ndarray:
    """[H, W] brightness of a received frame: the luma plane of I420 as delivered (no conversion), else grey of RGB."""
    width, height = frame.width, frame.height
    if frame.type == rtc.VideoBufferType.I420:
        return np.frombuffer(frame.data, np.uint8, count=width * height).reshape(height, width)
    rgb = np.frombuffer(frame.convert(rtc.VideoBufferType.RGB24).data, np.uint8).reshape(height, width, 3)
    return rgb.mean(axis=2)


class _VideoStream(rtc.VideoStream):
    """``rtc.VideoStream`` whose native queue holds ``VIDEO_QUEUE_FRAMES`` (the SDK leaves it at its small default)."""

    def _create_owned_stream(self):
        request = ffi_pb2.FfiRequest()
        request.new_video_stream.track_handle = self._track._ffi_handle.handle
        request.new_video_stream.type = video_frame_pb2.VideoStreamType.VIDEO_STREAM_NATIVE
        request.new_video_stream.normalize_stride = True
        request.new_video_stream.queue_size_frames = VIDEO_QUEUE_FRAMES
        return FfiClient.instance.request(request).new_video_stream.stream


def user_token(server_key: str, server_secret: str, room: str, identity: str, agent_name: str | None) -> str:
    """A user token for ``room`` that dispatches ``agent_name`` when the room is created."""
    token = (
        api.AccessToken(server_key, server_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
    )
    if agent_name:
        token = token.with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent_name)]))
    return token.to_jwt()


class UserClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self._token = token
        self.room = rtc.Room()
        self.video: list[VideoSample] = []
        self.audio: list[AudioChunk] = []
        self.attributes: list[AttributeChange] = []
        self.receiver: list[ReceiverSample] = []
        self._queue: list[Utterance] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=MIC_QUEUE_MS)
        self.first_video = asyncio.get_running_loop().create_future()
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("participant_connected", self._on_participant)
        # the agent streams its session events to the room for frontends; this user does not read them
        self.room.register_byte_stream_handler("lk.agent.session", lambda reader, identity: None)

    async def connect(self) -> None:
        await self.room.connect(self.url, self._token)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        for participant in self.room.remote_participants.values():
            self._on_participant(participant)
        self._spawn(self._microphone())

    def speak(self, pcm: np.ndarray) -> Utterance:
        """Queue ``pcm`` (16 kHz int16) on the microphone; the futures tell when it went out."""
        utterance = Utterance(pcm=pcm, onset_index=speech_onset(pcm), end_index=speech_end(pcm))
        self._queue.append(utterance)
        return utterance

    async def leave(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.room.disconnect()
        await self._source.aclose()

    # -- what was received --------------------------------------------------------------------------------------
    def states(self) -> list[AttributeChange]:
        return [change for change in self.attributes if change.key == STATE_ATTRIBUTE]

    def audio_timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """(sample times, samples) of everything received from the avatar, in order of arrival.

        A chunk was played out no later than it arrived, nor later than any following chunk arrived less the audio
        in between: its start is the least of those bounds (a chunk delayed on its way into Python is put back).
        """
        if not self.audio:
            return np.zeros(0), np.zeros(0, np.int16)
        starts = np.array([chunk.t for chunk in self.audio])
        for i in range(len(starts) - 2, -1, -1):
            starts[i] = min(starts[i], starts[i + 1] - len(self.audio[i].pcm) / SAMPLE_RATE)
        times = np.concatenate(
            [start + np.arange(len(chunk.pcm)) / SAMPLE_RATE for start, chunk in zip(starts, self.audio, strict=True)]
        )
        return times, np.concatenate([chunk.pcm for chunk in self.audio])

    # -- internals -----------------------------------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _microphone(self) -> None:
        """Send 10 ms chunks in real time: the queued utterance if any, silence otherwise."""
        silence = np.zeros(MIC_CHUNK, np.int16)
        current: Utterance | None = None
        position = 0
        while True:
            if current is None and self._queue:
                current, position = self._queue.pop(0), 0
            chunk = silence if current is None else current.pcm[position : position + MIC_CHUNK]
            if len(chunk) < MIC_CHUNK:
                chunk = np.concatenate([chunk, silence[: MIC_CHUNK - len(chunk)]])
            frame = rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, MIC_CHUNK)
            await self._source.capture_frame(frame)
            # this chunk's first sample leaves once everything queued before it has gone
            chunk_start = time.time() + self._source.queued_duration - MIC_CHUNK / SAMPLE_RATE
            if current is not None:
                for fut, index in ((current.started, 0), (current.onset, current.onset_index)):
                    if not fut.done() and index < position + MIC_CHUNK:
                        fut.set_result(chunk_start + (index - position) / SAMPLE_RATE)
                if not current.ended.done() and current.end_index <= position + MIC_CHUNK:
                    current.ended.set_result(chunk_start + (current.end_index - position) / SAMPLE_RATE)
                position += MIC_CHUNK
                if position >= len(current.pcm):
                    current = None

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        now = time.time()
        for key, value in participant.attributes.items():
            self.attributes.append(AttributeChange(now, participant.identity, key, value))

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        now = time.time()
        for key, value in changed.items():
            self.attributes.append(AttributeChange(now, participant.identity, key, value))

    def _on_track(self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO and publication.name == AVATAR_VIDEO_TRACK:
            self._spawn(self._record_video(track))
        elif track.kind == rtc.TrackKind.KIND_AUDIO and publication.name == AVATAR_AUDIO_TRACK:
            self._spawn(self._record_audio(track))
            self._spawn(self._record_receiver(track))

    async def _record_video(self, track: rtc.Track) -> None:
        stream = _VideoStream(track)
        try:
            async for event in stream:
                # the receiver's render time, moved from the monotonic clock onto the wall clock
                rendered = event.timestamp_us / 1e6 + (time.time() - time.monotonic())
                frame = event.frame
                self.video.append(VideoSample(rendered, frame.width, frame.height, read_patch(_brightness(frame))))
                if not self.first_video.done():
                    self.first_video.set_result(rendered)
        finally:
            await stream.aclose()

    async def _record_receiver(self, track: rtc.Track) -> None:
        """Sample the receiver's statistics of the avatar's audio track every ``RECEIVER_STATS_S``."""
        before: tuple[float, int] | None = None
        while True:
            await asyncio.sleep(RECEIVER_STATS_S)  # a sampling period, not a wait for anything
            for stats in await track.get_stats():
                if stats.WhichOneof("stats") != "inbound_rtp":
                    continue
                inbound = stats.inbound_rtp.inbound
                delay, emitted = inbound.jitter_buffer_delay, inbound.jitter_buffer_emitted_count
                if before is not None and emitted > before[1] and inbound.total_samples_received:
                    concealed_s = (
                        inbound.concealed_samples / inbound.total_samples_received * (inbound.total_samples_duration)
                    )
                    mean_ms = (delay - before[0]) / (emitted - before[1]) * 1000.0
                    self.receiver.append(ReceiverSample(time.time(), mean_ms, concealed_s * 1000.0))
                before = (delay, emitted)

    async def _record_audio(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for event in stream:
                now = time.time()
                pcm = np.frombuffer(event.frame.data, np.int16).copy()
                self.audio.append(AudioChunk(now, pcm))
        finally:
            await stream.aclose()
