"""Loggers for library code: structlog's API, stdlib ``logging`` underneath, silent by default.

Library modules log ``_log.info("peer_connected", peer=...)`` through ``get_logger("gravpy.x")``.
Each event becomes a standard ``logging`` record on the logger of that name: the event name is the
record's message and the key-value pairs travel in ``extra``. Nothing is printed unless the
application configures ``logging`` (``gravpy/__init__.py`` adds a ``NullHandler`` to ``gravpy``, as
the logging HOWTO asks of libraries), and levels and handlers are the application's to set. gravd
and gravctl render these records with structlog (``gravpy.daemon.logging``).
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]


def get_logger(name: str) -> Any:
    """A structlog bound logger that writes to the stdlib logger ``name`` (never to stdout)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.render_to_log_kwargs,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
