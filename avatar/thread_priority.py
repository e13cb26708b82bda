"""The CPU priority of the model's threads (README, "Real time that holds")."""

from __future__ import annotations

import contextlib
import os
import threading


def lower_priority(nice: int) -> None:
    """Run the calling thread ``nice`` steps below the process (Linux: a thread's nice value is its own). The audio
    and the publishing run on the event loop and LiveKit's threads: when the CPU is short, they come first and the
    model takes what is left, which the quality ladder adapts to."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
