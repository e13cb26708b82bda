"""The settings of the model and its streaming engine: where the weights are, where and how the model runs, and the
real-time engine's budgets.

Plain pydantic models with defaults: a caller builds them from its own configuration (the livekit plugin from its
options and the ``DYSTREAM_MODEL__*`` / ``DYSTREAM_STREAM__*`` variables). This package reads no environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

DEFAULT_CACHE = Path.home() / ".cache" / "dystream"
MODEL_FPS = 25
# the quality ladder of the streaming engine, best first (avatar.stream.ladder.ladder)
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
    batch_sessions: bool = Field(
        False,
        description="the conversations of a process share one engine per model and device: each tick's latents and "
        "pictures of all of them in one batch (README: many avatars on one device); off: each its own",
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
