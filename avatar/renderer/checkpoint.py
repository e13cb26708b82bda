"""Loading the LIA renderer weights (docs/architecture.md §10).

The official file (``tools/pretrained_model/epoch=0-step=312000.ckpt``) is a Lightning checkpoint of the whole
HeadAnimatorModule: keys ``motion_encoder.*``, ``flow_estimator.*``, ``face_generator.*``, ``face_encoder.*`` plus
training-only modules (``discriminator.*``, ``criterion_vgg.*``) that are ignored. Our ``Renderer`` uses the same
key names, so loading is a plain ``load_state_dict`` after checking that every key we use is present with the
right shape. ``convert_renderer_to_safetensors`` writes just those tensors to a ``.safetensors`` file, which loads
the same way without unpickling.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from avatar.renderer.config import RendererConfig
from avatar.renderer.renderer import MODULE_NAMES, Renderer, resolve_dtype
from avatar.weights.reader import CheckpointError, read_weights, save_safetensors, state_dict_of

WHAT = "LIA renderer checkpoint"
CONFIG_HINT = "if the file is a non-official (e.g. tiny) renderer, pass its RendererConfig"


def _expected_tensors(config: RendererConfig) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return Renderer(config).state_dict()


def renderer_state_dict(path: str | os.PathLike[str], config: RendererConfig | None = None) -> dict[str, torch.Tensor]:
    """The renderer tensors of the checkpoint at ``path``, checked against ``config`` (official by default).

    Keys outside the four renderer modules are ignored; a missing or misshaped key raises ``CheckpointError``
    naming the key and the file.
    """
    config = config or RendererConfig()
    path = Path(path).expanduser()
    state = state_dict_of(read_weights(path, WHAT), path, WHAT)
    expected = _expected_tensors(config)

    missing = [k for k in expected if k not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(
            f"{WHAT} at {path} lacks {len(missing)} renderer tensor(s): {shown}. Is it the LIA renderer "
            f"(tools/pretrained_model/epoch=0-step=312000.ckpt) and not the motion model? {CONFIG_HINT}"
        )
    for key, ref in expected.items():
        got = state[key]
        if not torch.is_tensor(got) or tuple(got.shape) != tuple(ref.shape):
            shape = tuple(got.shape) if torch.is_tensor(got) else type(got).__name__
            raise CheckpointError(
                f"{WHAT} at {path}: tensor {key} has shape {shape}, the renderer expects {tuple(ref.shape)}; "
                f"{CONFIG_HINT}, or re-download the file"
            )
    ours = tuple(f"{name}." for name in MODULE_NAMES)
    unexpected = [k for k in state if k.startswith(ours) and k not in expected]
    if unexpected:
        logging.getLogger(__name__).warning(
            "renderer_checkpoint_extra_keys",
            extra={"path": str(path), "count": len(unexpected), "first": unexpected[:5]},
        )
    return {k: state[k] for k in expected}


def load_renderer(
    path: str | os.PathLike[str],
    config: RendererConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> Renderer:
    """The renderer with the weights at ``path`` (official ``.ckpt`` or converted ``.safetensors``), in eval mode."""
    config = config or RendererConfig()
    dtype = resolve_dtype(dtype)
    start = time.perf_counter()
    tensors = renderer_state_dict(path, config)
    with torch.device("meta"):
        renderer = Renderer(config)
    cast = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in tensors.items()}
    renderer.load_state_dict(cast, strict=True, assign=True)
    renderer.eval().requires_grad_(False)
    logging.getLogger(__name__).info(
        "renderer_loaded",
        extra={
            "path": str(path),
            "tensors": len(cast),
            "device": str(device),
            "dtype": str(dtype).removeprefix("torch."),
            "seconds": round(time.perf_counter() - start, 2),
        },
    )
    return renderer


def convert_renderer_to_safetensors(
    ckpt: str | os.PathLike[str], out: str | os.PathLike[str], config: RendererConfig | None = None
) -> Path:
    """Write the renderer tensors of ``ckpt`` to ``out`` (.safetensors, atomically) and return its path."""
    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise CheckpointError(f"output {out} must end in .safetensors (it is read back by its suffix)")
    written = save_safetensors(renderer_state_dict(ckpt, config), out)
    logging.getLogger(__name__).info("renderer_converted", extra={"source": str(ckpt), "out": str(written)})
    return written
