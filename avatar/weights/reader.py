"""Reading weight files safely: Lightning ``.ckpt`` (pickled zip) or ``.safetensors``.

Every failure names the file and says how to get a good one: a Git-LFS pointer (cloned without ``git lfs``),
a truncated download, or a file that is not a checkpoint at all.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from avatar.errors import InputError

GET_WEIGHTS = "run `python -m agent download-files` (or `dystream download-files`) to fetch the official weights"
LFS_POINTER_HEADER = b"version https://git-lfs.github.com/spec/v1"


class CheckpointError(InputError):
    """A weight file that cannot be used; the message names the file and the fix."""


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise CheckpointError(f"{what} not found at {path}: {GET_WEIGHTS}, or point the setting at the file")
    if path.is_dir():
        raise CheckpointError(f"{what} path {path} is a directory; it must be the checkpoint file itself")
    with path.open("rb") as fh:
        head = fh.read(len(LFS_POINTER_HEADER))
    if head == LFS_POINTER_HEADER:
        raise CheckpointError(
            f"{what} at {path} is a Git-LFS pointer file ({path.stat().st_size} bytes), not the weights: "
            f"run `git lfs pull` in that clone, or {GET_WEIGHTS}"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} at {path} is empty: delete it and {GET_WEIGHTS}")


# Globals a Lightning checkpoint may name in the metadata we never use (hyper-parameters, callbacks, loops): each is
# read as an inert ``_Ignored`` placeholder, so nothing it names is imported or called. Any other global is refused.
METADATA_GLOBALS = (
    "omegaconf.",
    "typing.",
    "argparse.Namespace",
    "pathlib.",
    "lightning.",
    "lightning_fabric.",
    "pytorch_lightning.",
    "torch.torch_version.",
    "numpy.",
)


class _Ignored:
    """Stands in for an object of a checkpoint's unused metadata: it takes its arguments and state and does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def read_weights(path: str | os.PathLike[str], what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint dict from ``path``; weights are data, so no code in the file ever runs.

    ``.safetensors`` files hold tensors only. ``.ckpt``/``.pt`` files are read with torch's ``weights_only``
    unpickler (tensors, containers, numbers, strings); the globals of a Lightning checkpoint's metadata
    (``METADATA_GLOBALS``) become inert placeholders, and a file naming any other global is refused before it is
    unpickled. Tensors are memory-mapped, so the official 7 GB ``last.ckpt`` (optimizer state included) is not read
    into RAM whole.
    """
    path = Path(path).expanduser()
    _check_readable(path, what)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return {"state_dict": load_file(str(path))}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{what} at {path} is not a readable safetensors file ({exc}): {GET_WEIGHTS}"
            ) from exc
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{what} at {path} is not a PyTorch checkpoint (no zip archive: truncated download or wrong file): "
            f"delete it and {GET_WEIGHTS}"
        )
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any failure to list them is a broken archive
        raise CheckpointError(f"{what} at {path} is truncated or corrupt ({exc}): delete it and {GET_WEIGHTS}") from exc
    refused = sorted(name for name in named if not name.startswith(METADATA_GLOBALS))
    if refused:
        raise CheckpointError(
            f"{what} at {path} is not a weights file: it names {', '.join(refused[:3])}, which could run code when "
            f"loaded, so it was not loaded; delete it and {GET_WEIGHTS}"
        )
    try:
        with torch.serialization.safe_globals([(_Ignored, name) for name in named]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken file
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CheckpointError(
            f"{what} at {path} is truncated or corrupt ({reason}): delete it and {GET_WEIGHTS}"
        ) from exc


def state_dict_of(ckpt: Mapping[str, Any], path: Path | str, what: str) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entry of a loaded checkpoint, or a clear error."""
    sd = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping) or not sd:
        keys = list(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{what} at {path} has no 'state_dict' (found {keys}): is it the right file?")
    return dict(sd)


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], out: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` (and optional string ``metadata``) to ``out`` atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=dict(metadata or {}))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
