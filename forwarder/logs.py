"""Structured logs: JSON lines under a service manager, readable text on a terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TextIO

import structlog

from forwarder.printable import printable

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _SafePrintLogger(structlog.PrintLogger):
    """Print one line per event; a log stream that fails (closed, broken pipe) loses the line,
    never the work: a settle must not fail because journald restarted."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def escape_controls(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Escape control characters in every text value, so a console line stays one honest line.

    Other values are rendered with repr(), which escapes them already. A traceback keeps its
    line breaks.
    """
    return {
        key: printable(value, keep_newlines=key == "exception") if isinstance(value, str) else value
        for key, value in event.items()
    }


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send structlog events to *stream* (stderr) as JSON or as console text.

    ``auto`` picks console text on a terminal and JSON otherwise (systemd's journal, pipes, CI).
    Events carry counts, codes and TikTok's request_id; callers never pass the token or a raw
    identifier, and nothing here adds one.
    """
    out = stream or sys.stderr
    use_json = fmt == "json" or (
        fmt == "auto" and not (out.isatty() and "JOURNAL_STREAM" not in os.environ)
    )
    # JSON escapes control characters by itself; console text gets them escaped first.
    renderers: list[structlog.typing.Processor] = (
        [structlog.processors.JSONRenderer()]
        if use_json
        else [escape_controls, structlog.dev.ConsoleRenderer(colors=out.isatty())]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *_: _SafePrintLogger(out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service="forwarder")
