"""What every transport shares: one error map, one way to say a link closed, one ``serve_link``.

Theory of operation
-------------------

A transport plugin wraps a library (websockets, aiohttp, asyncio streams) whose exceptions must not
leak out. Each transport translates them in one place, a subclass of :class:`ErrorMap` used as
``with errors:`` around every library call. Outside a link (``on_link=False``: listening,
dialling) a failure becomes :class:`~gravpy.errors.TransportError`; on a link it becomes
:class:`~gravpy.errors.LinkClosedError`. The original exception is kept as ``__cause__``, and
:func:`describe_failure` digs the reason a user can act on out of the chain (a TLS alert or a
certificate check buried under the library's own wrapper), so a refused TLS dial says *why*.

:func:`link_closed` builds the one message format every transport uses, with ``closed_by`` and
``reason`` set as fields::

    link to 10.0.0.2:8080 closed locally: transport stopped
    link to 10.0.0.2:8080 closed by peer (code 1000): bye
    link to 10.0.0.2:8080 lost: ConnectionResetError: [Errno 104] Connection reset by peer

:func:`serve_link` runs the ``on_link`` handler of an accepted link by the rule of
:mod:`gravpy.plugins`: the link lives while the handler runs and is closed when it returns; a
handler that raises is logged (``link_handler_failed``) and its link closed with that reason.

:class:`RateLimitFilter` goes on a listener's server log: a flood of bad connections then logs a
few lines (one traceback per burst) and a count, not a line per connection.

:func:`check_url_path` is the one rule for the path a transport listens at (the WebSocket and HTTP
transports' ``path``, gravd's ``path`` and ``http_path`` settings): a path a peer's URL can carry,
so a path that would only ever answer 404 is refused where it is given, not found at the first dial.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

from gravpy._log import get_logger
from gravpy.errors import GravError, LinkClosedError, TransportError, UsageError
from gravpy.plugins import Link, LinkHandler

__all__ = [
    "CLOSED_BY_LOCAL",
    "CLOSED_BY_PEER",
    "LOST",
    "ErrorMap",
    "RateLimitFilter",
    "check_url_path",
    "describe_failure",
    "link_closed",
    "serve_link",
]

_log = get_logger("gravpy.transports")

CLOSED_BY_LOCAL: Final = "local"
CLOSED_BY_PEER: Final = "peer"
LOST: Final = "lost"
_VERBS: Final = {CLOSED_BY_LOCAL: "closed locally", CLOSED_BY_PEER: "closed by peer", LOST: "lost"}


def link_closed(
    remote: str, closed_by: str, reason: str = "", *, code: int | None = None
) -> LinkClosedError:
    """The LinkClosedError for the link to ``remote``: ``closed_by`` is local, peer or lost."""
    text = f"link to {remote} {_VERBS[closed_by]}"
    if code is not None:
        text += f" (code {code})"
    if reason:
        text += f": {reason}"
    return LinkClosedError(text, closed_by=closed_by, reason=reason)


def check_url_path(path: object, *, http: bool = False) -> str:
    """``path`` if a transport can listen at it and a peer's URL can name it; else ``UsageError``
    (a ``ValueError``, as gravd's setting parsers raise) saying what is wrong.

    It starts with '/' and holds no '?' or '#' (a dialler's URL ends its path there, so it asks
    for the part before and gets 404), no whitespace and no control or invisible character (a
    URL cannot carry it, a log would not show it). ``http=True`` (the HTTP transport, which
    serves ``{path}/open`` and the like) also refuses one ending with '/', and what its router
    cannot serve: '%', braces, '.' or '..' segments (``_check_routable``).
    """
    if not isinstance(path, str):
        raise UsageError(f"expected a URL path (a str starting with '/'), got {path!r}")
    if not path.startswith("/"):
        raise UsageError(f"{path!r} is not a URL path: it must start with '/'")
    for mark, starts in (("?", "query"), ("#", "fragment")):
        if mark in path:
            before = path.partition(mark)[0]
            raise UsageError(
                f"{path!r} is not a URL path: '{mark}' starts a URL's {starts}, so a peer "
                f"dialling it would ask for {before!r} and get 404"
            )
    bad = next((c for c in path if c.isspace() or not c.isprintable()), None)
    if bad is not None:
        raise UsageError(
            f"{path!r} is not a URL path: it holds U+{ord(bad):04X} (no whitespace, control or "
            "invisible characters)"
        )
    if http:
        if path.endswith("/"):
            raise UsageError(f"{path!r} must not end with '/' (the HTTP transport serves under it)")
        _check_routable(path)
    return path


def _check_routable(path: str) -> None:
    """Refuse what the HTTP transport's server (aiohttp) cannot route to: it matches a request's
    path percent-decoded and with its dot segments resolved, against routes where braces are
    patterns; such a path would answer 404 to every dial, or fail at start."""
    bad = next((c for c in "%{}" if c in path), None)
    if bad is not None:
        raise UsageError(
            f"{path!r} is not an HTTP transport path: '{bad}' is read by its router (write a "
            "character itself, not its %-escape; no braces)"
        )
    dots = next((s for s in path.split("/") if s in (".", "..")), None)
    if dots is not None:
        raise UsageError(
            f"{path!r} is not an HTTP transport path: a dialler's URL resolves its '{dots}' "
            "segment, so it would ask for another path and get 404"
        )


def describe_failure(exc: BaseException) -> str:
    """``exc`` as ``"Type: message"``, naming the TLS failure under it if there is one.

    Libraries wrap a TLS failure in their own exception (``InvalidMessage``,
    ``ClientConnectorError``), whose message alone does not say the certificate was refused.
    """
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    tls = _tls_failure(exc)
    if tls is not None and tls is not exc:
        text += f" (TLS: {_tls_reason(tls)})"
    elif tls is exc:
        text = f"TLS: {_tls_reason(tls)}"
    return text


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl`` module's own error in ``exc``'s chain (libraries subclass SSLError too)."""
    seen: set[int] = set()
    found: ssl.SSLError | None = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            if type(current).__module__ == "ssl":
                return current
            found = found or current
        inner = getattr(current, "certificate_error", None)  # where aiohttp keeps it
        if isinstance(inner, BaseException) and id(inner) not in seen:
            current = inner
        else:
            current = current.__cause__ or current.__context__
    return found


def _tls_reason(exc: ssl.SSLError) -> str:
    verify = getattr(exc, "verify_message", None)
    if isinstance(verify, str) and verify:
        return f"certificate verify failed: {verify}"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return str(exc)


CERT_REFUSED_HINT: Final = (
    "(over TLS, a node that hangs up at once may have refused this client's certificate: is it "
    "signed by the CA the node verifies clients with, and not expired?)"
)
"""Said with a TLS dial the node hung up on right after the handshake (it verifies client
certificates in the handshake, and a refused one gets no answer the client can read)."""


class ErrorMap:
    """``with errors:`` turns a library's exceptions into gravpy's; subclass per transport.

    ``remote`` names the other end, ``action`` what was being done (``"dial ws://..."``);
    ``on_link`` says a failure ends a link rather than a listen or a dial. Subclasses override
    :meth:`dial_error` and :meth:`link_error` for what they know better (a close frame, an HTTP
    status). GravErrors, ``CancelledError`` and ``KeyboardInterrupt`` pass through unchanged.
    """

    __slots__ = ("action", "on_link", "remote")

    def __init__(self, remote: str, action: str, *, on_link: bool = False) -> None:
        self.remote = remote
        self.action = action
        self.on_link = on_link

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, GravError) or not isinstance(exc, Exception):
            return  # no error, already ours, or CancelledError/KeyboardInterrupt: pass through
        raise self.translate(exc) from exc

    def translate(self, exc: Exception) -> GravError:
        """The gravpy error for ``exc`` (the caller raises it ``from exc``)."""
        return self.link_error(exc) if self.on_link else self.dial_error(exc)

    def dial_error(self, exc: Exception) -> GravError:
        if isinstance(exc, TimeoutError):
            return TransportError(f"{self.action}: timed out")
        return TransportError(f"{self.action}: {describe_failure(exc)}")

    def link_error(self, exc: Exception) -> GravError:
        if isinstance(exc, TimeoutError):
            return link_closed(self.remote, LOST, "the peer did not answer in time")
        return link_closed(self.remote, LOST, describe_failure(exc))


