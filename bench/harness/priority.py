"""CPU priority of the processes of an end-to-end run on one machine.

In a deployment the user's browser and the LiveKit server run on other machines than the agent's workers; here all
of them share a few cores (with CI's CPU hog beside them). The measuring client (this process) and the server are
given a higher priority than the workers, so that what is measured is the workers under load, not a starved client
reading its own delays. Without the right to raise priorities (not root), everything runs as it is.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FAVOURED = -5  # nice value of the client and the server
NORMAL = 0  # the workers', as in a deployment


def _set_all_threads(pid: int | str, nice: int) -> None:
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)


def favour_this_process() -> bool:
    """Raise this process's priority (every thread; threads made later inherit it). False if not allowed."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, FAVOURED)
    except OSError:
        return False
    _set_all_threads("self", FAVOURED)
    return Path("/proc/self/task").exists()


def favoured() -> None:
    """``preexec_fn`` for the server: start at the favoured priority (ignored when not allowed)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, FAVOURED)


def normal() -> None:
    """``preexec_fn`` for the workers: back to the normal priority, whatever the test process runs at."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, NORMAL)
