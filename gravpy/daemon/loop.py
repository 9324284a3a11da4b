"""Which event loop gravd runs on: ``--loop auto|asyncio|uvloop``.

uvloop (the ``gravpy[speed]`` extra) runs the same asyncio code on libuv, with cheaper sockets
and callbacks; ``auto`` takes it when it can be imported and asyncio's own loop otherwise. Asking
for ``uvloop`` when it is not installed is a configuration error, found before anything starts.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["check_loop", "loop_name", "run"]

T = TypeVar("T")


def _have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def check_loop(choice: str) -> str:
    """``choice`` if it can run here; ValueError (for the config loader) if uvloop is missing."""
    if choice == "uvloop" and not _have_uvloop():
        raise ValueError(
            "uvloop is not installed; install it with: pip install 'gravpy[speed]' "
            "(or use --loop asyncio)"
        )
    return choice


def loop_name(choice: str) -> str:
    """The loop ``choice`` means on this machine: ``"uvloop"`` or ``"asyncio"``."""
    if choice == "auto":
        return "uvloop" if _have_uvloop() else "asyncio"
    return choice


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """Run ``main`` to completion on the loop ``choice`` names (like ``asyncio.run``)."""
    if loop_name(choice) == "uvloop":
        import uvloop

        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)
