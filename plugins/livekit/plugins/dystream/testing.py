"""A duck-typed room for running ``DyStreamRunner`` and the avatar session without a LiveKit server (tests, demos).

``DyStreamRunner`` needs only ``isconnected()``, the ``connection_state_changed`` event and
``local_participant.publish_track(...)`` whose result has ``wait_for_subscription()``; the session and the listener
also read ``name``, ``remote_participants`` and the local participant's identity, and write its attributes. Tracks
published here are recorded, not sent. Remote participants are added and removed with ``join``/``leave``, which
emit the same events as a real room. RPC methods registered by the local participant can be invoked with
``call_rpc`` (as if a remote participant called them); RPCs it performs are recorded in ``rpc_calls`` and emitted as
the room's ``"rpc_performed"`` event (destination, method, payload). ``next_event`` waits for an event. Byte streams
sent to it are delivered with ``send_byte_stream``, as the agent's ``DataStreamAudioOutput`` would send them; byte
streams the local participant opens (``stream_bytes``, as ``DataStreamAudioOutput`` does) are recorded in
``byte_streams`` and emitted as the room's ``"byte_stream_opened"`` event (a ``FakeByteStreamWriter``, which keeps
the chunks written to it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc


def next_event(
    emitter: rtc.EventEmitter[Any], name: str, accept: Callable[..., bool] = lambda *_: True, *, timeout: float = 5.0
) -> Awaitable[Any]:
    """The next ``name`` event of ``emitter`` whose arguments ``accept`` takes (its first argument, or None). It
    listens from the call on, so call it before what causes the event, and await it after; ``timeout`` is a deadline
    for an event that must come, not a pause."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on(*args: Any) -> None:
        if not future.done() and accept(*args):
            future.set_result(args[0] if args else None)

    emitter.on(name, on)
    future.add_done_callback(lambda _: emitter.off(name, on))
    return asyncio.wait_for(future, timeout)


@dataclass
class FakePublication:
    name: str
    source: int
    kind: int
    sid: str

    async def wait_for_subscription(self) -> None:
        return None


@dataclass
class FakeParticipant:
    identity: str
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    state: int = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
    attributes: dict[str, str] = field(default_factory=dict)
    track_publications: dict[str, FakePublication] = field(default_factory=dict)


class FakeLocalParticipant(FakeParticipant):
    def __init__(self, identity: str, room: FakeRoom) -> None:
        super().__init__(identity=identity, kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
        self._room = room
        self.published: list[FakePublication] = []
        self._rpc_handlers: dict[str, Callable[[rtc.RpcInvocationData], Any]] = {}
        self.rpc_calls: list[tuple[str, str, str]] = []  # (destination, method, payload)
        self.byte_streams: list[FakeByteStreamWriter] = []

    def register_rpc_method(self, method: str, handler: Callable[[rtc.RpcInvocationData], Any]) -> None:
        self._rpc_handlers[method] = handler

    async def perform_rpc(self, *, destination_identity: str, method: str, payload: str, **_: Any) -> str:
        self.rpc_calls.append((destination_identity, method, payload))
        self._room.emit("rpc_performed", destination_identity, method, payload)
        return "ok"

    async def stream_bytes(
        self,
        name: str,
        *,
        topic: str = "",
        destination_identities: list[str] | None = None,
        attributes: dict[str, str] | None = None,
        **_: Any,
    ) -> FakeByteStreamWriter:
        writer = FakeByteStreamWriter(name, topic, list(destination_identities or []), dict(attributes or {}))
        self.byte_streams.append(writer)
        self._room.emit("byte_stream_opened", writer)
        return writer

    async def publish_track(self, track: Any, options: rtc.TrackPublishOptions) -> FakePublication:
        kind = rtc.TrackKind.KIND_VIDEO if isinstance(track, rtc.LocalVideoTrack) else rtc.TrackKind.KIND_AUDIO
        publication = FakePublication(
            name=track.name, source=options.source, kind=kind, sid=f"TR_{len(self.published)}"
        )
        self.published.append(publication)
        self.track_publications[publication.sid] = publication
        self._room.emit("local_track_published", publication, track)
        return publication

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attributes.update(attributes)
        self._room.emit("participant_attributes_changed", dict(attributes), self)


class FakeRoom(rtc.EventEmitter[str]):
    def __init__(self, *, name: str = "fake-room", local_identity: str = "agent") -> None:
        super().__init__()
        self.name = name
        self.local_participant = FakeLocalParticipant(local_identity, self)
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.connection_state = rtc.ConnectionState.CONN_CONNECTED
        self._byte_stream_handlers: dict[str, Callable[[Any, str], None]] = {}

    def isconnected(self) -> bool:
        return self.connection_state == rtc.ConnectionState.CONN_CONNECTED

    def join(
        self, identity: str, *, kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, **attributes: str
    ) -> FakeParticipant:
        participant = FakeParticipant(identity=identity, kind=kind, attributes=dict(attributes))
        self.remote_participants[identity] = participant
        self.emit("participant_connected", participant)
        self.emit("participant_active", participant)
        return participant

    def leave(self, identity: str) -> None:
        participant = self.remote_participants.pop(identity)
        self.emit("participant_disconnected", participant)

    def register_byte_stream_handler(self, topic: str, handler: Callable[[Any, str], None]) -> None:
        self._byte_stream_handlers[topic] = handler

    def send_byte_stream(
        self, topic: str, sender: str, chunks: list[bytes], attributes: dict[str, str]
    ) -> FakeByteStream:
        """Deliver a byte stream from ``sender``; it stays open until ``close()`` (closing = the segment's end)."""
        stream = FakeByteStream(attributes)
        for chunk in chunks:
            stream.write(chunk)
        self._byte_stream_handlers[topic](stream, sender)
        return stream

    async def call_rpc(self, method: str, caller: str, payload: str = "") -> Any:
        """Invoke the local participant's RPC handler as ``caller`` would."""
        data = rtc.RpcInvocationData(request_id="fake", caller_identity=caller, payload=payload, response_timeout=5.0)
        result = self.local_participant._rpc_handlers[method](data)
        return await result if asyncio.iscoroutine(result) else result


@dataclass
class FakeByteStreamWriter:
    """A byte stream the local participant sends: what was written to it, and whether it was closed."""

    name: str
    topic: str
    destination_identities: list[str]
    attributes: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)
    closed: bool = False

    async def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    async def aclose(self, **_: Any) -> None:
        self.closed = True


