"""`dystream download-files`: fetch the DyStream weights and the face landmarker into the checkpoints folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from config.settings import get_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "download-files",
        help="download the model weights (DyStream, LIA renderer, MediaPipe face landmarker)",
        description="Fetch every file the avatar needs into DYSTREAM_MODEL__CHECKPOINTS_DIR (default "
        "~/.cache/dystream/weights). Files already there are kept; interrupted downloads resume.",
    )
    parser.add_argument("--checkpoints", type=Path, help="target folder (default: DYSTREAM_MODEL__CHECKPOINTS_DIR)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from avatar.weights.download import download_files

    model = get_settings().model
    if args.checkpoints:
        model = model.model_copy(update={"checkpoints_dir": args.checkpoints})
    files = download_files(model)
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0
