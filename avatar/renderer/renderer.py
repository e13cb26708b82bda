"""The LIA renderer as DyStream uses it (docs/architecture.md §2, §3, §8).

- Once per portrait: ``encode_portrait`` gives the motion latent m0 (MotionEncoder) and the appearance volume f_app
  (FaceEncoder).
- Per frame: ``render`` moves the flow source along the motion directions towards the generated latent
  (FlowEstimator) and draws the frame from it and f_app (FaceGenerator).

Submodules keep the official checkpoint names (``motion_encoder``, ``flow_estimator``, ``face_generator``,
``face_encoder``, in that order), so ``Renderer.state_dict()`` has the keys of the official checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from avatar.renderer.appearance import FaceEncoder
from avatar.renderer.config import RendererConfig
from avatar.renderer.flow import FlowEstimator
from avatar.renderer.generator import FaceGenerator
from avatar.renderer.motion_encoder import MotionEncoder

MODULE_NAMES = ("motion_encoder", "flow_estimator", "face_generator", "face_encoder")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch floating dtype from itself or its name ("float32", "float16", "bfloat16")."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"renderer dtype {dtype!r} is not supported: use one of {', '.join(DTYPES)}")


class Renderer(nn.Module):
    """Portrait encoder and frame decoder of DyStream. Use in eval mode; inputs are moved to its device/dtype."""

    def __init__(self, config: RendererConfig | None = None) -> None:
        super().__init__()
        self.config = config or RendererConfig()
        self.motion_encoder = MotionEncoder(self.config)
        self.flow_estimator = FlowEstimator(self.config)
        self.face_generator = FaceGenerator(self.config)
        self.face_encoder = FaceEncoder(self.config)

    @property
    def device(self) -> torch.device:
        return self.face_generator.extend_layer.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.face_generator.extend_layer.weight.dtype

    @torch.no_grad()
    def encode_portrait(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Portrait [B,3,S,S] in [-1,1] -> (m0 [B,512], f_app [B,32,16,S/8,S/8])."""
        s = self.config.image_size
        if not torch.is_tensor(image) or image.dim() != 4 or tuple(image.shape[1:]) != (3, s, s):
            shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
            raise ValueError(
                f"portrait image has shape {shape}; the renderer needs [B,3,{s},{s}] RGB in [-1,1] "
                f"(crop and resize the portrait to {s}x{s} first)"
            )
        image = image.to(self.device, self.dtype)
        return self.motion_encoder(image), self.face_encoder(image)

    @torch.no_grad()
    def render(self, source_latent: torch.Tensor, target_latent: torch.Tensor, f_app: torch.Tensor) -> torch.Tensor:
        """Frames [B,3,S,S] in [-1,1] for target latents [B,512].

        ``source_latent`` ([1,512] or [B,512]) is the flow source (official app.py: the first generated latent);
        ``f_app`` ([1,...] or [B,...]) comes from ``encode_portrait``.
        """
        return self.render_with_internals(source_latent, target_latent, f_app)[0]

    @torch.no_grad()
    def render_with_internals(
        self, source_latent: torch.Tensor, target_latent: torch.Tensor, f_app: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``render`` plus ``flow_latent`` [B,512], ``conv2_out`` (warp offsets before tanh, [B,3,D,H,W]) and
        ``occlusion_logits`` [B,1,H,W]."""
        source, target, f_app = self._check_render_inputs(source_latent, target_latent, f_app)
        latent = self.flow_estimator(source, target)
        internals: dict[str, torch.Tensor] = {"flow_latent": latent}
        frames = self.face_generator(latent, f_app, internals)
        return frames, internals

    def _check_render_inputs(
        self, source: torch.Tensor, target: torch.Tensor, f_app: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        d = cfg.latent_dim
        if target.dim() != 2 or target.shape[1] != d:
            raise ValueError(f"target_latent has shape {tuple(target.shape)}; expected [B,{d}] motion latents")
        b = target.shape[0]
        if source.dim() != 2 or source.shape[1] != d or source.shape[0] not in (1, b):
            raise ValueError(f"source_latent has shape {tuple(source.shape)}; expected [1,{d}] or [{b},{d}]")
        volume = (cfg.reshape_channel, cfg.reshape_depth, cfg.feature_size, cfg.feature_size)
        if f_app.dim() != 5 or tuple(f_app.shape[1:]) != volume or f_app.shape[0] not in (1, b):
            raise ValueError(
                f"f_app has shape {tuple(f_app.shape)}; expected [1 or {b},{','.join(map(str, volume))}] "
                "from encode_portrait of a renderer with the same config"
            )
        device, dtype = self.device, self.dtype
        return source.to(device, dtype), target.to(device, dtype), f_app.to(device, dtype)


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Frames [B,3,S,S] in [-1,1] -> [B,S,S,3] uint8 RGB on their own device, by truncation as the official code
    does (so that only the uint8 frame, a quarter of the float one, crosses to the host)."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames have shape {tuple(frames.shape)}; expected [B,3,H,W]")
    x = frames.detach().float().permute(0, 2, 3, 1)
    return ((x + 1) / 2 * 255).clamp(0, 255).to(torch.uint8)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames [B,3,S,S] in [-1,1] -> [B,S,S,3] uint8 RGB on the host (``frames_to_uint8``, then copied)."""
    return frames_to_uint8(frames).cpu().numpy()
