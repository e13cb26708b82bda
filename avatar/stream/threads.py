"""The CPU the engine's model threads may take: their priority below the process, and torch's thread count."""

from __future__ import annotations

import contextlib
import os
import threading

import torch


class TorchThreadsHold:
    """torch's intra-op thread count is process-wide: the first stream that sets it remembers the process's own, the
    last one to close puts it back, whatever order they close in (the latest setting applies meanwhile)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._before = 0

    def hold(self, threads: int) -> None:
        with self._lock:
            if self._holders == 0:
                self._before = torch.get_num_threads()
            self._holders += 1
            torch.set_num_threads(threads)

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                torch.set_num_threads(self._before)


TORCH_THREADS = TorchThreadsHold()


def lower_priority(nice: int) -> None:
    """Run the calling thread ``nice`` steps below the process (Linux: a thread's nice value is its own). The audio
    and the publishing run on the event loop and LiveKit's threads: when the CPU is short, they come first and the
    model takes what is left, which the quality ladder adapts to."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
