"""CUDA fast paths of the streaming step: CUDA graphs for fixed-shape calls, a stream for the motion thread and one
for the renderer.

Everything here is a no-op off CUDA. A CUDA graph is captured once for a callable whose input shapes never change
(an audio encoder window, the transformer window, a whole sampler, the renderer); any failure to capture, or a
call with other shapes, falls back to running the callable eagerly, so the output is always that of the plain
module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import torch

log = logging.getLogger(__name__)


class GraphedCall:
    """``fn(*tensors) -> tensor`` replayed from a CUDA graph captured on the first call; eager elsewhere."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str, enabled: bool = True) -> None:
        self.fn = fn
        self.name = name
        self.enabled = enabled
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: list[torch.Tensor] = []
        self._output: torch.Tensor | None = None

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if not self.enabled or not all(torch.is_tensor(a) and a.is_cuda for a in args):
            return self.fn(*args)
        if self._graph is None:
            self._capture(args)
            if self._graph is None:
                return self.fn(*args)
        if [a.shape for a in args] != [x.shape for x in self._inputs]:
            return self.fn(*args)
        for static, arg in zip(self._inputs, args, strict=True):
            static.copy_(arg)
        self._graph.replay()
        assert self._output is not None
        return self._output.clone()

    def _capture(self, args: tuple[torch.Tensor, ...]) -> None:
        try:
            self._inputs = [a.detach().clone() for a in args]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside the graph (allocations, kernel selection)
                    self.fn(*self._inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._output = self.fn(*self._inputs)
            self._graph = graph
            log.info("cuda graph captured", extra={"call": self.name, "shapes": [tuple(a.shape) for a in args]})
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly
            self.enabled = False
            self._graph, self._inputs, self._output = None, [], None
            log.warning("cuda graph capture failed, running eagerly", extra={"call": self.name, "error": repr(exc)})


class MotionStream:
    """The engine's motion thread queues its work on a CUDA stream of its own, and marks each latent with an event:
    the render stream then waits for that latent only, not for the next ticks' work the motion thread has queued
    since (as it would on a stream both threads share)."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def active(self) -> contextlib.AbstractContextManager[object]:
        """The calling thread's work goes to this stream while the context is open."""
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def mark(self) -> torch.cuda.Event | None:
        """An event the work queued so far completes (None off CUDA)."""
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event


def receive(tensor: torch.Tensor, ready: torch.cuda.Event | None) -> None:
    """The calling thread's CUDA stream waits for ``ready`` before it reads ``tensor``, made on another thread's
    stream, and keeps it from the allocator until it is done with it (no-op without an event)."""
    if ready is None:
        return
    stream = torch.cuda.current_stream()
    stream.wait_event(ready)
    tensor.record_stream(stream)


class RenderStream:
    """Runs the renderer on its own CUDA stream (after the motion step's work: ``after``, the latent's event, or the
    calling thread's stream), then hands back a host tensor: the finished frame, copied into pinned memory without
    blocking; waiting for that copy is the step's only wait."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._host: torch.Tensor | None = None  # pinned, reused: each frame is cloned out of it

    def run(
        self, fn: Callable[[], torch.Tensor], after: torch.cuda.Event | None = None, uses: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        """``fn()`` on the render stream; ``uses``: tensors made on another stream that it reads (kept from the
        allocator until the render stream is done with them)."""
        if self.stream is None:
            return fn()
        if after is not None:
            self.stream.wait_event(after)
        else:
            self.stream.wait_stream(torch.cuda.current_stream())
        for tensor in uses:
            tensor.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            out = fn()
            if self._host is None or self._host.shape != out.shape or self._host.dtype != out.dtype:
                self._host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            self._host.copy_(out, non_blocking=True)
        self.stream.synchronize()
        return self._host.clone()
