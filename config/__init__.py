"""Project settings: one pydantic-settings tree read by every layer, and the structlog set-up."""

from config.log import configure_logging, get_logger
from config.settings import Settings, get_settings

__all__ = ["Settings", "configure_logging", "get_logger", "get_settings"]
