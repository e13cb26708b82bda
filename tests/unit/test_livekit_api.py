"""What the plugin uses of livekit-agents and livekit-rtc, checked against the installed versions: the avatar protocol
(``AudioReceiver``, ``VideoGenerator``, ``AudioSegmentEnd``, ``AvatarOptions``), the agent's audio outputs, the
avatar session and metrics bases, and the rtc pieces the runner publishes with. The dependency on livekit-agents has
no upper bound: a release that changes any of this fails here, before a user meets it.

``AvatarAudioOutput`` (remote mode: only the dispatched avatar gets the speech) extends ``DataStreamAudioOutput``
through its hooks for the start of a stream and the playback RPCs, and reads the room and the destination it was
given; those hooks are checked here by name as well, with the livekit utility it waits for the avatar's attribute
with."""

from __future__ import annotations

import dataclasses
import inspect

from livekit import rtc
from livekit.agents import MetricsCollectedEvent, types
from livekit.agents.metrics.base import AvatarMetrics, Metadata
from livekit.agents.utils.participant import wait_for_participant_attribute
from livekit.agents.voice import avatar


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_avatar_protocol_is_what_the_runner_and_the_generator_implement() -> None:
    assert avatar.AudioReceiver.__abstractmethods__ == {
        "notify_playback_finished",
        "notify_playback_started",
        "__aiter__",
    }
    assert parameters(avatar.AudioReceiver.notify_playback_finished) == ["self", "playback_position", "interrupted"]
    assert inspect.iscoroutinefunction(avatar.AudioReceiver.start)
    assert inspect.iscoroutinefunction(avatar.AudioReceiver.aclose)
    assert issubclass(avatar.AudioReceiver, rtc.EventEmitter)  # the runner listens to its "clear_buffer"
    assert avatar.VideoGenerator.__abstractmethods__ == {"push_audio", "clear_buffer", "__aiter__"}
    assert [f.name for f in dataclasses.fields(avatar.AvatarOptions)] == [
        "video_width",
        "video_height",
        "video_fps",
        "audio_sample_rate",
        "audio_channels",
    ]
    avatar.AudioSegmentEnd()


def test_the_agent_side_outputs_and_receivers_take_our_arguments() -> None:
    queue = inspect.signature(avatar.QueueAudioOutput)
    assert {"sample_rate", "wait_playback_start"} <= set(queue.parameters)
    stream = inspect.signature(avatar.DataStreamAudioOutput)
    assert {"room", "destination_identity", "sample_rate", "wait_remote_track", "wait_playback_start"} <= set(
        stream.parameters
    )
    assert {"room", "sender_identity"} <= set(inspect.signature(avatar.DataStreamAudioReceiver).parameters)
    for hook in ("_start_task", "_handle_playback_started", "_handle_playback_finished", "capture_frame"):
        assert callable(getattr(avatar.DataStreamAudioOutput, hook, None)), hook
    source = inspect.getsource(avatar.DataStreamAudioOutput.__init__)
    for attribute in ("self._room", "self._destination_identity", "self._started"):
        assert attribute in source, attribute
    # livekit.agents.utils does not re-export it: AvatarAudioOutput imports it from its module
    assert parameters(wait_for_participant_attribute) == ["room", "identity", "attribute", "value"]


def test_the_session_and_metrics_bases() -> None:
    assert parameters(avatar.AvatarSession.start)[:3] == ["self", "agent_session", "room"]
    assert {"timestamp", "metadata"} <= set(AvatarMetrics.model_fields)
    assert {"model_name", "model_provider"} <= set(Metadata.model_fields)
    assert "metrics" in MetricsCollectedEvent.model_fields
    assert types.ATTRIBUTE_PUBLISH_ON_BEHALF == "lk.publish_on_behalf"


def test_the_rtc_pieces_the_runner_publishes_with() -> None:
    assert {"stream", "source", "video_encoding"} <= {f.name for f in rtc.TrackPublishOptions.DESCRIPTOR.fields}
    assert {"max_framerate", "max_bitrate"} <= {f.name for f in rtc.VideoEncoding.DESCRIPTOR.fields}
    for method in ("capture_frame", "clear_queue", "aclose"):
        assert callable(getattr(rtc.AudioSource, method)), method
    assert isinstance(rtc.AudioSource.queued_duration, property)
    assert callable(rtc.VideoSource.capture_frame)
    assert callable(rtc.LocalAudioTrack.create_audio_track) and callable(rtc.LocalVideoTrack.create_video_track)
