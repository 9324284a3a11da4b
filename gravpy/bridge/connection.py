"""``Connector``: opens a bridge's nats-py connection and counts the attempts that failed.

Theory of operation
-------------------
``open()`` reads the credential and CA files (``auth_options``, at each attempt, so a fixed file
is picked up by the next one) and calls ``nats.connect``, which tries the seed servers itself
(``reconnect_attempts`` rounds), reporting each failed attempt to ``error_cb``. Every failed
attempt is counted (``failed``) and its reason kept (``last_error``, with when: ``last_error_at``),
whether nats-py reported it or it ended ``open()`` (a file missing, unreadable, not text or not
what it should be, named in the error; or whatever nats-py raised): the operator sees a wrong
token, NKEY, ``.creds`` or CA as ``failed_connects`` rising while the bridge stays
``connecting``, and retrying: whatever ``open()`` raises, the bridge tries again after a backoff.
Errors after connecting (nats-py's, or one the bridge ends a connection on: ``record``) are kept
the same way. The last error is kept once the bridge connects again (it says why the bridge last
failed); its time tells a past error from a current one.

A TLS failure ends the attempt at once: nats-py would retry the same handshake, and after a
failed TLS upgrade its clean-up waits for a stream that never reports closed (nats-py 2.16), so
``nats.connect`` would not return. The attempt's task is cancelled (the socket is already being
closed) and ``open()`` raises the ``ssl.SSLError``; the bridge retries with its own backoff.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.errors import NoServersError

from gravpy.bridge.config import NatsBridgeConfig, auth_options
from gravpy.bridge.wire import WireClient

__all__ = ["Connector"]

ErrorCallback = Callable[[Exception], Awaitable[None]]


class Connector:
    """Opens connections for one bridge; ``failed`` attempts and the ``last_error`` (at
    ``last_error_at``, Unix time)."""

    def __init__(self, config: NatsBridgeConfig, on_error: ErrorCallback) -> None:
        self.config = config
        self.failed = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self._on_error = on_error  # the bridge's: slow consumers, after connecting
        self._attempt: asyncio.Task[WireClient] | None = None
        self._fatal: ssl.SSLError | None = None
        self._counted: Exception | None = None

    async def open(self, name: str, callbacks: dict[str, Any]) -> WireClient:
        """A connected client; raises what ended the attempt (counted)."""
        try:
            options = self._options(name, callbacks)
            options.update(await asyncio.to_thread(auth_options, self.config))
            self._fatal = None
            self._attempt = asyncio.ensure_future(_connect(options))
            try:
                return await self._attempt
            except asyncio.CancelledError:
                if self._fatal is None:
                    raise
                raise self._fatal from None
            finally:
                self._attempt = None
        except Exception as exc:
            if exc is not self._counted and not isinstance(exc, NoServersError):
                # (nats-py's own attempts were counted in ``_error`` as they failed)
                self._failed(exc)
            raise

    def _options(self, name: str, callbacks: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        return {
            "servers": list(c.servers),
            "name": name,
            "connect_timeout": c.connect_timeout,
            "reconnect_time_wait": c.reconnect_wait,
            "max_reconnect_attempts": c.reconnect_attempts,
            "pending_size": c.pending_bytes,
            "error_cb": self._error,
            "skip_subject_validation": True,  # every subject is built escaped (subjects.py)
            **callbacks,
        }

    async def _error(self, exc: Exception) -> None:
        attempt = self._attempt
        if attempt is None:  # connected: the bridge's business
            self.record(str(exc) or type(exc).__name__)
            await self._on_error(exc)
            return
        self._failed(exc)
        self._counted = exc
        if isinstance(exc, ssl.SSLError):
            self._fatal = exc
            attempt.cancel()

    def _failed(self, exc: Exception) -> None:
        self.failed += 1
        self.record(str(exc) or type(exc).__name__)

    def record(self, error: str) -> None:
        """Keep ``error`` as the last one, noting when it happened."""
        self.last_error = error
        self.last_error_at = time.time()


async def _connect(options: dict[str, Any]) -> WireClient:
    """``nats.connect``, with the bridge's client class (``gravpy.bridge.wire``)."""
    nc = WireClient()
    await nc.connect(**options)
    return nc
