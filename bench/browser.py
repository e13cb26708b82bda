"""``python -m bench.browser``: what a browser receives from the avatar, measured in a real page.

Starts `dystream playground` (the tiny random-weight model, beep clips, the diagnostic overlay) in each mode, joins
its room from headless Chromium with a fake microphone that speaks every 13 s (``bench/harness/browser.py``), and
prints and writes ``bench/results/browser.json``: per mode the presented frame rate (5 s windows) and largest gap,
the A/V offset at the page (beeps in the avatar's voice against the flashes of the diagnostic square, after the
receiver settled) and the browser's own lip sync (its audio and video receivers' ``estimatedPlayoutTimestamp``,
every 500 ms), the listening latency (speech onset on the microphone to ``dystream.state`` = listening at the
page), each reply's heard duration over its true duration with its largest hole (in the voice that reached the page's
audio graph) and the longest stall of the page's own audio output in it, and the audio the voice's receiver concealed.
``--beside-hog`` runs the same beside a CPU hog (``stress-ng --cpu 1``, as CI's check does) and writes
``bench/results/browser-hog.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.harness import priority
from bench.harness.browser import browse, chromium, microphone_loop, start_playground
from bench.harness.deployment import make_clips
from bench.results_file import write_json_atomic
from config.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results" / "browser.json"
HOG_RESULTS = RESULTS.with_name("browser-hog.json")
HOG = ("stress-ng", "--cpu", "1")


@contextlib.contextmanager
def cpu_hog() -> Iterator[None]:
    """One core kept busy at normal priority while the block runs (``HOG``)."""
    if shutil.which(HOG[0]) is None:
        raise SystemExit(f"--beside-hog needs {HOG[0]}: apt-get install stress-ng")
    hog = subprocess.Popen(HOG, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        os.killpg(hog.pid, signal.SIGTERM)
        hog.wait()


def run(modes: list[str], seconds: float, workdir: Path, *, beside_hog: bool = False) -> dict:
    samples = get_settings().samples_dir
    clips = make_clips(samples, workdir / "clips")
    microphone = microphone_loop(clips.utterance, workdir)
    runs = []
    for mode in modes:
        with cpu_hog() if beside_hog else contextlib.nullcontext():
            process, url = start_playground(workdir / mode, samples, clips, remote=mode == "remote")
            try:
                call = browse(url, microphone, seconds, workdir / mode / "page.png")
            finally:
                process.stop()
        runs.append({"mode": mode, **call.summary()})
    version = subprocess.run([chromium(), "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "runs": runs,
        "browser": f"{version}, headless, Playwright",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "model": "tiny, random weights (the pipeline, not the model, is measured)",
        "seconds": seconds,
        "beside": " ".join(HOG) if beside_hog else "nothing (a quiet machine)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser", description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["in-process", "remote"], choices=["in-process", "remote"])
    parser.add_argument("--seconds", type=float, default=60.0, help="received audio per call (default 60)")
    parser.add_argument("--beside-hog", action="store_true", help="run beside `stress-ng --cpu 1` (CI's check)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/browser[-hog].json")
    args = parser.parse_args(argv)
    out = args.out or (HOG_RESULTS if args.beside_hog else RESULTS)
    priority.favour_this_process()  # the browser, like the measuring client, is on its own machine in a deployment
    with tempfile.TemporaryDirectory(prefix="dystream-browser-") as workdir:
        result = run(args.modes, args.seconds, Path(workdir), beside_hog=args.beside_hog)
    print(json.dumps(result, indent=2))
    write_json_atomic(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
