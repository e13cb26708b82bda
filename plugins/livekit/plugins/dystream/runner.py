"""``DyStreamRunner``: livekit's ``AvatarRunner`` with four changes measured necessary in a real room.

1. The video is published at the stream's frame rate. ``AvatarRunner`` publishes with the SDK's default encoding,
   which picks a preset from the frame size: small frames (the 128 px test model) are capped at 15 fps.

2. Each video frame leaves with its audio, on the audio's clock. ``AVSynchronizer`` sends audio through the
   ``AudioSource`` queue (drained in real time) and video through its own 25 fps timer; how far the two drift apart
   depends on how full the audio queue happens to be and on the timer's phase, and it changed by up to 100 ms from one
   segment to the next. Here a video frame is captured at the moment its audio starts to leave the audio source
   (the audio queued ahead of it when it arrives, counted by ``PlayoutSource`` so that a queue that ran dry does not
   throw the count off), plus ``video_delay_ms``: WebRTC receivers hold audio in their jitter buffer longer than
   video, so the video waits about that much to reach the viewer with its sound. Both tracks are published in one
   media stream (``stream="avatar"``), so receivers also synchronise them with their own lip sync: measured on
   loopback (livekit-server 1.13, the Python SDK), the settled offsets stayed within -22..+8 ms over thirteen calls,
   against -52..+47 ms with the tracks in separate streams, where the offset followed each receiver's jitter buffer.

3. The audio never stops: idle frames (no speech) carry silence (not counted as playback), and the audio source keeps
   ``playout_lead_ms`` of audio queued (``PlayoutSource``). A frame the engine delivers late (a busy CPU) then delays
   nothing the viewer sees, as long as the lead covers it; without it the audio ran dry and the video stalled at
   such frames (80-130 ms gaps at the start of replies on a 2-core machine). The receivers' jitter buffers stay
   settled instead of starting over, with a different delay, at every segment.

4. An interruption that comes while an audio frame is being queued ends that frame's playback accounting: the frame
   belongs to the interrupted segment. ``AvatarRunner`` counted it as the first frame of a new segment (its position
   had just been reset), so the agent got a ``playback_started`` with no speech behind it and the next reply's
   ``playback_finished`` carried both positions (seen in remote mode).

Everything else (lazy publishing, playback started/finished, interruption) is ``AvatarRunner``'s own behaviour.
"""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.agents.utils import log_exceptions
from livekit.agents.voice.avatar import AudioReceiver, AudioSegmentEnd, AvatarOptions, AvatarRunner, VideoGenerator

from .log import logger, stdlib_logger
from .playout import PlayoutSource

MIN_BITRATE = 300_000
BITS_PER_PIXEL = 0.15  # per frame, for the default maximum bitrate
MEDIA_STREAM = "avatar"  # both tracks in one stream: receivers synchronise them


