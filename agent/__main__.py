"""`python -m agent` / `dystream`: the command line of the DyStream LiveKit avatar.

Each sub-command lives in `agent/commands/<name>.py` with `add_parser(subparsers)` and `run(args) -> int`.
Errors a user can fix are printed as one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# torch's OpenMP threads spin while they wait for each other: with another busy process on the machine, a spinning
# thread keeps its peer off the CPU, and every operator waits a scheduler slice. Measured on 2 cores beside a CPU hog
# (`stress-ng --cpu 1`): a tiny-model render of 3 s took 144 s with spinning, 3.1 s with passive waits (2.8 and 4.9 s
# on a quiet machine). Set before torch loads (the commands import it); a value from the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMMANDS = ["render", "download-files", "token", "dev", "start", "connect", "avatar-worker", "playground"]


def _load(name: str):
    return importlib.import_module(f"agent.commands.{name.replace('-', '_')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dystream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:
            if exc.name != f"agent.commands.{name.replace('-', '_')}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from livekit.plugins.dystream import DyStreamException

    from agent.errors import UserError
    from avatar.errors import InputError
    from config.log import configure_logging
    from config.settings import SettingsError, get_settings

    try:
        settings = get_settings()  # every DYSTREAM_ variable checked before anything runs
    except SettingsError as exc:
        print(f"dystream: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (UserError, InputError, DyStreamException) as exc:
        print(f"dystream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
