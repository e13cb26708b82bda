"""Only the dispatched avatar gets the agent's speech and may report its playback (remote mode).

A remote avatar worker joins under an identity made for its dispatch (``AvatarSession``: the configured identity and
96 random bits), as an agent participant (LiveKit gives a job's participant that kind; a user token does not),
publishing on behalf of this agent (``lk.publish_on_behalf``, set by the dispatch). ``AvatarAudioOutput`` sends
speech only while the participant under that identity is such a one, and rejects ``lk.playback_started`` and
``lk.playback_finished`` calls from anyone else. A participant that takes the identity over (LiveKit disconnects the
older of two participants with one identity) gets none of the agent's speech, and what it reports is ignored.
"""

from __future__ import annotations

import contextlib

from livekit import rtc
from livekit.agents import utils
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.utils.participant import wait_for_participant_attribute  # not re-exported by livekit.agents.utils

from .log import logger
from .send_pacing import PacedAudioOutput

AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


def is_dispatched_avatar(participant: rtc.RemoteParticipant | None, agent_identity: str) -> bool:
    """``participant`` is an agent-kind participant publishing on behalf of ``agent_identity``."""
    return (
        participant is not None
        and participant.kind == AGENT_KIND
        and participant.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF) == agent_identity
    )


class AvatarAudioOutput(PacedAudioOutput):
    """``PacedAudioOutput`` that talks to the dispatched avatar only (see the module docstring)."""

    def _trusts(self, identity: str) -> bool:
        participant = self._room.remote_participants.get(identity)
        return is_dispatched_avatar(participant, self._room.local_participant.identity)

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        while self._started and not self._trusts(self._destination_identity):
            await self._wait_for_the_avatar()
        await super().capture_frame(frame)

    async def _start_task(self) -> None:
        await super()._start_task()
        while not self._trusts(self._destination_identity):
            await self._wait_for_the_avatar()

    async def _wait_for_the_avatar(self) -> None:
        identity = self._destination_identity
        participant = self._room.remote_participants.get(identity)
        logger.warning(
            "the participant under the avatar's identity is not the dispatched avatar: no speech is sent to it",
            extra={
                "identity": identity,
                "kind": rtc.ParticipantKind.Name(participant.kind) if participant is not None else None,
            },
        )
        await utils.wait_for_participant(room=self._room, identity=identity, kind=AGENT_KIND)
        with contextlib.suppress(RuntimeError):  # it left before setting the attribute: look again
            await wait_for_participant_attribute(
                self._room,
                identity=identity,
                attribute=ATTRIBUTE_PUBLISH_ON_BEHALF,
                value=self._room.local_participant.identity,
            )

    def _handle_playback_finished(self, data: rtc.RpcInvocationData) -> str:
        if not self._trusts(data.caller_identity):
            return self._reject(data, "lk.playback_finished")
        return super()._handle_playback_finished(data)

    def _handle_playback_started(self, data: rtc.RpcInvocationData) -> str:
        if not self._trusts(data.caller_identity):
            return self._reject(data, "lk.playback_started")
        return super()._handle_playback_started(data)

    def _reject(self, data: rtc.RpcInvocationData, method: str) -> str:
        logger.warning(
            "rejected a call from a participant that is not the dispatched avatar",
            extra={"method": method, "caller": data.caller_identity},
        )
        return "reject"