class DyStreamRunner(AvatarRunner):
    def __init__(
        self,
        room: rtc.Room,
        *,
        audio_recv: AudioReceiver,
        video_gen: VideoGenerator,
        options: AvatarOptions,
        video_delay_ms: float = 40.0,
        playout_lead_ms: float = 80.0,
    ) -> None:
        super().__init__(room, audio_recv=audio_recv, video_gen=video_gen, options=options)
        self._video_delay_s = video_delay_ms / 1000.0
        self._frame_s = 1.0 / options.video_fps
        self._notify(self._av_sync.aclose())  # AvatarRunner's own, replaced by these two
        self._notify(self._audio_source.aclose())
        self._playout = PlayoutSource(
            options.audio_sample_rate, options.audio_channels, lead_s=playout_lead_ms / 1000.0, frame_s=self._frame_s
        )
        self._audio_source = self._playout
        self._av_sync = rtc.AVSynchronizer(
            audio_source=self._playout, video_source=self._video_source, video_fps=options.video_fps
        )
        self._last_capture: float | None = None
        self._pending_video: set[asyncio.TimerHandle] = set()
        self._audio_since_video = True
        self._clears = 0

    def video_encoding(self) -> rtc.VideoEncoding:
        o = self._options
        bitrate = max(MIN_BITRATE, int(o.video_width * o.video_height * o.video_fps * BITS_PER_PIXEL))
        return rtc.VideoEncoding(max_framerate=o.video_fps, max_bitrate=bitrate)

    async def _publish_track(self) -> None:
        # AvatarRunner._publish_track, with the video encoding and the media stream set
        async with self._lock:
            await self._room_connected_fut
            audio_track = rtc.LocalAudioTrack.create_audio_track("avatar_audio", self._audio_source)
            audio_options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, stream=MEDIA_STREAM)
            self._audio_publication = await self._room.local_participant.publish_track(audio_track, audio_options)
            await self._audio_publication.wait_for_subscription()
            video_track = rtc.LocalVideoTrack.create_video_track("avatar_video", self._video_source)
            video_options = rtc.TrackPublishOptions(
                source=rtc.TrackSource.SOURCE_CAMERA, video_encoding=self.video_encoding(), stream=MEDIA_STREAM
            )
            self._video_publication = await self._room.local_participant.publish_track(video_track, video_options)

    @log_exceptions(logger=stdlib_logger)
    async def _forward_video(self) -> None:
        async for frame in self._video_gen:
            if isinstance(frame, AudioSegmentEnd):
                self._segment_ended()
                continue
            if not self._video_publication:
                await self._publish_track()
            if isinstance(frame, rtc.VideoFrame):
                if not self._audio_since_video:
                    await self._playout.capture_idle_frame()  # the previous frame was idle
                self._audio_since_video = False
                self._schedule_video(frame)
                continue
            self._audio_since_video = True
            clears = self._clears
            await self._audio_source.capture_frame(frame)
            if clears != self._clears:
                continue  # interrupted while it was queued: it belongs to the dropped segment, not to a new one
            if self._playback_position == 0.0 and frame.duration > 0.0:
                self._notify(self._audio_recv.notify_playback_started())
            self._playback_position += frame.duration

    def _schedule_video(self, frame: rtc.VideoFrame) -> None:
        """Capture ``frame`` when the audio it precedes starts to leave, plus the receivers' extra audio delay.

        The audio queue fills and empties by up to 100 ms when a segment starts or ends; following it at once would
        leave a gap (or a burst) in the video, so consecutive frames stay between half a frame and one and a half
        frames apart, and the video catches up with the audio over a few frames.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = now + self._audio_source.queued_duration + self._video_delay_s
        if self._last_capture is not None:
            at = min(max(at, self._last_capture + 0.5 * self._frame_s), self._last_capture + 1.5 * self._frame_s)
        at = max(at, now)  # late already: at once
        self._last_capture = at

        def capture() -> None:
            self._pending_video.discard(handle)
            self._video_source.capture_frame(frame)

        handle = loop.call_at(at, capture)
        self._pending_video.add(handle)

    def _on_clear_buffer(self) -> None:
        self._clears += 1
        super()._on_clear_buffer()

    def _segment_ended(self) -> None:
        # AvatarRunner._forward_video's handling of AudioSegmentEnd
        if not self._audio_playing:
            return
        self._notify(
            self._audio_recv.notify_playback_finished(playback_position=self._playback_position, interrupted=False)
        )
        self._audio_playing = False
        self._playback_position = 0.0

    def _notify(self, result: object) -> None:
        if asyncio.iscoroutine(result):
            task = asyncio.create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        dry_ms = round(self._playout.dry_s * 1000.0)
        logger.info("avatar playout closed", audio_dry_spells=self._playout.dry_spells, audio_dry_ms=dry_ms)
        for handle in self._pending_video:
            handle.cancel()
        self._pending_video.clear()
        await super().aclose()
