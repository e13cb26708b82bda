"""Shared fixtures of the unit tests."""

import pytest
import torch

from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.renderer import Renderer, RendererConfig, random_renderer


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one thread, and do not stall when other processes share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def motion() -> MotionGenerator:
    """An untrained tiny motion generator (the official architecture, small widths); a module may define its own."""
    return random_motion_generator(MotionConfig.tiny(), seed=5)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    """An untrained tiny renderer (128×128 frames); a module may define its own."""
    return random_renderer(RendererConfig.tiny(), seed=2)
