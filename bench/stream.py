"""Benchmark of the streaming engine: ``python -m bench.stream``.

Prints JSON and writes it to ``bench/results/stream.json``. Untrained (random) weights; speed does not depend on the
weights. Sections:

- ``tiny``: the tiny model (``MotionConfig.tiny()`` + ``RendererConfig.tiny()``, 128×128).
  - ``per_frame_ms``: per-stage p50/p95/p99 of ``StreamCore.step`` over the dyadic sample (no pacing).
  - the real-time engine (``AvatarStream``) run for ``--seconds`` of audio at wall-clock speed: ``fps`` (frames
    handed out per second of wall time, after the first second), ``latency_ms`` per stream, lookahead, drops.
  - ``offline_deviation``: streaming (default settings) vs ``offline.generate`` over the whole dyadic sample.
- ``full``: the full-size model (394 M motion + 99.6 M renderer parameters, 512×512) on a handful of frames:
  ``per_frame_ms`` per stage, ``naive_ratio`` (our step / a naive step that re-encodes the whole 3.84 s window of
  both streams every frame, as the official code does; same run, same frames), ``offline_deviation`` on a short
  slice of the sample.

Latency, measured on the real-time run (``definitions`` in the JSON says the same):
- other: a click is written into the user's audio, which is pushed in real time in 10 ms chunks; latency = the
  ``created_at`` of the first frame whose own 40 ms of user audio (``StreamFrame.other_span``) contains the click
  minus the wall time at which the chunk holding the click was pushed.
- self: a reply segment starting with a click is pushed at once (TTS is faster than real time) while the avatar
  is idle; latency = ``created_at`` of the frame whose 40 ms of audio holds the click minus the push time.
The algorithmic latency is the lookahead plus the per-frame compute (p50 of ``total``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from livekit.plugins.dystream.pacer import FrameSlots
from livekit.plugins.dystream.testing import HeldRenderer
from PIL import Image
from tqdm import tqdm

from avatar.errors import InputError
from avatar.motion.audio import SAMPLES_PER_FRAME, input_values, to_25fps
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.offline import generate
from avatar.renderer import Renderer, RendererConfig, random_renderer, to_uint8
from avatar.sampling.cfg import CfgScales, branch_gates
from avatar.sampling.sampler import sample_latent
from avatar.stream.core import StreamCore
from avatar.stream.engine import AudioTick, AvatarStream, StreamFrame
from avatar.stream.ladder import ladder
from avatar.stream.noise import table_noise
from avatar.stream.timing import STAGES
from avatar.stream.warm_up import warm_up
from bench.results_file import write_json_atomic
from config.settings import AvatarSettings, ModelSettings, StreamSettings, get_settings

RESULTS = Path(__file__).resolve().parent / "results" / "stream.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
CLICK = np.array([32767, -32768] * 8, dtype=np.int16)  # 1 ms, far above any speech sample
WINDOW = 96  # frames of audio the official step encodes (3.84 s)


@dataclass
class Models:
    motion: MotionGenerator
    renderer: Renderer
    m0: torch.Tensor
    f_app: torch.Tensor


def percentiles(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"p50": round(p50, 2), "p95": round(p95, 2), "p99": round(p99, 2), "mean": round(v.mean(), 2), "n": v.size}


def stage_stats(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {stage: percentiles([t[stage] for t in timings]) for stage in STAGES}


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def machine(device: str) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _resolve(path: Path) -> Path:
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def read_wav_16k(path: Path) -> np.ndarray:
    """A 16 kHz mono 16-bit wav as float32 (the sample files are exactly that)."""
    if not path.is_file():
        raise InputError(f"sample audio {path} not found: set DYSTREAM_SAMPLES_DIR to the shared samples folder")
    with wave.open(str(path)) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            raise InputError(f"{path} must be 16 kHz mono 16-bit PCM")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768


def build(size: str, device: str, samples: Path) -> Models:
    motion_config = MotionConfig.tiny() if size == "tiny" else MotionConfig()
    render_config = RendererConfig.tiny() if size == "tiny" else RendererConfig()
    motion = random_motion_generator(motion_config, seed=0, device=device)
    renderer = random_renderer(render_config, seed=0, device=device)
    portrait = samples / "portrait_512.png"
    if not portrait.is_file():
        raise InputError(f"sample portrait {portrait} not found: set DYSTREAM_SAMPLES_DIR")
    s = render_config.image_size
    image = Image.open(portrait).convert("RGB").resize((s, s), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    m0, f_app = renderer.encode_portrait(x.to(device))
    return Models(motion, renderer, m0, f_app)


def _core(models: Models, settings: StreamSettings, **kwargs: Any) -> StreamCore:
    return StreamCore(
        models.motion,
        models.renderer,
        models.m0,
        models.f_app,
        lookahead_self_ms=settings.lookahead_self_ms,
        lookahead_other_ms=settings.lookahead_other_ms,
        left_context_ms=settings.left_context_ms,
        **kwargs,
    )


def step_timings(models: Models, audio: tuple[np.ndarray, np.ndarray], frames: int, warmup: int = 1) -> list[dict]:
    """Per-stage timings of ``StreamCore.step`` (default settings, rendering on) over the first frames."""
    ours = _our_steps(models, audio)
    steps = [next(ours) for _ in tqdm(range(frames + warmup), desc="stream step", unit="frame")]
    return steps[warmup:]


def _our_steps(models: Models, audio: tuple[np.ndarray, np.ndarray]) -> Iterator[dict[str, float]]:
    core = _core(models, StreamSettings(), seed=0)
    warm_up(core)
    for result in core.run_clip(audio[0], audio[1], render=True):
        yield result.timings_ms


def interleaved_timings(
    models: Models, audio: tuple[np.ndarray, np.ndarray], frames: int, warmup: int = 1
) -> tuple[list[dict], list[dict]]:
    """Our step and the naive step on the same frames, alternating frame by frame, so that both see the same
    machine load (the ratio stays fair on a shared machine)."""
    ours, naive = _our_steps(models, audio), _naive_steps(models, audio)
    pairs = [(next(ours), next(naive)) for _ in tqdm(range(frames + warmup), desc="ours + naive", unit="frame")]
    return [a for a, _ in pairs[warmup:]], [b for _, b in pairs[warmup:]]


@torch.inference_mode()
def _naive_steps(models: Models, audio: tuple[np.ndarray, np.ndarray]) -> Iterator[dict[str, float]]:
    """The official per-frame loop: re-encode the whole 3.84 s window of both streams, fuse its 95 positions, then
    the same transformer, head and render."""
    motion, cfg = models.motion, CfgScales()
    config = motion.config
    prefix = np.zeros(config.context * SAMPLES_PER_FRAME, np.float32)
    padded = [np.concatenate([prefix, a]) for a in audio]
    gate = branch_gates(cfg.branches, device=motion.device, dtype=motion.dtype).anchor
    history = models.m0.expand(config.context, -1).clone()
    generator = torch.Generator().manual_seed(0)
    source = None
    for j in range(len(audio[0]) // SAMPLES_PER_FRAME - 1):
        t0 = time.perf_counter()
        feats = []
        for encoder, stream in ((motion.audio_encoder_face, padded[0]), (motion.audio_encoder_face_other, padded[1])):
            window = stream[j * SAMPLES_PER_FRAME : (j + WINDOW) * SAMPLES_PER_FRAME]
            values = torch.from_numpy(input_values(window))[None].to(motion.device, motion.dtype)
            feats.append(to_25fps(encoder(values))[0])
        fused = motion.fuse(feats[0][1 : 1 + config.context], feats[1][1 : 1 + config.context], cfg.branches)
        t1 = _sync(motion.device)
        c_n = motion.condition(history, fused, models.m0, gate)
        t2 = _sync(motion.device)
        noise = torch.randn(config.face_dim, generator=generator).to(motion.device)
        latent = sample_latent(motion, c_n, noise, 5, cfg)
        history = torch.cat([history[1:], latent[None]])
        source = latent[None] if source is None else source
        t3 = _sync(motion.device)
        to_uint8(models.renderer.render(source, latent[None], models.f_app))
        t4 = time.perf_counter()
        ms = [(b - a) * 1000 for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4))]
        yield dict(zip(STAGES, ms, strict=True))


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _deviation(streamed: np.ndarray, offline: np.ndarray) -> dict[str, float]:
    cosine = np.sum(streamed * offline, 1) / (np.linalg.norm(streamed, axis=1) * np.linalg.norm(offline, axis=1))
    l2 = np.linalg.norm(streamed - offline, axis=1)
    relative = l2 / np.linalg.norm(offline, axis=1)
    return {
        "cosine_mean": round(float(cosine.mean()), 5),
        "cosine_min": round(float(cosine.min()), 5),
        "l2_mean": round(float(l2.mean()), 4),
        "l2_max": round(float(l2.max()), 4),
        "relative_l2_mean": round(float(relative.mean()), 4),
        "relative_l2_max": round(float(relative.max()), 4),
    }


def offline_deviation(
    models: Models, audio: tuple[np.ndarray, np.ndarray], sweep: tuple[tuple[int, int, int], ...] = ()
) -> dict[str, Any]:
    """Streaming latents (default settings, then each (lookahead self, other, left context) of ``sweep``) vs
    ``offline.generate`` with the same noise: per-frame cosine similarity and L2."""
    frames = len(audio[0]) // SAMPLES_PER_FRAME - 1
    noise = torch.randn(frames, models.motion.config.face_dim, generator=torch.Generator().manual_seed(0))
    offline = generate(models.motion, audio[0], audio[1], models.m0, noise=noise, progress=True).cpu().numpy()

    def stream(lookahead_self: int, lookahead_other: int, left_context: int) -> np.ndarray:
        core = StreamCore(
            models.motion,
            None,
            models.m0,
            None,
            lookahead_self_ms=lookahead_self,
            lookahead_other_ms=lookahead_other,
            left_context_ms=left_context,
            noise=table_noise(noise),
        )
        clip = tqdm(core.run_clip(audio[0], audio[1]), total=frames, desc="streaming", unit="frame")
        return np.stack([r.latent.cpu().numpy() for r in clip])

    defaults = StreamSettings()
    result: dict[str, Any] = {
        "frames": frames,
        "settings": "lookahead 60/60 ms, left context 2000 ms (StreamSettings defaults)",
        "latent_norm_mean": round(float(np.linalg.norm(offline, axis=1).mean()), 3),
        **_deviation(
            stream(defaults.lookahead_self_ms, defaults.lookahead_other_ms, defaults.left_context_ms), offline
        ),
    }
    if sweep:
        result["sweep"] = [
            {
                "lookahead_self_ms": a,
                "lookahead_other_ms": b,
                "left_context_ms": c,
                **_deviation(stream(a, b, c), offline),
            }
            for a, b, c in sweep
        ]
    return result


def _with_clicks(audio: np.ndarray, every_s: float, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    pcm = np.clip(audio * 32768, -32768, 32767).astype(np.int16)
    positions = []
    for start in np.arange(0.5, len(pcm) / 16000 - 0.5, every_s):
        at = int((start + rng.uniform(0, every_s / 2)) * 16000)
        pcm[at : at + CLICK.size] = CLICK
        positions.append(at)
    return pcm, positions


def _has_click(audio: np.ndarray) -> bool:
    return bool(np.any((audio[:-1] == 32767) & (audio[1:] == -32768)))


async def realtime(
    models: Models, audio: tuple[np.ndarray, np.ndarray], seconds: float, threads: int, render_s: float | None = None
) -> dict:
    """Run ``AvatarStream`` at wall-clock speed, user audio live, agent replies as segments; measure it. With
    ``render_s``, every rendered picture takes at least that long (``HeldRenderer``: the engine held below real time).
    """
    settings = StreamSettings(torch_threads=threads)
    rng = np.random.default_rng(0)
    reps = int(np.ceil(seconds * 16000 / len(audio[1])))
    other, clicks = _with_clicks(np.tile(audio[1], reps)[: int(seconds * 16000)], 0.5, rng)
    reply = np.clip(audio[0][32000:48000] * 32768, -32768, 32767).astype(np.int16)  # 1 s of speech
    reply[: CLICK.size] = CLICK

    renderer = models.renderer if render_s is None else HeldRenderer(models.renderer, render_s)
    engine = AvatarStream(models.motion, renderer, models, stream=settings, model=ModelSettings(), noise_seed=0)
    await engine.start()
    chunk = 160  # 10 ms, as LiveKit delivers audio
    pushed_at: dict[int, float] = {}  # click sample → push time of its chunk
    reply_pushed: list[tuple[int, float]] = []  # (segment id, push time)
    ticks: list[AudioTick] = []
    pictures: list[StreamFrame] = []

    async def push_other() -> None:
        start = time.perf_counter()
        for i in range(len(other) // chunk):
            await asyncio.sleep(max(0.0, start + (i + 1) * chunk / 16000 - time.perf_counter()))
            engine.push_other(other[i * chunk : (i + 1) * chunk])
            now = time.perf_counter()
            pushed_at.update({c: now for c in clicks if i * chunk <= c < (i + 1) * chunk})

    async def push_replies() -> None:
        await asyncio.sleep(1.0)
        while True:
            await asyncio.sleep(rng.uniform(1.3, 1.7))  # idle again by now: the 1 s reply has played
            segment = engine.push_self(reply)
            reply_pushed.append((segment, time.perf_counter()))
            engine.end_self_segment()

    async def consume() -> None:
        async for item in engine:
            (pictures if isinstance(item, StreamFrame) else ticks).append(item)

    tasks = [asyncio.create_task(c()) for c in (push_replies, consume)]
    started = time.perf_counter()
    await push_other()
    await asyncio.sleep(0.5)
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    stats = engine.stats
    await engine.aclose()

    steady_ticks = [t for t in ticks if t.taken_at - started >= 1.0]
    steady = [p for p in pictures if p.created_at - started >= 1.0]
    span = steady_ticks[-1].taken_at - steady_ticks[0].taken_at
    other_latency = []
    for click, t in pushed_at.items():
        picture = next((p for p in pictures if p.tick.other_span[0] <= click < p.tick.other_span[1]), None)
        if picture is not None:
            other_latency.append((picture.created_at - t) * 1000)
    self_latency = []
    for segment, t in reply_pushed:
        picture = next((p for p in pictures if p.tick.segment_id == segment and _has_click(p.tick.audio)), None)
        if picture is not None:
            self_latency.append((picture.created_at - t) * 1000)
    timings = [p.timings_ms for p in steady]
    rungs: dict[str, int] = {}
    for picture in pictures:
        rungs[picture.rung] = rungs.get(picture.rung, 0) + 1
    return {
        "seconds": round(elapsed, 2),
        "render_held_to_ms": None if render_s is None else render_s * 1000,
        "ticks": len(ticks),
        "tick_fps": round((len(steady_ticks) - 1) / span, 3),
        "unique_fps": round(len(steady) / span, 3),
        "torch_threads": threads,
        "voice": _voice(ticks, reply.size),
        "published": _published(ticks, pictures),
        "rungs_used": rungs,
        "rung_changes": stats["rung_changes"],
        "latency_ms": {"self": percentiles(self_latency), "other": percentiles(other_latency)},
        "lookahead_ms": {"self": settings.lookahead_self_ms, "other": settings.lookahead_other_ms},
        "algorithmic_latency_ms": {
            "self": round(settings.lookahead_self_ms + percentiles([t["total"] for t in timings])["p50"], 1),
            "other": round(settings.lookahead_other_ms + percentiles([t["total"] for t in timings])["p50"], 1),
        },
        "realtime_per_frame_ms": stage_stats(timings),
        "other_lag_ms": percentiles([t.other_lag_ms for t in steady_ticks]),
        "engine": {
            k: stats[k]
            for k in ("latents_not_rendered", "late_ticks", "clock_reanchors", "other_inserted_ms", "other_dropped_ms")
        },
        "clicks_found": {"self": len(self_latency), "other": len(other_latency)},
    }


async def sessions(
    models: Models, audio: tuple[np.ndarray, np.ndarray], seconds: float, threads: int, count: int
) -> dict[str, Any]:
    """``count`` conversations at once in one process (each its own engine on the shared cores): each one's voice,
    published video and rungs."""
    runs = await asyncio.gather(*(realtime(models, audio, seconds, threads) for _ in range(count)))
    keys = ("tick_fps", "unique_fps", "voice", "rungs_used", "rung_changes")
    return {
        "count": count,
        "each": [{key: run[key] for key in keys} | {"av_offset_ms": run["published"]["av_offset_ms"]} for run in runs],
    }


def _voice(ticks: list[AudioTick], reply_samples: int) -> dict[str, Any]:
    """The agent's replies as the clock handed them out: heard duration / true duration, and the largest hole."""
    stretches, holes = [], []
    by_segment: dict[int, list[AudioTick]] = {}
    for tick in ticks:
        if tick.speaking and tick.segment_id is not None:
            by_segment.setdefault(tick.segment_id, []).append(tick)
    for segment in by_segment.values():
        if len(segment) * SAMPLES_PER_FRAME < reply_samples:
            continue  # cut off by the end of the run
        taken = np.array([t.taken_at for t in segment])
        stretches.append((taken[-1] - taken[0] + 0.04) / (len(segment) * 0.04))
        holes.append(max(0.0, float(np.diff(taken).max()) - 0.04) * 1000)
    return {
        "replies": len(stretches),
        "stretch": {"min": round(min(stretches), 4), "max": round(max(stretches), 4)},
        "largest_hole_ms": round(max(holes), 1),
    }


