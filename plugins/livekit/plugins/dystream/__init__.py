"""DyStream avatar plugin for livekit-agents."""

from .version import __version__

__all__ = ["__version__"]
