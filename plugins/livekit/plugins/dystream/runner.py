"""``DyStreamRunner``: the avatar's side of livekit-agents' avatar protocol, built on its public pieces only: it reads
the agent's speech from an ``AudioReceiver`` into our ``VideoGenerator``, publishes what comes out (an audio and a
video track, ``AvatarOptions``' size and rate), and reports playback back through the receiver. The same protocol as
livekit's own ``AvatarRunner``, with what a real room showed necessary:

1. Audio first. The generator hands out every 40 ms tick's audio when the engine's clock takes it, and the tick's
   picture separately, whenever it is rendered. The audio goes into the audio source at once, so the agent's voice
   keeps real-time rate whatever the engine does. Each tick's picture has a slot: when its audio starts to leave
   the audio source (counted by ``PlayoutSource``, right across dry spells), plus ``video_delay_ms`` (WebRTC
   receivers hold audio in their jitter buffer longer than video). A pacing task captures, at each slot, the tick's
   picture if it has come and else the last one again (``FrameSlots``): the track keeps its frame rate, a late
   picture is dropped rather than shown late, and the video follows the audio. On a rung that renders every n-th
   tick, each picture shows from its own tick's slot until the next one; the engine puts its pictures where sounds
   start (``avatar.stream.keyframes``), so a sound and the picture that shows it start together.

2. The video is published at the stream's frame rate (the SDK's default encoding picks a preset from the frame size,
   and caps small frames, the 128 px test model's, at 15 fps). Both tracks go out in one media stream
   (``stream="avatar"``), so receivers also synchronise them with their own lip sync. They are published when the
   first item comes out of the generator, once the room is connected.

3. The audio never stops: idle ticks carry silence (not counted as playback), and the audio source keeps
   ``playout_lead_ms`` of audio queued (``PlayoutSource``). The lead is also the time a picture has to be rendered
   before its slot.

4. Playback as the agent expects it: ``playback_started`` with a segment's first audio frame queued,
   ``playback_finished`` when the generator's ``AudioSegmentEnd`` comes out, or (``interrupted=True``) when the
   receiver asks to clear the buffer while a segment plays. A segment plays from when its first frame is read from
   the receiver (the generator relies on this: ``generator.py``). An interruption that comes while an audio frame is
   being queued ends that frame's playback accounting: the frame belongs to the interrupted segment. The interruption
   drops the queued audio and the slots it had; the last picture stays on screen until the next tick's slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit import rtc
from livekit.agents.utils import aio, log_exceptions
from livekit.agents.voice.avatar import AudioReceiver, AudioSegmentEnd, AvatarOptions, VideoGenerator

from .generator import TickAudio, TickVideo
from .log import logger
from .metrics import MetricsRecorder
from .pacer import FrameSlots
from .playout import PlayoutSource

MIN_BITRATE = 300_000
BITS_PER_PIXEL = 0.15  # per frame, for the default maximum bitrate
MEDIA_STREAM = "avatar"  # both tracks in one stream: receivers synchronise them


class DyStreamRunner:
    def __init__(
        self,
        room: rtc.Room,
        *,
        audio_recv: AudioReceiver,
        video_gen: VideoGenerator,
        options: AvatarOptions,
        video_delay_ms: float = 40.0,
        playout_lead_ms: float = 80.0,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self._room = room
        self._audio_recv = audio_recv
        self._video_gen = video_gen
        self._options = options
        self._video_delay_s = video_delay_ms / 1000.0
        self._frame_s = 1.0 / options.video_fps
        self._metrics = metrics
        self._slots: FrameSlots[rtc.VideoFrame] = FrameSlots(self._frame_s)
        self._playout = PlayoutSource(
            options.audio_sample_rate,
            options.audio_channels,
            lead_s=playout_lead_ms / 1000.0,
            frame_s=self._frame_s,
            on_clear=self._slots.clear,
        )
        self._video_source = rtc.VideoSource(width=options.video_width, height=options.video_height)
        self._connected = asyncio.Event()
        self._publishing = asyncio.Lock()
        self._published = False
        self._playing = False  # a segment's audio is being read from the receiver and played
        self._position = 0.0  # seconds of the playing segment queued so far
        self._clears = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main_tasks: list[asyncio.Task[None]] = []  # reading the receiver, forwarding the generator's output
        self._pace_task: asyncio.Task[None] | None = None

    @property
    def audio_source(self) -> rtc.AudioSource:
        """Where the avatar's voice is queued for sending (an interruption drops what is queued there)."""
        return self._playout

    def video_encoding(self) -> rtc.VideoEncoding:
        o = self._options
        bitrate = max(MIN_BITRATE, int(o.video_width * o.video_height * o.video_fps * BITS_PER_PIXEL))
        return rtc.VideoEncoding(max_framerate=o.video_fps, max_bitrate=bitrate)

    async def start(self) -> None:
        await self._audio_recv.start()
        self._audio_recv.on("clear_buffer", self._on_clear_buffer)
        self._room.on("connection_state_changed", self._on_connection_state_changed)
        self._on_connection_state_changed()
        self._main_tasks = [
            asyncio.create_task(self._read_audio(), name="dystream-read-audio"),
            asyncio.create_task(self._forward(), name="dystream-forward"),
        ]

    def _on_connection_state_changed(self, *_: object) -> None:
        if self._room.isconnected():
            self._connected.set()

    async def _publish_tracks(self) -> None:
        async with self._publishing:
            if self._published:
                return
            await self._connected.wait()
            audio_track = rtc.LocalAudioTrack.create_audio_track("avatar_audio", self._playout)
            audio_options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, stream=MEDIA_STREAM)
            audio = await self._room.local_participant.publish_track(audio_track, audio_options)
            await audio.wait_for_subscription()
            video_track = rtc.LocalVideoTrack.create_video_track("avatar_video", self._video_source)
            video_options = rtc.TrackPublishOptions(
                source=rtc.TrackSource.SOURCE_CAMERA, video_encoding=self.video_encoding(), stream=MEDIA_STREAM
            )
            await self._room.local_participant.publish_track(video_track, video_options)
            self._published = True
            self._pace_task = asyncio.create_task(self._pace_video(), name="dystream-video-pacer")

    @log_exceptions(logger=logger)
    async def _read_audio(self) -> None:
        async for frame in self._audio_recv:
            if isinstance(frame, rtc.AudioFrame):
                self._playing = True
            await self._video_gen.push_audio(frame)

    @log_exceptions(logger=logger)
    async def _forward(self) -> None:
        async for item in self._video_gen:
            if isinstance(item, AudioSegmentEnd):
                self._segment_ended()
                continue
            if not self._published:
                await self._publish_tracks()
            if isinstance(item, TickVideo):
                self._slots.add_picture(item.index, item.frame)
                continue
            if not isinstance(item, TickAudio):
                continue
            if item.frame is None:
                starts_at = await self._playout.capture_idle_frame()
            else:
                clears = self._clears
                starts_at = await self._playout.capture_frame(item.frame)
                if clears != self._clears:
                    continue  # interrupted while it was queued: it belongs to the dropped segment, not to a new one
                if self._position == 0.0 and item.frame.duration > 0.0:
                    self._notify(self._audio_recv.notify_playback_started())
                self._position += item.frame.duration
            self._slots.add_slot(item.index, starts_at + self._video_delay_s)

    @log_exceptions(logger=logger)
    async def _pace_video(self) -> None:
        """Capture a picture at every slot (``FrameSlots``), on the audio source's clock."""
        loop = asyncio.get_running_loop()
        last: float | None = None
        # the counts reported so far: a picture can also be dropped between slots, when it comes after its own
        shown, repeated, dropped = 0, 0, 0
        while True:
            at = self._slots.next_at(last, loop.time())
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            picture = self._slots.take(at)
            if picture is not None:
                self._video_source.capture_frame(picture)
            if self._metrics is not None:
                self._metrics.on_video_slot(
                    shown=self._slots.shown - shown,
                    repeated=self._slots.repeated - repeated,
                    dropped=self._slots.dropped - dropped,
                )
            shown, repeated, dropped = self._slots.shown, self._slots.repeated, self._slots.dropped
            now = loop.time()
            last = at if now - at < self._frame_s else now  # a blocked loop: start again from now, no burst

    def _on_clear_buffer(self) -> None:
        """The agent interrupted its speech: the generator drops it, and a segment that was playing is finished as
        interrupted at the position it reached."""
        self._clears += 1
        playing, self._playing = self._playing, False
        self._notify(self._interrupt(playing))

    @log_exceptions(logger=logger)
    async def _interrupt(self, playing: bool) -> None:
        cleared = self._video_gen.clear_buffer()
        if asyncio.iscoroutine(cleared):
            await cleared
        if playing:
            position, self._position = self._position, 0.0
            finished = self._audio_recv.notify_playback_finished(playback_position=position, interrupted=True)
            if asyncio.iscoroutine(finished):
                await finished

    def _segment_ended(self) -> None:
        if not self._playing:
            return
        finished = self._audio_recv.notify_playback_finished(playback_position=self._position, interrupted=False)
        self._notify(finished)
        self._playing = False
        self._position = 0.0

    def _notify(self, result: object) -> None:
        """Run a receiver's notification (or our own coroutine) without holding up the media."""
        if asyncio.iscoroutine(result):
            task = asyncio.create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        dry_ms = round(self._playout.dry_s * 1000.0)
        logger.info(
            "avatar playout closed", extra={"audio_dry_spells": self._playout.dry_spells, "audio_dry_ms": dry_ms}
        )
        self._room.off("connection_state_changed", self._on_connection_state_changed)
        await self._audio_recv.aclose()
        await aio.cancel_and_wait(*self._main_tasks, *([self._pace_task] if self._pace_task else []))
        await aio.cancel_and_wait(*self._tasks)
        await self._playout.aclose()
        await self._video_source.aclose()
