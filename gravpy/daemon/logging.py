"""structlog set-up for gravd and gravctl (library code never configures logging).

One pipeline for structlog events and for the standard ``logging`` records of the libraries
underneath (websockets, aiohttp): level, ISO timestamp, then either the console renderer (on a
terminal) or one JSON object per line (anywhere else: files, pipes, journald, containers).
Events are snake_case facts (``peer_connected``) with ``node`` and ``peer`` bound by the caller.

Lines a remote can make gravd write at will are rate-limited on the hub's logger
(``gravpy.daemon.log_limits``): refused handshakes and ``link_closed``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from gravpy.daemon.log_limits import HUB_LOGGER, RefusalLogLimit

__all__ = ["configure_logging", "resolve_format"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_CHATTY = ("websockets", "aiohttp.access", "asyncio")  # their INFO lines repeat ours


def resolve_format(log_format: str, stream: TextIO) -> str:
    """``"console"`` or ``"json"``: ``"auto"`` picks the console renderer only on a terminal."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure_logging(
    log_format: str = "auto", log_level: str = "info", stream: TextIO | None = None
) -> str:
    """Configure structlog and the standard library's root logger; return the format chosen."""
    out = stream if stream is not None else sys.stderr
    chosen = resolve_format(log_format, out)
    level = _LEVELS[log_level]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if chosen == "json":
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colors(out))
    # Every event, gravd's own and the library's, ends in one stdlib handler: a write that fails
    # (a log collector died, the pipe broke) is dropped there and never raises into gravd's
    # control flow (signal handling, links), as a print from structlog's PrintLogger did.
    logging.raiseExceptions = False
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            # library events arrive as stdlib records, their fields in ``extra`` (gravpy._log)
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    hub = logging.getLogger(HUB_LOGGER)  # a flood of bad handshakes writes a few lines, not all
    hub.filters[:] = [f for f in hub.filters if not isinstance(f, RefusalLogLimit)]
    hub.addFilter(RefusalLogLimit())
    return chosen


def _colors(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return isatty is not None and isatty()
