"""The plugin's settings: the model, the engine, voice activity, the LiveKit connection and the avatar.

``AvatarSession`` and the avatar worker take a ``DyStreamSettings``; what they are not given comes from the
environment: each value as ``DYSTREAM_<SECTION>__<NAME>`` (``DYSTREAM_MODEL__DEVICE=cuda``,
``DYSTREAM_STREAM__LOOKAHEAD_OTHER_MS=80``) or in a ``.env`` file, and the connection also from the variables every
LiveKit tool reads (``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``). An application with settings of
its own extends ``DyStreamSettings`` (this repository's ``config.settings.Settings`` does).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from dotenv import dotenv_values
from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from avatar.settings import ModelSettings, StreamSettings

from .errors import DyStreamException

S = TypeVar("S", bound="DyStreamSettings")


class VadSettings(BaseModel):
    """Voice activity on the user's and the agent's audio, and the state machine built on it."""

    backend: Literal["silero", "webrtc"] = "silero"
    threshold: float = Field(0.5, ge=0, le=1, description="silero speech probability")
    webrtc_aggressiveness: int = Field(2, ge=0, le=3)
    start_ms: int = Field(60, ge=0, description="speech must last this long to count (hysteresis on)")
    stop_ms: int = Field(400, ge=0, description="silence must last this long to end speech (hysteresis off)")
    gate_self: bool = Field(False, description="feed exact zeros to the self stream outside detected speech")
    gate_other: bool = Field(True, description="feed exact zeros to the other stream outside detected speech")


class LiveKitSettings(BaseModel):
    url: str = Field("", validation_alias=AliasChoices("url", "LIVEKIT_URL"))
    api_key: str = Field("", validation_alias=AliasChoices("api_key", "LIVEKIT_API_KEY"))
    api_secret: SecretStr = Field(SecretStr(""), validation_alias=AliasChoices("api_secret", "LIVEKIT_API_SECRET"))


class AvatarSettings(BaseModel):
    """What the avatar looks like and how it joins a call."""

    portrait: Path | None = Field(None, description="reference portrait image")
    mode: Literal["in-process", "remote"] = "in-process"
    avatar_agent_name: str = Field("dystream-avatar", description="agent name of the remote avatar worker")
    identity: str = Field(
        "dystream-avatar",
        min_length=1,
        description="remote mode: the avatar worker's identity begins with this; each dispatch adds 96 random bits",
    )
    random_weights: bool = Field(False, description="untrained model (tests, demos without weights)")
    size: Literal["full", "tiny"] = Field("full", description="tiny: small random model for tests")
    diagnostic_overlay: bool = Field(False, description="flash a patch on frames whose audio carries a beep")
    video_delay_ms: float = Field(
        80.0,
        ge=0,
        le=500,
        description="video leaves after its audio by this much: receivers buffer audio longer. 80 puts browsers "
        "(Chromium) in sync; receivers on libwebrtc's SDKs (Python, Rust) are in sync at 40",
    )
    playout_lead_ms: float = Field(
        80.0,
        ge=0,
        le=1000,
        description="audio kept queued for sending: a frame the engine delivers this much late still plays smoothly",
    )
    remote_playout_lead_ms: float = Field(
        200.0,
        ge=0,
        le=1000,
        description="the same on a remote avatar worker, whose short jitter buffer (stream.remote_self_prebuffer_ms) "
        "leaves the wait here: a reply starts as late, and each picture has this lead plus the video delay to be ready",
    )
    remote_send_lead_ms: float = Field(
        500.0,
        ge=100,
        le=10000,
        description="remote mode: the agent sends its speech to the avatar worker at most this far ahead of real time "
        "(a whole reply at once delayed the worker's own audio)",
    )
    redispatch_after_s: float = Field(
        5.0,
        gt=0,
        description="remote mode: a dispatch of the avatar worker that no worker has taken after this long is made "
        "again (one made while every avatar worker was full is never taken)",
    )
    metrics_interval_s: float = Field(10.0, gt=0, description="how often the session metrics summary is logged")
    max_sessions_per_worker: int | None = Field(
        None,
        ge=1,
        description="avatar sessions one remote avatar worker runs at once (its load is active / this); "
        "None: as many as its device holds at the quality floor, measured at start",
    )


LIVEKIT_VARIABLES = {"url": "LIVEKIT_URL", "api_key": "LIVEKIT_API_KEY", "api_secret": "LIVEKIT_API_SECRET"}


def _dotenv(env_file: Any) -> dict[str, str | None]:
    """The variables of the ``.env`` file, when there is one."""
    return dotenv_values(env_file) if env_file and Path(str(env_file)).is_file() else {}


class _LiveKitVariables(PydanticBaseSettingsSource):
    """``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET`` (environment, then ``.env``) for ``livekit``."""

    def __init__(self, settings_cls: type[BaseSettings], env_file: Any) -> None:
        super().__init__(settings_cls)
        self.env_file = env_file

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        dotenv = _dotenv(self.env_file)
        values = {}
        for name, variable in LIVEKIT_VARIABLES.items():
            value = os.environ.get(variable) or dotenv.get(variable)
            if value:
                values[name] = value
        return {"livekit": values} if values else {}


class DyStreamSettings(BaseSettings):
    """Every setting the plugin reads, from the environment and ``.env`` where not given."""

    model_config = SettingsConfigDict(
        env_prefix="DYSTREAM_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # variables of the application's own sections
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    livekit: LiveKitSettings = Field(default_factory=LiveKitSettings)
    avatar: AvatarSettings = Field(default_factory=AvatarSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # DYSTREAM_LIVEKIT__URL and friends win over LIVEKIT_URL and friends
        livekit = _LiveKitVariables(settings_cls, getattr(dotenv_settings, "env_file", None))
        return init_settings, env_settings, livekit, dotenv_settings, file_secret_settings


class SettingsError(DyStreamException, ValueError):
    """A ``DYSTREAM_*`` variable that is unknown or invalid; the message names it, its value and what is allowed."""


def set_variables(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """The ``DYSTREAM_*`` variables set in the environment or in ``settings_cls``'s ``.env`` file."""
    env_file = settings_cls.model_config.get("env_file")
    found = {name: value or "" for name, value in _dotenv(env_file).items() if name.upper().startswith("DYSTREAM_")}
    found.update({name: value for name, value in os.environ.items() if name.upper().startswith("DYSTREAM_")})
    return found


def _reason(error: Any) -> str:
    """Pydantic's message as the rest of a sentence ("Input should be greater than 0" -> "should be greater ...")."""
    message = re.sub(r"^Value error, ", "", error["msg"])
    return re.sub(r"^(Input|String) should", "should", message)


def read_settings(settings_cls: type[S] = DyStreamSettings) -> S:  # type: ignore[assignment]
    """``settings_cls`` from the environment and ``.env``, or a ``SettingsError`` naming the first bad variable."""
    try:
        return settings_cls()
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = "DYSTREAM_" + "__".join(str(part).upper() for part in error["loc"])
        value = set_variables(settings_cls).get(variable, error.get("input"))
        raise SettingsError(f"{variable}={value} is invalid: {_reason(error)}") from None
