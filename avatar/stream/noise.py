"""The start latents of the flow-matching sampler (docs/architecture.md §7): one draw of Gaussian noise per frame.

A ``NoiseFn`` gives frame j its start latent [F]. ``seeded_noise`` draws them on the device from one generator, the
draws of ``offline.generate(seed)`` there; ``table_noise`` reads them from a table (the parity set's recorded noise).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

NoiseFn = Callable[[int], torch.Tensor]


def seeded_noise(seed: int | None, face_dim: int, device: torch.device | str = "cpu") -> NoiseFn:
    """Start latents of frames 0, 1, … drawn in order from one generator on ``device`` (no copy from the host): the
    draws of ``offline.generate(seed)`` on that device (frame j always gets draw j, also when frames before it were
    skipped)."""
    generator = torch.Generator(device).manual_seed(int(seed) if seed is not None else int(torch.seed()))
    drawn = [0]  # frames drawn so far: a frame that is not generated still takes its draw

    def draw(j: int) -> torch.Tensor:
        while drawn[0] < j:
            torch.randn(face_dim, generator=generator, device=device)
            drawn[0] += 1
        drawn[0] += 1
        return torch.randn(face_dim, generator=generator, device=device)

    return draw


def table_noise(table: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> NoiseFn:
    """Start latents from a table: row j for frame j (e.g. the parity set's recorded noise), kept on ``device``
    (default: where the table is)."""
    rows = table if torch.is_tensor(table) else torch.as_tensor(np.asarray(table, dtype=np.float32))
    rows = rows.to(device=device, dtype=torch.float32) if device is not None else rows.float()
    return lambda j: rows[j]