@dataclass
class _StreamInfo:
    attributes: dict[str, str]
    stream_id: str = "fake-stream"


class FakeByteStream:
    """A received byte stream: chunks written by the sender, iteration ends when it is closed."""

    def __init__(self, attributes: dict[str, str]) -> None:
        self.info = _StreamInfo(dict(attributes))
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def write(self, chunk: bytes) -> None:
        self._queue.put_nowait(chunk)

    def close(self) -> None:
        self._queue.put_nowait(None)

    def __aiter__(self) -> FakeByteStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class HeldRenderer:
    """A renderer that takes at least ``frame_s`` per frame: the engine held below real time, as on a slower device
    (tests and benchmarks; never a production setting). Everything but ``render`` is the wrapped renderer's."""

    def __init__(self, renderer: Any, frame_s: float) -> None:
        import torch

        from avatar.stream.traced import TracedCall

        self.wrapped = renderer
        self.frame_s = frame_s
        # traced as the engine traces a plain renderer (the hold stays outside the trace): what is slow is the
        # device, not the Python around it
        traced = isinstance(renderer, torch.nn.Module) and renderer.device.type == "cpu"
        self._render = TracedCall(renderer.render, "held renderer", [renderer] if traced else [], enabled=traced)

    def render(self, source: Any, target: Any, f_app: Any) -> Any:
        started = time.perf_counter()
        frame = self._render(source, target, f_app)
        rest = self.frame_s - (time.perf_counter() - started)
        if rest > 0:
            time.sleep(rest)  # the time a slower device would compute
        return frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def tiny_engine(stream: Any = None, model: Any = None, *, seed: int = 0, render_s: float | None = None) -> Any:
    """An ``AvatarStream`` on the tiny random model and a random portrait: real code, seconds to build (tests).

    ``stream`` / ``model``: ``StreamSettings`` / ``ModelSettings`` (defaults: the defaults). ``render_s``: hold each
    rendered frame to at least that long (``HeldRenderer``).
    """
    import torch

    from avatar.motion.checkpoints import random_motion_generator
    from avatar.motion.config import MotionConfig
    from avatar.renderer import RendererConfig, random_renderer
    from avatar.settings import ModelSettings, StreamSettings
    from avatar.stream.engine import AvatarStream

    motion = random_motion_generator(MotionConfig.tiny(), seed=seed)
    renderer = random_renderer(RendererConfig.tiny(), seed=seed)
    size = renderer.config.image_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.inference_mode():
        m0, f_app = renderer.encode_portrait(image)
    portrait = RandomPortrait(m0=m0, f_app=f_app, image=np.zeros((size, size, 3), np.uint8))
    if render_s is not None:
        renderer = HeldRenderer(renderer, render_s)
    return AvatarStream(
        motion, renderer, portrait, stream=stream or StreamSettings(), model=model or ModelSettings(), noise_seed=seed
    )


@dataclass
class RandomPortrait:
    m0: Any
    f_app: Any
    image: Any
