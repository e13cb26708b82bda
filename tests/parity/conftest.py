"""Fixtures of the numerical-parity tests: the golden set in ``settings.parity_dir`` (env DYSTREAM_PARITY_DIR).

A missing golden set fails the tests (it never skips them): parity is the point of these tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avatar.motion.checkpoints import load_motion_generator
from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from config.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_FILES = ("config.json", "motion_ckpt.ckpt", "inputs.npz", "ref_audio.npz", "ref_window.npz")


def resolve_parity_dir() -> Path:
    """``settings.parity_dir``; a relative path is taken from the repository root."""
    path = Path(get_settings().parity_dir).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    path = resolve_parity_dir()
    missing = [name for name in GOLDEN_FILES if not (path / name).is_file()]
    if missing:
        pytest.fail(
            f"parity golden set not found at {path} (missing {', '.join(missing)}): set DYSTREAM_PARITY_DIR "
            f"to the folder holding config.json, motion_ckpt.ckpt and the ref_*.npz files"
        )
    return path


@pytest.fixture(scope="session")
def golden(parity_dir: Path) -> Callable[[str], dict[str, np.ndarray]]:
    """``golden("ref_window")`` → the arrays of ``ref_window.npz`` (cached); a missing file fails the test."""
    cache: dict[str, dict[str, np.ndarray]] = {}

    def load(name: str) -> dict[str, np.ndarray]:
        if name not in cache:
            path = parity_dir / f"{name}.npz"
            if not path.is_file():
                pytest.fail(f"golden file {path} is missing from the parity set")
            with np.load(path) as data:
                cache[name] = {key: data[key] for key in data.files}
        return cache[name]

    return load


@pytest.fixture(scope="session")
def parity_config(parity_dir: Path) -> dict[str, Any]:
    return json.loads((parity_dir / "config.json").read_text())


@pytest.fixture(scope="session")
def motion_config(parity_config: dict[str, Any]) -> MotionConfig:
    return MotionConfig.from_parity(parity_config)


@pytest.fixture(scope="session")
def motion_model(parity_dir: Path, motion_config: MotionConfig) -> MotionGenerator:
    """The golden set's motion model, built from config.json, EMA weights of motion_ckpt.ckpt, fp32 CPU."""
    return load_motion_generator(parity_dir / "motion_ckpt.ckpt", motion_config, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def torch_single_thread():
    """The tiny golden model runs fastest on one thread, and does not stall when other processes share the CPU
    (the README's tolerances cover the 1- vs 2-thread differences)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
