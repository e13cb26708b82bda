"""The numeric precision of the model's hot path (``model.precision``; README, "Many avatars on one
device, and precision").

- ``fp32``: float32 everywhere, TF32 off: the parity reference.
- ``tf32``: float32 tensors, with CUDA's TF32 matmuls and convolutions (the same as ``fp32`` off CUDA).
- ``bf16``: autocast to bfloat16 around the transformer, the flow head and the renderer.

Under ``bf16`` these stay float32 (``FP32_STAGES``): the audio encoders and the fusion of their features (they run
outside autocast), the flow head's layer norms and gated residuals (``avatar.motion.flow_head``), the CFG combination
and the Euler update of the sampler (``avatar.sampling.sampler``), the motion history, and the conversion to uint8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from avatar.errors import InputError

PrecisionName = Literal["fp32", "tf32", "bf16"]
PRECISIONS: tuple[PrecisionName, ...] = ("fp32", "tf32", "bf16")
FP32_STAGES = (
    "audio encoders and fusion",
    "flow head layer norms and gated residuals",
    "CFG combination and Euler update",
    "motion history",
    "uint8 conversion",
)


class Precision:
    """One of ``PRECISIONS`` on one device: sets the TF32 switches, and gives the autocast of the hot path."""

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in PRECISIONS:
            raise InputError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {name!r} (DYSTREAM_MODEL__PRECISION)"
            )
        self.name = name
        self.device = device
        if device.type == "cuda":  # process-wide switches: every model of a worker runs at one precision
            torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            torch.backends.cudnn.allow_tf32 = name == "tf32"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast for ``bf16`` (not cached, so that CUDA graphs can capture it); nothing otherwise."""
        if self.name != "bf16":
            yield
            return
        with torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield
