"""``gravpy.connect(url)``: an application attached to a running node (gravd) as a leaf.

A leaf does not listen and does not join the mesh; the node it attaches to forwards for it, so its
pods reach every pod on every node. The link is redialled with backoff if it drops.
"""

from __future__ import annotations

from typing import Any

from gravpy._mailbox import check_timeout
from gravpy.errors import UsageError
from gravpy.grav import Grav
from gravpy.plugins import Transport, available_transports, load_transport
from gravpy.proto import ROLE_LEAF

__all__ = ["connect", "transport_for_url"]

DEFAULT_URL = "ws://127.0.0.1:8080/meta/message"


def transport_for_url(url: str) -> Transport:
    """A transport (not listening) that can dial ``url``, chosen by the URL's scheme."""
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
    app's link (``gravctl peers``, ``/v1/node``): printable, at most 64 characters.
    """
    check_timeout(timeout)
    transport = options.pop("transport", None) or transport_for_url(url)
    return Grav(
        transport=transport,
        role=ROLE_LEAF,
        attach_to=url,
        attach_timeout=timeout,
        **options,
    )