def _published(ticks: list[AudioTick], pictures: list[StreamFrame]) -> dict[str, Any]:
    """What the publisher (``FrameSlots``, as the plugin's runner drives it) shows: each tick's slot is when its audio
    leaves after the playout lead plus the video delay; a picture counts from when it was ready."""
    avatar = AvatarSettings()
    delay = (avatar.playout_lead_ms + avatar.video_delay_ms) / 1000
    slots: FrameSlots[StreamFrame] = FrameSlots(0.04)
    events = sorted(
        [(t.taken_at + delay, 1, t) for t in ticks] + [(p.created_at, 0, p) for p in pictures], key=lambda e: e[:2]
    )
    reply_starts = {t.index for before, t in pairwise(ticks) if t.speaking and not before.speaking}
    lags, onset_lags, onsets_due = [], [], {}  # onsets_due: a reply's first tick → its slot, until it shows
    for at, kind, item in events:
        if kind == 0:
            slots.add_picture(item.index, item)
            continue
        slots.add_slot(item.index, at)
        if item.index in reply_starts:
            onsets_due[item.index] = at
        shown = slots.take(at)
        if shown is not None:  # the tick heard now vs the tick of the picture shown
            lags.append((item.index - shown.index) * 40.0)
            for onset in [k for k in onsets_due if shown.index >= k]:
                onset_lags.append((at - onsets_due.pop(onset)) * 1000.0)
    return {
        "slots": len(ticks),
        "shown": slots.shown,
        "repeated": slots.repeated,
        "dropped": slots.dropped,
        "av_offset_ms": percentiles(onset_lags) if onset_lags else {},
        "shown_tick_lag_ms": {"p50": percentiles(lags)["p50"], "p95": percentiles(np.abs(lags).tolist())["p95"]},
    }


