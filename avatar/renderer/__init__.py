"""The LIA renderer of DyStream: portrait -> (m0, f_app); (source latent, target latent, f_app) -> frame."""

from avatar.renderer.checkpoint import convert_renderer_to_safetensors, load_renderer, renderer_state_dict
from avatar.renderer.config import RendererConfig
from avatar.renderer.random_weights import random_renderer
from avatar.renderer.renderer import MODULE_NAMES, Renderer, frames_to_uint8, to_uint8

__all__ = [
    "MODULE_NAMES",
    "Renderer",
    "RendererConfig",
    "convert_renderer_to_safetensors",
    "frames_to_uint8",
    "load_renderer",
    "random_renderer",
    "renderer_state_dict",
    "to_uint8",
]
