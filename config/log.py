"""The application's logging (``agent/``), configured once per process: JSON lines in production, readable lines in a
terminal. structlog for the application's own events; the standard library's records (livekit, the plugin, the
model) go through the same renderer with their ``extra`` fields."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


class _Stderr:
    """``sys.stderr`` as it is at each write: test runners and daemons replace (and close) the stream object."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _drop_message_copy(_logger: object, _method: str, event: dict) -> dict:
    """A record forwarded from a livekit job process carries its formatted text as ``message`` too: it is the event."""
    event.pop("message", None)
    return event


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Route structlog and the standard library's logging through one renderer."""
    global _configured
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    # the standard library's records (livekit, our plugin and model code) carry their fields in ``extra``
    foreign = [*shared, structlog.stdlib.ExtraAdder(), _drop_message_copy, structlog.processors.format_exc_info]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=foreign))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    _configured = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    if not _configured:
        from config.settings import get_settings

        settings = get_settings()
        configure_logging(settings.log_format, settings.log_level)
    return structlog.get_logger(name)