def ladder_costs(models: Models, audio: tuple[np.ndarray, np.ndarray], frames: int) -> list[dict[str, Any]]:
    """Each rung of the quality ladder over the first ``frames`` of the dyadic sample, as the engine runs it when it
    keeps up: motion and render time per tick, and the deviation of the shown latents (a repeated picture shows its
    tick's latent) from full quality with the same noise."""
    noise = torch.randn(frames + 1, models.motion.config.face_dim, generator=torch.Generator().manual_seed(0))
    settings = StreamSettings()
    shown_full: np.ndarray | None = None
    out = []
    for rung in ladder(ModelSettings().steps):
        core = _core(models, settings, noise=table_noise(noise))
        warm_up(core, (rung,))
        shown, motion_s, render_s, rendered = [], 0.0, 0.0, 0
        latent = last_generated = None
        for j, (a_self, a_other) in enumerate(_ticks(audio, settings, frames)):
            started = time.perf_counter()
            generate = last_generated is None or j - last_generated >= rung.motion_every
            core.hear(a_self[0], a_other[0], a_self[1], a_other[1], encode=generate)  # as the engine does
            if generate:
                latent, last_generated = core.generate(rung), j
                render = j % rung.render_every == 0
            else:
                core.skip()
                render = False
            motion_s += time.perf_counter() - started
            if render:
                started = time.perf_counter()
                core.render(latent)
                render_s += time.perf_counter() - started
                rendered += 1
                shown_latent = latent.cpu().numpy()
            shown.append(shown_latent)
        shown_arr = np.stack(shown)
        if shown_full is None:
            shown_full = shown_arr
        motion_ms, render_ms = motion_s * 1000 / frames, render_s * 1000 / frames
        out.append(
            {
                "rung": rung.name,
                "steps": rung.steps,
                "guidance": rung.guidance,
                "motion_every": rung.motion_every,
                "render_every": rung.render_every,
                "motion_ms_per_tick": round(motion_ms, 2),
                "render_ms_per_tick": round(render_ms, 2),
                "cost_vs_full": None,
                "deviation_from_full": _deviation(shown_arr, shown_full),
            }
        )
    full_cost = max(out[0]["motion_ms_per_tick"], out[0]["render_ms_per_tick"])
    for row in out:
        row["cost_vs_full"] = round(max(row["motion_ms_per_tick"], row["render_ms_per_tick"]) / full_cost, 3)
    return out