async def serve_link(
    link: Link,
    on_link: LinkHandler,
    *,
    transport: str,
    on_failure: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Run ``on_link(link)`` for an accepted link, then close the link.

    A LinkClosedError out of the handler is a normal end. Any other exception is logged as
    ``link_handler_failed`` and the link is closed with that reason, through ``on_failure`` when
    the transport has a better way (a WebSocket close code), else ``link.close``.
    """
    try:
        await on_link(link)
    except LinkClosedError:
        pass  # the link closed under the handler: a normal end
    except Exception:
        _log.error(
            "link_handler_failed", transport=transport, peer=link.remote_address, exc_info=True
        )
        await (on_failure or link.close)("link handler failed")
    finally:
        await link.close()


class RateLimitFilter(logging.Filter):
    """Pass at most ``burst`` records per ``period`` seconds; then say how many were dropped."""

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        super().__init__()
        self.burst, self.period = burst, period
        self._window = -period
        self._passed = 0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._window >= self.period:
            if self.suppressed:
                record.msg = f"{record.msg} ({self.suppressed} similar records suppressed)"
            self._window, self._passed, self.suppressed = now, 0, 0
        if self._passed >= self.burst:
            self.suppressed += 1
            return False
        self._passed += 1
        record.exc_info = None if self._passed > 1 else record.exc_info  # one traceback a burst
        return True
