"""``python -m bench.e2e``: the end-to-end numbers, measured in a real LiveKit room on this machine.

Builds (once) and starts a LiveKit server on loopback, deploys each plugin mode with the tiny random-weight model,
and has a user client hold a conversation: greeting, several turns, several barge-ins. Prints and writes
``bench/results/e2e.json``: ``{"runs": [...]}``, one run per mode with the video rate and largest frame gap, the
absolute A/V offset (p50/p95, beeps against the diagnostic flashes at the receiver), the listening latency (user's
speech onset to ``dystream.state`` = listening at the receiver), the barge-in stop time (agent's interruption to the
last avatar audio at the receiver) and the playback-start latency (``AvatarMetrics.playback_latency``); the agent's
voice as heard (each reply's heard duration over its true duration, from its beeps, and the longest silence inside a
reply); the state's timing against the replies; and the avatar's own session metrics (pictures shown, repeated and
dropped at the publisher, the quality rungs used). Each mode runs again with the engine held to about half real time
(``--held-render-s``: every picture takes at least that long, through the plugin's API, ``held_worker``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from bench.harness import priority
from bench.harness.deployment import Deployment, make_clips
from bench.harness.scenario import converse
from bench.harness.server import LiveKitServer
from bench.results_file import write_json_atomic
from config.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results" / "e2e.json"


def run(modes: list[str], turns: int, bargeins: int, workdir: Path, held_render_s: float | None = None) -> dict:
    samples = get_settings().samples_dir
    clips = make_clips(samples, workdir / "clips")
    runs = []
    load_before = os.getloadavg()
    with LiveKitServer(workdir / "server") as server:
        for mode, held in [(m, None) for m in modes] + [(m, held_render_s) for m in modes if held_render_s]:
            deployment = Deployment(server, mode, workdir / f"{mode}-{held}", samples, clips, held_render_s=held)
            deployment.workdir.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            deployment.start()
            ready_s = time.perf_counter() - started
            try:
                conversation = asyncio.run(converse(deployment, turns=turns, bargeins=bargeins))
            finally:
                deployment.stop()
            summary = conversation.summary()
            summary["render_held_to_ms"] = None if held is None else held * 1000
            summary["avatar_metrics"] = _final_metrics(deployment)
            summary["workers_ready_s"] = round(ready_s, 1)
            summary["turns"] = len(conversation.turns)
            summary["bargeins"] = len(conversation.bargeins)
            runs.append(summary)
    return {
        "runs": runs,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            # other work on the machine shows in the numbers: the load average before and after the runs
            "load_average_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "model": "tiny, random weights (the pipeline, not the model, is measured)",
        "livekit_server": "v1.13.5 on 127.0.0.1",
    }


def _final_metrics(deployment: Deployment) -> dict:
    """The avatar's last session metrics (its log): the published video and the rungs it ran at."""
    final: dict = {}
    for text in deployment.logs().values():
        for line in text.splitlines():
            if '"avatar session metrics"' in line:
                record = json.loads(line)
                final = {key: record[key] for key in ("video", "rung", "rung_frames", "total_ms") if key in record}
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["in-process", "remote"], choices=["in-process", "remote"])
    parser.add_argument("--turns", type=int, default=3, help="turns answered in full (default 3)")
    parser.add_argument("--bargeins", type=int, default=3, help="turns whose answer the user interrupts (default 3)")
    parser.add_argument(
        "--held-render-s",
        type=float,
        default=0.06,
        help="also run each mode with every picture held to at least this "
        "long: the engine at about half real time (0 to skip)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    priority.favour_this_process()  # the measuring client: on its own machine in a deployment
    with tempfile.TemporaryDirectory(prefix="dystream-e2e-") as workdir:
        result = run(args.modes, args.turns, args.bargeins, Path(workdir), args.held_render_s or None)
    print(json.dumps(result, indent=2))
    write_json_atomic(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
