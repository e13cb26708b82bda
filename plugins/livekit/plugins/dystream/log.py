"""The plugin's loggers: structlog for our events, a standard logger for livekit-agents' plugin registry."""

from __future__ import annotations

import logging

from config.log import get_logger

PACKAGE = "livekit.plugins.dystream"

logger = get_logger(PACKAGE)
stdlib_logger = logging.getLogger(PACKAGE)
