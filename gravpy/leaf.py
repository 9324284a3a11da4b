"""``gravpy.connect(url)``: an application attached to a running node (gravd) as a leaf.

A leaf does not listen and does not join the mesh; the node it attaches to forwards for it, so its
pods reach every pod on every node. The link is redialled with backoff if it drops.
"""

from __future__ import annotations

import inspect
from typing import Any

from gravpy._mailbox import check_timeout
from gravpy.errors import UsageError
from gravpy.grav import Grav
from gravpy.plugins import Transport, available_transports, load_transport
from gravpy.proto import ROLE_LEAF

__all__ = ["connect", "transport_for_url"]

DEFAULT_URL = "ws://127.0.0.1:8080/meta/message"
# what ``connect`` itself sets on the leaf ``Grav`` it builds (``timeout`` is ``attach_timeout``)
_SET_BY_CONNECT = frozenset(("role", "attach_to", "attach_timeout"))


def transport_for_url(url: str) -> Transport:
    """A transport (not listening) that can dial ``url``, chosen by the URL's scheme."""
    _check_url(url)
    scheme = url.split("://", 1)[0] if "://" in url else "ws"
    for name in available_transports():
        factory = load_transport(name)
        if scheme in getattr(factory, "schemes", ()):
            transport: Transport = factory()
            return transport
    raise UsageError(f"no transport plugin dials {scheme}:// URLs (have: {available_transports()})")


def connect(url: str = DEFAULT_URL, *, timeout: float | None = 5.0, **options: Any) -> Grav:
    """A leaf ``Grav`` attached to the node at ``url``; use it with ``async with``.

    ``async with gravpy.connect("ws://127.0.0.1:8080/meta/message") as g: pod = g.connect()``.
    Entering raises ``TransportError`` if the node cannot be reached, ``HandshakeRejectedError``
    if it refuses the link, or ``WaitTimeout`` (a ``TimeoutError``) after ``timeout`` seconds (a
    positive number, or None to wait as long as it takes; else ``UsageError`` at once). Other
    keyword options (``mesh_key``, ``belongs_to``, ``buffer_size``, ...) are those of ``Grav``;
    ``ssl=ctx`` (a client ``ssl.SSLContext``) is what a ``wss://``, ``https://`` or ``tls://`` dial
    trusts and, for mTLS, presents: ``ssl.create_default_context(cafile="ca.pem")`` then
    ``ctx.load_cert_chain("app.pem", "app.key")``. ``name="billing"`` is how the node lists this
    app's link (``gravctl peers``, ``/v1/node``): printable, at most 64 characters. A ``url``
    that is not a str, an option ``Grav`` does not take (or one ``connect`` sets itself:
    ``role``, ``attach_to``, ``attach_timeout``) and a ``transport=`` that is not a transport are
    ``UsageError`` at the call, as a bad ``timeout`` is.
    """
    _check_url(url)
    check_timeout(timeout)
    _check_options(options)
    transport = options.pop("transport", None) or transport_for_url(url)
    _check_transport(transport)
    return Grav(
        transport=transport,
        role=ROLE_LEAF,
        attach_to=url,
        attach_timeout=timeout,
        **options,
    )


def _check_url(url: object) -> None:
    if not isinstance(url, str):
        raise UsageError(f"url must be a str such as {DEFAULT_URL!r}, got {url!r}")


def _check_options(options: dict[str, Any]) -> None:
    """Refuse, as ``UsageError``, what ``Grav`` would refuse with a bare ``TypeError``."""
    taken = set(inspect.signature(Grav).parameters) - _SET_BY_CONNECT
    unknown = sorted(set(options) - taken)
    if unknown:
        set_here = [name for name in unknown if name in _SET_BY_CONNECT]
        if set_here:
            raise UsageError(f"connect sets {', '.join(set_here)} itself (use url= and timeout=)")
        raise UsageError(
            f"connect takes no option {', '.join(unknown)} (it takes those of Grav: "
            f"{', '.join(sorted(taken))})"
        )


def _check_transport(transport: object) -> None:
    if not (
        callable(getattr(transport, "dial", None))
        and isinstance(getattr(transport, "schemes", None), tuple)
    ):
        raise UsageError(
            f"transport must be a transport plugin (gravpy.plugins.Transport), got {transport!r}"
        )
