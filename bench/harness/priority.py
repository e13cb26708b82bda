"""CPU priority of the processes of an end-to-end run on one machine.

In a deployment the user's browser and the LiveKit server run on other machines than the agent's workers; here all
of them share a few cores (with CI's CPU hog beside them). The measuring client (this process) and the server are
given a higher priority than the workers, so that what is measured is the workers under load, not a starved client
reading its own delays. Without the right to raise priorities (not root), everything runs as it is.

Nice values only rank threads of one scheduling group. With Linux's autogroup (on by default, for processes outside
a CPU cgroup) every session is a group of its own, and groups share the CPU as equals: a worker started in a new
session competed as one group with CI's CPU hog, and its model threads, whose lower priority was meant to leave the
CPU to its media threads, spent the group's share instead. The media threads then waited up to 245 ms to run, the
receivers concealed the gaps and held the voice 100-200 ms longer from then on. So the workers stay in this
session (a process group of their own, for stopping them with their job processes), where their threads compete by
their nice values, as they do in a container (a CPU cgroup of its own, no autogroup).
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