def _ticks(audio: tuple[np.ndarray, np.ndarray], settings: StreamSettings, frames: int) -> Iterator[tuple]:
    """Per tick: ((self 40 ms, self lookahead), (other 40 ms, other lookahead)) of the clip."""
    ahead = (settings.lookahead_self_ms * 16, settings.lookahead_other_ms * 16)
    for j in range(frames):
        start, end = j * SAMPLES_PER_FRAME, (j + 1) * SAMPLES_PER_FRAME
        yield tuple((a[start:end], a[end : end + n]) for a, n in zip(audio, ahead, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=32.0, help="real-time run of the tiny engine (>= 30)")
    parser.add_argument("--tiny-threads", type=int, default=1, help="torch threads of the tiny real-time run")
    parser.add_argument("--tiny-frames", type=int, default=200, help="frames timed with StreamCore.step (tiny)")
    parser.add_argument("--full-frames", type=int, default=3, help="frames timed with the full-size model")
    parser.add_argument("--deviation-frames", type=int, default=25, help="full-size offline-deviation frames")
    parser.add_argument("--deviation-start-s", type=float, default=1.5, help="where that slice starts")
    parser.add_argument("--only", choices=("tiny", "full"), help="run one section only (quick checks)")
    parser.add_argument(
        "--held-render-s",
        type=float,
        default=0.06,
        help="the held run: least seconds a picture takes (0.06: with "
        "the motion step, a frame costs about twice the 40 ms budget)",
    )
    parser.add_argument("--sessions", type=int, default=3, help="conversations run at once in the sessions run")
    parser.add_argument("--ladder-frames", type=int, default=150, help="frames of each quality rung (tiny)")
    args = parser.parse_args(argv)

    settings = get_settings()
    samples = _resolve(settings.samples_dir)
    audio = (read_wav_16k(samples / "dyadic_self.wav"), read_wav_16k(samples / "dyadic_other.wav"))
    torch.set_grad_enabled(False)
    result: dict[str, Any] = {"machine": machine(args.device)}
    result["definitions"] = {
        "latency_ms.other": "created_at of the first frame whose own 40 ms of user audio holds a click, minus the "
        "push time of the 10 ms chunk holding it (user audio pushed in real time)",
        "latency_ms.self": "created_at of the frame whose 40 ms of agent audio holds a click at the start of a reply "
        "pushed at once into an idle avatar, minus the push time",
        "algorithmic_latency_ms": "lookahead + per-frame compute (p50 of total)",
        "tick_fps": "audio ticks handed out per second of wall time over the real-time run, first second excluded",
        "unique_fps": "pictures rendered per second of wall time over the same span",
        "voice.stretch": "per reply that played to its end: (last tick - first tick + 40 ms) / its duration",
        "voice.largest_hole_ms": "the longest wait between two ticks of a reply beyond their 40 ms",
        "published": "FrameSlots (the plugin's publisher) driven with each tick's slot at its hand-out time + "
        "playout lead + video delay and each picture from when it was ready: slots, pictures shown at their own "
        "slot, repeated slots, dropped pictures; av_offset_ms: per reply, when a picture of its first tick (or a "
        "later one) shows minus that tick's slot, the lip-sync error a viewer sees at a sound's start (the "
        "end-to-end beeps and flashes measure the same); shown_tick_lag_ms: at every slot, the tick being heard "
        "minus the shown picture's tick (a repeated picture lags by design), p50 and p95 of the absolute value",
        "held": "the same real-time run with each picture held to at least --held-render-s",
        "sessions": "--sessions real-time runs at once in one process, half as long (several calls on one machine)",
        "ladder": "each rung on the first --ladder-frames of the dyadic sample, not paced: motion and render ms per "
        "tick, cost_vs_full (the busier thread's ms per tick over full quality's), deviation of the shown latents "
        "from full quality with the same noise",
        "naive_ratio": "p50 of our per-frame step / p50 of the official per-frame loop that re-encodes the whole "
        "3.84 s window of both streams every frame (same run, same frames, alternating frame by frame, rendering "
        "included); naive_ratio_motion: the same without the render stage",
    }

    began = time.perf_counter()
    if args.only != "full":
        tiny = build("tiny", args.device, samples)
        result["tiny"] = {"model": "MotionConfig.tiny() + RendererConfig.tiny() (128x128), random weights"}
        result["tiny"].update(asyncio.run(realtime(tiny, audio, args.seconds, args.tiny_threads)))
        held = asyncio.run(realtime(tiny, audio, args.seconds, args.tiny_threads, render_s=args.held_render_s))
        result["tiny"]["held"] = held
        together = asyncio.run(sessions(tiny, audio, args.seconds / 2, args.tiny_threads, args.sessions))
        result["tiny"]["sessions"] = together
        threads = torch.get_num_threads()
        torch.set_num_threads(args.tiny_threads)
        result["tiny"]["per_frame_ms"] = stage_stats(step_timings(tiny, audio, args.tiny_frames))
        result["tiny"]["ladder"] = ladder_costs(tiny, audio, args.ladder_frames)
        torch.set_num_threads(threads)
        sweep = ((0, 0, 2000), (200, 200, 8000))
        result["tiny"]["offline_deviation"] = offline_deviation(tiny, audio, sweep)
        result["tiny"]["peak_rss_mb"] = _peak_rss_mb()
        result["tiny"]["bench_seconds"] = round(time.perf_counter() - began, 1)
        del tiny
        write_json_atomic(result, RESULTS)

    if args.only != "tiny":
        began_full = time.perf_counter()
        full = build("full", args.device, samples)
        both_speak = int(2.0 * 16000)  # from 2.0 s the sample has speech in both streams: no silent-window shortcut
        timed = (audio[0][both_speak:], audio[1][both_speak:])
        ours, naive = interleaved_timings(full, timed, args.full_frames)
        ours_stats, naive_stats = stage_stats(ours), stage_stats(naive)

        def motion_ms(stats: dict) -> float:
            return sum(stats[s]["p50"] for s in ("audio", "transformer", "head"))

        start = int(args.deviation_start_s * 16000)
        end = start + (args.deviation_frames + 1) * SAMPLES_PER_FRAME
        result["full"] = {
            "model": "MotionConfig() (393.9 M params) + RendererConfig() (512x512), random weights",
            "torch_threads": torch.get_num_threads(),
            "timed_from_s": 2.0,
            "per_frame_ms": ours_stats,
            "naive_per_frame_ms": naive_stats,
            "naive_ratio": round(ours_stats["total"]["p50"] / naive_stats["total"]["p50"], 3),
            "naive_ratio_motion": round(motion_ms(ours_stats) / motion_ms(naive_stats), 3),
            "offline_deviation": {
                "slice_s": [round(start / 16000, 2), round(end / 16000, 2)],
                **offline_deviation(full, (audio[0][start:end], audio[1][start:end])),
            },
            "bench_seconds": round(time.perf_counter() - began_full, 1),
        }
    result["peak_rss_mb"] = _peak_rss_mb()
    write_json_atomic(result, RESULTS)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
