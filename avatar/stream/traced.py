"""Stages of the streaming step run as TorchScript traces on the CPU, one trace per input shape.

An eager PyTorch module call dispatches every operator from Python and takes the GIL back after each one: with the
engine's two worker threads and the host's event loop (LiveKit, the VADs) in one process, each of the ~1,000
operators of a tiny-model frame waited for the GIL, and a frame took twice as long inside the agent worker as in
``bench.stream`` (README, "Real time that holds"). A trace runs the whole stage in C++ with the GIL released. It
records the same operators, so the outputs are the eager ones; ``TracedCall`` checks that on the first call of each
shape and runs eagerly when tracing fails or differs. Under CPU autocast (``model.precision: bf16``) the trace
records the casts autocast made while tracing, and replays them with autocast off. On CUDA the stages are replayed
from CUDA graphs instead (``avatar.stream.cuda``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

MAX_SHAPES = 8  # traces kept per call (one per rung's batch and shape); beyond that, eager
TOLERANCE = 1e-5


class _Stage(torch.nn.Module):
    """``fn`` as a module that owns the modules it uses, so the trace reads their weights as parameters."""

    def __init__(self, fn: Callable[..., torch.Tensor], modules: list[torch.nn.Module]) -> None:
        super().__init__()
        self.owners = torch.nn.ModuleList(modules)
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)


class TracedCall:
    """``fn(*tensors) -> tensor`` (using the weights of ``modules``), traced on the first call of each input shape."""

    def __init__(
        self, fn: Callable[..., torch.Tensor], name: str, modules: list[torch.nn.Module], enabled: bool = True
    ) -> None:
        self.fn = fn
        self._stage = _Stage(fn, modules)
        self.name = name
        self.enabled = enabled
        self._traces: dict[tuple, Callable[..., torch.Tensor]] = {}

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.fn(*args)
        autocast = torch.is_autocast_enabled("cpu")
        key = (*((tuple(a.shape), a.dtype) for a in args), autocast)
        traced = self._traces.get(key)
        if traced is None:
            if len(self._traces) >= MAX_SHAPES:
                return self.fn(*args)
            traced = self._traces[key] = self._trace(args)
        if traced is self.fn:
            return traced(*args)
        with torch.autocast("cpu", enabled=False):  # the casts autocast made are in the trace
            return traced(*args)

    def _trace(self, args: tuple[torch.Tensor, ...]) -> Callable[..., torch.Tensor]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarning: shape checks become constants, as intended
                traced = torch.jit.trace(self._stage, args, check_trace=False)
            expected = self.fn(*args)
            with torch.autocast("cpu", enabled=False):
                got = traced(*args)
            diff = float((expected.float() - got.float()).abs().max()) if expected.numel() else 0.0
            if expected.shape != got.shape or not diff <= TOLERANCE:
                raise ValueError(f"traced output differs from eager by {diff}")
        except Exception as exc:  # noqa: BLE001 - any failure means: run this stage eagerly
            log.warning("tracing failed, running eagerly", extra={"call": self.name, "error": repr(exc)})
            return self.fn
        log.debug("stage traced", extra={"call": self.name, "shapes": [tuple(a.shape) for a in args]})
        return traced
