"""``python -m bench.gpu``: the serving benchmark (``bench.serving``) on a CUDA device at full size (512×512).

Writes ``bench/results/gpu.json``; takes ``bench.serving``'s options (``--device cuda:1``, ``--sessions 8``, …).
Without a CUDA device it says so and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import serving

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return serving.run(["--device", "cuda", "--size", "full", *args], out=RESULTS, prog="python -m bench.gpu")


if __name__ == "__main__":
    raise SystemExit(main())
