"""``capture_logs``: the events gravpy's library code logged during a block, as dicts.

Library code logs through stdlib ``logging`` under ``gravpy.*`` (see ``gravpy._log``), so tests
capture there: a handler on the ``gravpy`` logger, at DEBUG for the duration of the block, turns
each record back into the event dict it came from: ``{"event": "peer_connected", "log_level":
"info", "logger": "gravpy.mesh.hub", "peer": ..., ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["capture_logs"]

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class _Collector(logging.Handler):
    def __init__(self, on_entry: Callable[[dict[str, Any]], None] | None) -> None:
        super().__init__(logging.DEBUG)
        self.entries: list[dict[str, Any]] = []
        self._on_entry = on_entry

    def emit(self, record: logging.LogRecord) -> None:
        entry: dict[str, Any] = {
            "event": record.getMessage(),
            "log_level": record.levelname.lower(),
            "logger": record.name,
        }
        entry.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
        self.entries.append(entry)
        if self._on_entry is not None:
            self._on_entry(entry)


@contextmanager
def capture_logs(
    on_entry: Callable[[dict[str, Any]], None] | None = None, logger: str = "gravpy"
) -> Iterator[list[dict[str, Any]]]:
    """Collect every event logged under ``logger`` in the block (``on_entry`` sees each one)."""
    target = logging.getLogger(logger)
    collector = _Collector(on_entry)
    level = target.level
    target.addHandler(collector)
    target.setLevel(logging.DEBUG)
    try:
        yield collector.entries
    finally:
        target.removeHandler(collector)
        target.setLevel(level)
