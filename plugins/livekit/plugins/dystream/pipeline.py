"""The avatar in a room: engine, generator, runner, the user's stream, state, metrics, wired together.

Both modes build the same thing; only the audio receiver differs: in-process the agent's ``QueueAudioOutput``,
remote a ``DataStreamAudioReceiver`` listening to the agent over LiveKit data streams. The participant publishing
``avatar_audio``/``avatar_video`` (and carrying the ``dystream.state`` and ``dystream.rung`` attributes) is
``room.local_participant``: the agent itself in-process, the avatar worker remotely.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents.voice.avatar import AudioReceiver, AvatarOptions

from .generator import DyStreamVideoGenerator
from .listener import UserListener
from .log import logger
from .metrics import FrameMetrics, MetricsRecorder, SessionMetrics
from .pcm import SAMPLE_RATE
from .runner import DyStreamRunner
from .settings import DyStreamSettings
from .state import ConversationState
from .state_attribute import StateAttributePublisher


@dataclass
class AvatarPipeline:
    engine: Any  # avatar.stream.engine.AvatarStream
    generator: DyStreamVideoGenerator
    runner: DyStreamRunner
    listener: UserListener
    state: ConversationState
    metrics: MetricsRecorder
    publisher: StateAttributePublisher

    @classmethod
    async def start(
        cls,
        room: rtc.Room,
        audio: AudioReceiver,
        engine: Any,
        *,
        settings: DyStreamSettings,
        video_size: tuple[int, int],
        agent_identity: str,
        linked_identity: Callable[[], str | None] | None = None,
        emit: Callable[[FrameMetrics | SessionMetrics], None] | None = None,
    ) -> AvatarPipeline:
        """Start ``engine`` (an ``AvatarStream``) and everything around it; frames flow at once."""
        fps = settings.stream.fps
        state = ConversationState(settings.vad)
        metrics = MetricsRecorder(fps=fps, emit=emit, interval_s=settings.avatar.metrics_interval_s)
        publisher = StateAttributePublisher(state, room.local_participant)
        generator = DyStreamVideoGenerator(
            engine,
            fps=fps,
            state=state,
            state_delay_s=settings.avatar.playout_lead_ms / 1000.0,
            vad=settings.vad,
            metrics=metrics,
            diagnostic_overlay=settings.avatar.diagnostic_overlay,
            on_rung=publisher.set_rung,
        )
        width, height = video_size
        options = AvatarOptions(
            video_width=width, video_height=height, video_fps=fps, audio_sample_rate=SAMPLE_RATE, audio_channels=1
        )
        runner = DyStreamRunner(
            room,
            audio_recv=audio,
            video_gen=generator,
            options=options,
            video_delay_ms=settings.avatar.video_delay_ms,
            playout_lead_ms=settings.avatar.playout_lead_ms,
            metrics=metrics,
        )
        generator.attach_audio_source(runner.audio_source)
        listener = UserListener(
            room,
            engine.push_other,
            state=state,
            vad=settings.vad,
            agent_identity=agent_identity,
            linked_identity=linked_identity,
        )
        await engine.start()
        await runner.start()
        listener.start()
        logger.info("avatar started", extra={"width": width, "height": height, "fps": fps, "agent": agent_identity})
        return cls(engine, generator, runner, listener, state, metrics, publisher)

    async def aclose(self) -> None:
        """Stop everything; safe to call twice."""
        await self.listener.aclose()
        await self.generator.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.runner.aclose(), timeout=5.0)
        await self.engine.aclose()
        await self.publisher.aclose()
        self.metrics.summarize(final=True)
