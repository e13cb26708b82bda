"""Classifier-free guidance of DyStream: the condition branches and how their x0 predictions combine
(docs/architecture.md §7).

Every frame runs the transformer and the flow head once, batched over the branches
``[uncond, anchor, audio_self, audio_other, all]``. A branch switches the self audio, the other audio and the anchor
on (1) or off (0); "off" multiplies the projected hidden by 0 *after* its projection. The x0 predictions combine as

    x0 = u + s_audio (a - u) + s_other (o - u) + s_anchor (k - u) + s_all (all - u)

in exactly this order. With ``s_anchor == 0`` the anchor branch adds nothing, so it is skipped (4 branches).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from avatar.errors import InputError


class Branch(NamedTuple):
    name: str
    audio_self: float
    audio_other: float
    anchor: float


BRANCHES_5 = (
    Branch("uncond", 0.0, 0.0, 0.0),
    Branch("anchor", 0.0, 0.0, 1.0),
    Branch("audio_self", 1.0, 0.0, 0.0),
    Branch("audio_other", 0.0, 1.0, 0.0),
    Branch("all", 1.0, 1.0, 1.0),
)
BRANCHES_4 = tuple(b for b in BRANCHES_5 if b.name != "anchor")


@dataclass(frozen=True)
class Gates:
    """Per-branch on/off multipliers, each a [B] tensor."""

    audio_self: torch.Tensor
    audio_other: torch.Tensor
    anchor: torch.Tensor


def branch_gates(branches: tuple[Branch, ...], device: Any = None, dtype: torch.dtype = torch.float32) -> Gates:
    """The gates of ``branches`` on ``device``: made once per (branches, device, dtype) and kept, so that a frame
    copies nothing from the host for them."""
    return _gates(branches, torch.device(device or "cpu"), dtype)


@functools.cache
def _gates(branches: tuple[Branch, ...], device: torch.device, dtype: torch.dtype) -> Gates:
    def column(i: int) -> torch.Tensor:
        return torch.tensor([b[i] for b in branches], device=device, dtype=dtype)

    with torch.inference_mode(False):  # kept tensors: usable in and out of inference mode
        return Gates(audio_self=column(1), audio_other=column(2), anchor=column(3))


@dataclass(frozen=True)
class CfgScales:
    """Guidance scales; the official defaults are 0.5 / 0.5 / 0 / 1.0 (``sample.yaml``)."""

    audio: float = 0.5
    audio_other: float = 0.5
    anchor: float = 0.0
    all: float = 1.0

    @classmethod
    def from_settings(cls, model_settings: Any) -> CfgScales:
        return cls(
            audio=model_settings.cfg_audio,
            audio_other=model_settings.cfg_audio_other,
            anchor=model_settings.cfg_anchor,
            all=model_settings.cfg_all,
        )

    @property
    def branches(self) -> tuple[Branch, ...]:
        """The branches to run: 5, or 4 when the anchor scale is 0 (the anchor branch would be multiplied by 0)."""
        return BRANCHES_4 if self.anchor == 0 else BRANCHES_5

    def combine(self, x0: torch.Tensor) -> torch.Tensor:
        """Guided prediction from per-branch predictions ``x0`` [B, ...] in the order of ``self.branches``."""
        names = [b.name for b in self.branches]
        if x0.shape[0] == 5 and len(names) == 4:
            names = [b.name for b in BRANCHES_5]
        if x0.shape[0] != len(names):
            raise InputError(
                f"CFG got {x0.shape[0]} branch predictions but expected {len(names)} "
                f"({', '.join(names)}); run the transformer with CfgScales.branches"
            )
        pred = dict(zip(names, x0, strict=True))
        u = pred["uncond"]
        out = u + self.audio * (pred["audio_self"] - u) + self.audio_other * (pred["audio_other"] - u)
        if "anchor" in pred:
            out = out + self.anchor * (pred["anchor"] - u)
        return out + self.all * (pred["all"] - u)


ALL_BRANCH = BRANCHES_5[-1]


@dataclass(frozen=True)
class NoGuidance:
    """Sampling from the ``all`` branch alone (every condition on, no guidance): the quality ladder's cheap rungs."""

    @property
    def branches(self) -> tuple[Branch, ...]:
        return (ALL_BRANCH,)

    def combine(self, x0: torch.Tensor) -> torch.Tensor:
        return x0[0]
