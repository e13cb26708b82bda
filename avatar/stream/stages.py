"""The model's stages in one streaming step, each run the fastest exact way its device has (docs/architecture.md
§9): a TorchScript trace on the CPU (``avatar.stream.traced``), a CUDA graph on CUDA (``avatar.stream.cuda``), eager
elsewhere. A trace or a graph runs the eager module's operators, so the outputs are the eager ones."""

from __future__ import annotations

from collections.abc import Callable

import torch

from avatar.motion.generator import MotionGenerator
from avatar.precision import Precision
from avatar.renderer import Renderer, frames_to_uint8
from avatar.sampling.cfg import CfgScales, NoGuidance
from avatar.sampling.sampler import sample_latent
from avatar.stream.cuda import GraphedCall, RenderStream
from avatar.stream.traced import TracedCall

Sampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fast_call(
    fn: Callable[..., torch.Tensor],
    name: str,
    modules: list[torch.nn.Module],
    device: torch.device,
    *,
    trace: bool = True,
    cuda_graphs: bool = True,
) -> Callable[..., torch.Tensor]:
    """``fn`` (using the weights of ``modules``) traced on the CPU, replayed from a CUDA graph on CUDA, eager
    elsewhere or when switched off."""
    if device.type == "cuda":
        return GraphedCall(fn, name, enabled=cuda_graphs)
    return TracedCall(fn, name, modules, enabled=trace and device.type == "cpu")


class StepStages:
    """The transformer window, one whole sampler per (steps, guidance) and the renderer of one session, under its
    precision; the renderer runs on its own CUDA stream and hands back uint8 frames on the host."""

    def __init__(
        self,
        motion: MotionGenerator,
        renderer: Renderer | None,
        cfg: CfgScales,
        precision: Precision,
        *,
        trace: bool = True,
        cuda_graphs: bool = True,
    ) -> None:
        self.motion = motion
        self.cfg = cfg
        self.precision = precision
        self.trace = trace
        self.cuda_graphs = cuda_graphs
        self.condition = fast_call(motion.condition, "transformer", [motion], motion.device, **self._switches())
        self._samplers: dict[tuple[int, bool], Sampler] = {}
        self._render: Callable[..., torch.Tensor] | None = None
        self._render_stream: RenderStream | None = None
        if renderer is not None:
            traceable = isinstance(renderer, torch.nn.Module)  # a stand-in renderer (tests) runs as it is
            modules, device = [renderer] if traceable else [], renderer.device
            self._render = fast_call(
                renderer.render, "renderer", modules, device, trace=trace and traceable, cuda_graphs=cuda_graphs
            )
            self._render_stream = RenderStream(device)

    @property
    def can_render(self) -> bool:
        return self._render is not None

    def sampler(self, steps: int, guidance: bool) -> Sampler:
        """The flow head's whole sampler (every step, the guidance, the Euler updates) as one call:
        ``(c_n, noise) -> latent``."""
        key = (steps, guidance)
        if key not in self._samplers:
            motion, cfg = self.motion, self.cfg if guidance else NoGuidance()

            def sample(c_n: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
                return sample_latent(motion, c_n, noise, steps, cfg)

            name = f"sampler ({steps} steps, {'guided' if guidance else 'unguided'})"
            self._samplers[key] = fast_call(sample, name, [motion], motion.device, **self._switches())
        return self._samplers[key]

    def render(
        self, source: torch.Tensor, target: torch.Tensor, f_app: torch.Tensor, after: torch.cuda.Event | None = None
    ) -> torch.Tensor:
        """The frame of ``target`` [1, F], warped from ``source`` with ``f_app``: [1, S, S, 3] uint8 on the host
        (converted on the device, copied back once). ``after``: the event ``target`` is ready at, when it was made on
        another thread's stream (``MotionStream``)."""
        render, stream = self._render, self._render_stream
        if render is None or stream is None:
            raise RuntimeError("these stages have no renderer")
        with self.precision.autocast():
            return stream.run(lambda: frames_to_uint8(render(source, target, f_app)), after, uses=(target,))

    def _switches(self) -> dict[str, bool]:
        return {"trace": self.trace, "cuda_graphs": self.cuda_graphs}
