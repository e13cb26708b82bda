"""The one settings tree of the project.

Every value can be set in the environment with the prefix ``DYSTREAM_`` and ``__`` between nested names
(``DYSTREAM_MODEL__DEVICE=cuda``, ``DYSTREAM_STREAM__LOOKAHEAD_OTHER_MS=80``) or in a ``.env`` file. The LiveKit
connection also reads the variables every LiveKit tool uses (``LIVEKIT_URL``, ``LIVEKIT_API_KEY``,
``LIVEKIT_API_SECRET``). Nothing else in the project reads the environment.
"""

from __future__ import annotations

import difflib
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CACHE = Path.home() / ".cache" / "dystream"
# the quality ladder of the streaming engine, best first (avatar.stream_ladder.ladder)
MODEL_FPS = 25
LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]
RungName = Literal["full", "steps-3", "no-guidance", "half-render", "half-motion", "third"]


class ModelSettings(BaseModel):
    """Where the weights are, where the model runs, and how it samples."""

    checkpoints_dir: Path = Field(DEFAULT_CACHE / "weights", description="root of the downloaded weights")
    motion_checkpoint: Path | None = Field(
        None,
        description="motion generator (.ckpt or .safetensors); default: checkpoints_dir/checkpoints/last.*",
    )
    renderer_checkpoint: Path | None = Field(
        None,
        description="LIA renderer; default: checkpoints_dir/tools/pretrained_model/epoch=0-step=312000.*",
    )
    face_landmarker: Path | None = Field(
        None, description="MediaPipe face_landmarker.task; default: checkpoints_dir/face_landmarker.task"
    )
    portrait_cache_dir: Path = Field(DEFAULT_CACHE / "portraits", description="cached m0 + appearance volumes")
    device: str = Field("cpu", description="torch device: cpu, mps, cuda or cuda:N")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "tf32",
        description="fp32 (the parity reference), tf32 (CUDA's TF32 matmuls; fp32 elsewhere) or bf16 (autocast)",
    )
    steps: int = Field(5, ge=1, le=20, description="FlowMatchEuler sampler steps")
    cfg_audio: float = 0.5
    cfg_audio_other: float = 0.5
    cfg_anchor: float = 0.0
    cfg_all: float = 1.0
    seed: int | None = Field(None, description="noise seed; None draws a fresh one")
    hf_repo: str = "robinwitch/DyStream"
    hf_revision: str | None = None
    wav2vec_repo: str = "facebook/wav2vec2-base-960h"
    face_landmarker_url: str = (
        "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
    )

    @field_validator("device")
    @classmethod
    def _device_known(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
            raise ValueError("should be cpu, mps, cuda or cuda:N (N a device number)")
        return value

    @property
    def motion_checkpoint_path(self) -> Path:
        return self.motion_checkpoint or self.checkpoints_dir / "checkpoints" / "last.ckpt"

    @property
    def renderer_checkpoint_path(self) -> Path:
        default = self.checkpoints_dir / "tools" / "pretrained_model" / "epoch=0-step=312000.ckpt"
        return self.renderer_checkpoint or default

    @property
    def face_landmarker_path(self) -> Path:
        return self.face_landmarker or self.checkpoints_dir / "face_landmarker.task"


class StreamSettings(BaseModel):
    """The real-time engine: lookahead, audio context and queue sizes."""

    fps: int = Field(
        25, ge=1, le=60, description="output frame rate; DyStream is trained at 25, the only one it runs at"
    )
    lookahead_self_ms: int = Field(60, ge=0, le=200)
    lookahead_other_ms: int = Field(60, ge=0, le=200)
    left_context_ms: int = Field(2000, ge=0, le=10000, description="wav2vec left context per stream")
    max_queued_self_s: float = Field(30.0, gt=0, le=600, description="TTS audio buffered ahead of playout")
    self_prebuffer_ms: int = Field(
        0, ge=0, le=1000, description="agent speech a reply waits for before it starts playing, beyond the lookahead"
    )
    remote_self_prebuffer_ms: int = Field(
        80,
        ge=0,
        le=1000,
        description="the same on a remote avatar worker, where the speech comes over LiveKit data streams: a jitter "
        "buffer, so a late packet does not leave a hole in the voice (the agent sends its speech ahead of real time, "
        "avatar.remote_send_lead_ms, so only a reply's first packets can come late)",
    )
    max_other_backlog_ms: int = Field(
        200, ge=40, le=5000, description="user audio kept beyond lookahead before dropping"
    )
    adaptive: bool = Field(True, description="step down the quality ladder when the engine cannot keep up")
    floor_rung: RungName = Field("third", description="lowest quality rung adaptation may use (README: the ladder)")
    pinned_rung: RungName | None = Field(None, description="run at this rung always (adaptation off)")
    cuda_graphs: bool = Field(True, description="replay the transformer and flow-head steps from CUDA graphs on a GPU")
    worker_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="the engine's model threads run this much below the process's priority (Linux nice): on a busy "
        "CPU the voice, the event loop and LiveKit's media threads come first, the quality ladder absorbs the rest",
    )
    remote_worker_nice: int = Field(
        3,
        ge=0,
        le=19,
        description="the same on a remote avatar worker, whose process carries nothing but the avatar: 5 steps lost to "
        "every other process on a busy CPU and missed their pictures' slots, 0 took the CPU from the worker's WebRTC "
        "threads (README: CPU priority)",
    )
    motion_extra_nice: int = Field(
        4,
        ge=0,
        le=19,
        description="the motion thread runs this much further below the process than the render thread: on a busy "
        "CPU the render thread comes first, as a picture has a deadline (its slot) and most of the motion thread's "
        "work (the ticks between pictures) has none",
    )
    gil_switch_interval_ms: float = Field(
        5.0,
        gt=0,
        le=100,
        description="Python's thread switch interval, set process-wide when the engine starts: the event loop waits "
        "at most this long for the GIL each time it takes it back from the model threads (5: Python's own; shorter "
        "helped an in-process call on a busy CPU, but measured worse in remote mode)",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch intra-op threads, set process-wide when the engine starts (None: torch's)",
    )

    @field_validator("fps")
    @classmethod
    def _fps_of_the_model(cls, value: int) -> int:
        if value != MODEL_FPS:
            raise ValueError(f"DyStream runs at {MODEL_FPS} fps only (each frame is 40 ms of its audio)")
        return value


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


class AgentSettings(BaseModel):
    """The voice pipeline. Without speech services the agent greets and answers with configured audio."""

    agent_name: str = ""
    stt: str | None = Field(None, description="livekit inference STT model, e.g. deepgram/nova-3")
    llm: str | None = Field(None, description="livekit inference LLM, e.g. openai/gpt-4.1-mini")
    tts: str | None = Field(None, description="livekit inference TTS, e.g. cartesia/sonic-2")
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
    max_jobs: int | None = Field(
        None,
        ge=1,
        description="conversations per agent worker; its load is then active/max_jobs (default in-process: the "
        "avatars the machine holds at the quality floor, measured at start; remote: CPU load)",
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DYSTREAM_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # an unknown DYSTREAM_ variable is reported by load_settings, with the nearest name
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    model: ModelSettings = Field(default_factory=ModelSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    livekit: LiveKitSettings = Field(default_factory=LiveKitSettings)
    avatar: AvatarSettings = Field(default_factory=AvatarSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    log_format: Literal["json", "console"] = "console"
    log_level: LogLevel = "INFO"
    parity_dir: Path = Field(Path("../shared/parity"), description="golden outputs of the official code")
    samples_dir: Path = Field(Path("../shared/samples"), description="official example portrait and audio")

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


class SettingsError(ValueError):
    """A ``DYSTREAM_*`` variable that is unknown or invalid; the message names it, its value and what is allowed."""


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


def _set_variables(env_file: Any) -> dict[str, str]:
    found = {name: value or "" for name, value in _dotenv(env_file).items() if name.upper().startswith("DYSTREAM_")}
    found.update({name: value for name, value in os.environ.items() if name.upper().startswith("DYSTREAM_")})
    return found


def _reason(error: dict[str, Any]) -> str:
    """Pydantic's message as the rest of a sentence ("Input should be greater than 0" -> "should be greater ...")."""
    message = re.sub(r"^Value error, ", "", error["msg"])
    return re.sub(r"^(Input|String) should", "should", message)


def load_settings() -> Settings:
    """The settings from the environment and ``.env``, or a ``SettingsError`` naming the first bad variable."""
    known = variable_names()
    variables = _set_variables(Settings.model_config.get("env_file"))
    for name in sorted(variables):
        if name.upper() not in known:
            nearest = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            hint = f": did you mean {nearest[0]}?" if nearest else ": see `config/settings.py` for the names"
            raise SettingsError(f"{name} is not a DyStream setting{hint}")
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = "DYSTREAM_" + "__".join(str(part).upper() for part in error["loc"])
        value = variables.get(variable, error.get("input"))
        raise SettingsError(f"{variable}={value} is invalid: {_reason(error)}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (a ``SettingsError`` for a bad variable)."""
    return load_settings()
