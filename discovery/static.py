"""Static discovery: a fixed list of peer endpoints, from config or the command line.

``StaticDiscovery(["ws://10.0.0.5:8080/meta/message", "10.0.0.6:8080"])`` checks every URL when it
is built (a :class:`~gravpy.errors.UsageError` names the first bad one), reports each endpoint once
when it runs, then waits until cancelled. A bare ``host:port`` means
``ws://host:port/meta/message``, the WebSocket transport's default path; an ``http(s)://`` URL
without a path gets the HTTP transport's, ``/meta/http``. Duplicates are reported once, and this
node's own endpoints (``DiscoveryContext.endpoints``) are not reported at all.

This plugin does not dial and does not retry. Keeping static peers connected is the hub's job: it
dials each reported endpoint and, whenever a link fails or drops, redials with capped, jittered
backoff (:mod:`gravpy.backoff`), forever. Peers also tell each other the endpoints they know, so a
partial list still converges to a full mesh.

Nothing is advertised, so there is nothing to withdraw on exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Final
from urllib.parse import urlsplit

from gravpy.errors import UsageError
from gravpy.plugins import DiscoveryContext, PeerReport

__all__ = ["StaticDiscovery", "normalize_endpoint"]

DEFAULT_SCHEME: Final = "ws"
DEFAULT_PATH: Final = "/meta/message"
_DEFAULT_PATHS: Final = {
    "http": "/meta/http",  # the HTTP transport's
    "https": "/meta/http",
    "tcp": "",  # the TCP transport has no path
    "tls": "",
}
_SCHEME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+.-")


def normalize_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` as a full ``scheme://host:port/path`` URL, or raise UsageError.

    ``host:port`` (optionally with a path) gets ``ws://``. A URL without a path gets its
    transport's default path: ``/meta/http`` for ``http(s)://``, else ``/meta/message``.
    """
    if not isinstance(endpoint, str):
        raise UsageError(f"a static endpoint must be a string, got {endpoint!r}")
    raw = endpoint.strip()
    if not raw or any(c.isspace() for c in raw):
        raise UsageError(f"bad static endpoint {endpoint!r}: empty or contains whitespace")
    if "://" not in raw:
        raw = f"{DEFAULT_SCHEME}://{raw}"
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"bad static endpoint {endpoint!r}: {exc}") from exc
    scheme = parts.scheme
    if not scheme or not scheme[0].isalpha() or not set(scheme) <= _SCHEME_CHARS:
        raise UsageError(f"bad static endpoint {endpoint!r}: invalid scheme {scheme!r}")
    if not parts.hostname:
        raise UsageError(f"bad static endpoint {endpoint!r}: no host")
    if port is None or port == 0:
        raise UsageError(f"bad static endpoint {endpoint!r}: a port from 1 to 65535 is required")
    return parts._replace(path=parts.path or _DEFAULT_PATHS.get(scheme, DEFAULT_PATH)).geturl()


class StaticDiscovery:
    """Reports a fixed list of endpoints once, then idles until cancelled."""

    name: Final = "static"

    def __init__(self, endpoints: Iterable[str]) -> None:
        if isinstance(endpoints, str):
            raise UsageError("StaticDiscovery takes a list of endpoints, not one string")
        normalized = (normalize_endpoint(endpoint) for endpoint in endpoints)
        self.endpoints: tuple[str, ...] = tuple(dict.fromkeys(normalized))

    async def run(self, ctx: DiscoveryContext, report: Callable[[PeerReport], None]) -> None:
        """Report every endpoint except this node's own, then wait until cancelled."""
        own = {_normalize_own(endpoint) for endpoint in ctx.endpoints}
        for endpoint in self.endpoints:
            if endpoint not in own:
                report(PeerReport(endpoint=endpoint, source=self.name))
        await asyncio.get_running_loop().create_future()  # only cancellation ends this

    def __repr__(self) -> str:
        return f"StaticDiscovery({list(self.endpoints)!r})"


def _normalize_own(endpoint: str) -> str:
    """This node's endpoint in the form :func:`normalize_endpoint` gives, when it has one."""
    try:
        return normalize_endpoint(endpoint)
    except UsageError:
        return endpoint
