"""The plugin's logger, as every livekit plugin has one: the standard library's, named after the package. Fields go
in ``extra``; handlers and formats are the application's (livekit-agents' CLI, or ``agent/``)."""

from __future__ import annotations

import logging

logger = logging.getLogger("livekit.plugins.dystream")
