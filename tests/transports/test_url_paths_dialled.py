"""A path a transport takes is one its peers can dial: the WebSocket and HTTP transports on
127.0.0.1, port 0, dialled by their own clients at the URL they advertise."""

from __future__ import annotations

import pytest

from gravpy.errors import UsageError
from gravpy.transport_kit import check_url_path
from tests.transports._link_server import serving
from transports.http import HttpTransport
from transports.websocket import WebSocketTransport

TRANSPORTS = {"websocket": WebSocketTransport, "http": HttpTransport}


@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_a_path_in_any_script_is_dialled_at_its_own_url(transport: str) -> None:
    """A non-ASCII path the transport takes answers a dial of the URL it advertises (the
    client sends it percent-encoded), rather than 404 for every peer."""
    cls = TRANSPORTS[transport]
    async with serving(cls("127.0.0.1", 0, "/étage-2/grav")) as server:
        link = await cls("127.0.0.1", 0).dial(server.url, timeout=5)
        await link.close()


@pytest.mark.parametrize(
    ("path", "why"),
    [("/a%20b", "'%'"), ("/x{y}", "'{'"), ("/x{", "'{'"), ("/a/../b", "'..'"), ("/a/./b", "'.'")],
)
def test_the_http_transport_refuses_a_path_its_router_cannot_serve(path: str, why: str) -> None:
    """The HTTP server matches a request's decoded, normalised path against routes in which
    braces are patterns: a path with '%', a brace or a dot segment would answer 404 to every dial
    (or fail at start), so it is refused at construction, as gravd's --http-path check is."""
    with pytest.raises(UsageError) as caught:
        HttpTransport("127.0.0.1", 0, path)
    assert why in str(caught.value)
    with pytest.raises(UsageError):
        check_url_path(path, http=True)


@pytest.mark.parametrize("path", ["/a%20b", "/x{y}"])
async def test_the_websocket_transport_serves_what_the_http_one_refuses(path: str) -> None:
    """The WebSocket server compares the path as sent, so '%' and braces stay dialable there."""
    async with serving(WebSocketTransport("127.0.0.1", 0, path)) as server:
        link = await WebSocketTransport("127.0.0.1", 0).dial(server.url, timeout=5)
        await link.close()
