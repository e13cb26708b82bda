"""The one settings tree of the project: the plugin's settings and the agent worker's.

``Settings`` is the livekit plugin's ``DyStreamSettings`` (model, stream, vad, livekit, avatar) with the agent
worker's voice pipeline, the log format and the test data folders added. Every value can be set in the environment
with the prefix ``DYSTREAM_`` and ``__`` between nested names (``DYSTREAM_MODEL__DEVICE=cuda``,
``DYSTREAM_AGENT__STT=deepgram/nova-3``) or in a ``.env`` file; the LiveKit connection also reads ``LIVEKIT_URL``,
``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET``. Nothing else in the project reads the environment.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from livekit.plugins.dystream.settings import (
    AvatarSettings,
    DyStreamSettings,
    LiveKitSettings,
    SettingsError,
    VadSettings,
    read_settings,
    set_variables,
)
from pydantic import BaseModel, Field, SecretStr, field_validator

from avatar.settings import DEFAULT_CACHE, ModelSettings, RungName, StreamSettings

__all__ = [
    "DEFAULT_CACHE",
    "AgentSettings",
    "AvatarSettings",
    "LiveKitSettings",
    "ModelSettings",
    "RungName",
    "Settings",
    "SettingsError",
    "StreamSettings",
    "VadSettings",
    "get_settings",
    "load_settings",
]

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class AgentSettings(BaseModel):
    """The voice pipeline. Without speech services the agent greets and answers with configured audio."""

    agent_name: str = ""
    stt: str | None = Field(None, description="STT as provider/model, e.g. deepgram/nova-3")
    llm: str | None = Field(None, description="LLM as provider/model, e.g. openai/gpt-4.1-mini")
    tts: str | None = Field(None, description="TTS as provider/model, e.g. cartesia/sonic-2")
    services: Literal["inference", "plugins"] = Field(
        "inference",
        description="how stt, llm and tts are reached: inference (LiveKit Inference, through LiveKit Cloud) or "
        "plugins (livekit's provider plugins, livekit-plugins-<provider>, with the provider's own API key variable)",
    )
    openai_base_url: str | None = Field(
        None,
        description="plugins: the server of the openai provider, any OpenAI-compatible one (a local server: "
        "http://127.0.0.1:8000/v1); None: OpenAI's",
    )
    openai_api_key: SecretStr | None = Field(
        None, description="plugins: the openai provider's key (None: the OPENAI_API_KEY variable)"
    )
    instructions: str = "You are a friendly assistant with a face. Keep answers short."
    greeting_audio: Path | None = None
    greeting_text: str = "Hello! I am listening."
    reply_clips: list[Path] = Field(default_factory=list)
    reply_delay_s: float = Field(0.6, ge=0, description="offline: silence after the user's turn before answering")
    events_file: Path | None = Field(None, description="append the agent's conversation events here as JSON lines")
    http_port: int = Field(8081, ge=0, le=65535, description="the worker's health endpoint (GET / answers OK)")
    http_host: str = Field(
        "127.0.0.1",
        description="interface the health endpoint listens on: loopback, since /worker tells the agent name, jobs "
        "and load; 0.0.0.0 exposes it (the container images do, for their health check and orchestrator)",
    )
    idle_processes: int | None = Field(
        None, ge=0, description="job processes kept warm (model loaded); default: livekit's (0 for dev, up to 4)"
    )
    initialize_timeout_s: float = Field(180.0, gt=0, description="time a job process has to load the model")
    redispatch_every_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="with an agent name: how often the worker looks for rooms whose agent is gone (its worker died, "
        "or no worker had room when the user came) and dispatches them again; 0: never",
    )
    redispatch_after_s: float = Field(
        20.0, gt=0, le=3600, description="the time a dispatched agent has to join its room before it counts as gone"
    )
    prometheus_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve Prometheus metrics on this port's /metrics (on http_host): livekit's lk_agents_* and the "
        "avatar's dystream_* from every job process; None: off",
    )
    max_jobs: int | None = Field(
        None,
        ge=1,
        description="conversations per agent worker; its load is then active/max_jobs (default in-process: the "
        "avatars the machine holds at the quality floor, measured at start; remote: CPU load)",
    )


class Settings(DyStreamSettings):
    """The plugin's settings and the agent worker's."""

    agent: AgentSettings = Field(default_factory=AgentSettings)
    log_format: Literal["json", "console"] = "console"
    log_level: LogLevel = "INFO"
    parity_dir: Path = Field(Path("../shared/parity"), description="golden outputs of the official code")
    samples_dir: Path = Field(Path("../shared/samples"), description="official example portrait and audio")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def variable_names(model: type[BaseModel] = Settings, prefix: str = "DYSTREAM_") -> list[str]:
    """Every ``DYSTREAM_*`` variable the settings read."""
    names = []
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names += variable_names(nested, f"{variable}__")
        else:
            names.append(variable)
    return names


def load_settings() -> Settings:
    """The settings from the environment and ``.env``, or a ``SettingsError`` naming the first bad variable."""
    known = variable_names()
    for name in sorted(set_variables(Settings)):
        if name.upper() not in known:
            nearest = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            hint = f": did you mean {nearest[0]}?" if nearest else ": see `config/settings.py` for the names"
            raise SettingsError(f"{name} is not a DyStream setting{hint}")
    return read_settings(Settings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (a ``SettingsError`` for a bad variable)."""
    return load_settings()
