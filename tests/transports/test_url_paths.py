"""The WebSocket and HTTP transports refuse, at construction, a ``path`` that no peer could dial:
one holding '?' or '#' (the dialler's URL ends its path there, so every dial got 404), not
starting with '/', or holding whitespace or a control character. Pure: nothing listens."""

from __future__ import annotations

import pytest

from gravpy.errors import UsageError
from gravpy.transport_kit import check_url_path
from transports.http import HttpTransport
from transports.websocket import WebSocketTransport

TRANSPORTS = {"websocket": WebSocketTransport, "http": HttpTransport}
BAD_PATHS = {
    "query": ("/meta?v=1", "'?'"),
    "fragment": ("/meta#top", "'#'"),
    "relative": ("meta", "start with '/'"),
    "empty": ("", "start with '/'"),
    "space": ("/meta message", "U+0020"),
    "newline": ("/meta\nHost: x", "U+000A"),
    "nul": ("/meta\x00", "U+0000"),
    "escape": ("/meta\x1b", "U+001B"),
    "zero-width-space": ("/me\u200bta", "U+200B"),
}


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize(("path", "why"), list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_a_transport_refuses_a_path_no_peer_could_dial(transport: str, path: str, why: str) -> None:
    """Constructing the transport with such a path raises UsageError saying what is wrong."""
    with pytest.raises(UsageError) as caught:
        TRANSPORTS[transport]("127.0.0.1", 0, path)
    assert why in str(caught.value)


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_a_transport_takes_a_path_of_printable_text(transport: str) -> None:
    """A path of printable text, in any script, is the transport's path as given."""
    assert TRANSPORTS[transport]("127.0.0.1", 0, "/étage-2/grav").path == "/étage-2/grav"


def test_the_http_transport_refuses_a_trailing_slash_the_websocket_one_takes() -> None:
    """The HTTP transport serves ``{path}/open`` and the like, so its path may not end with '/';
    the WebSocket transport's may (its root, '/', is a path like any other)."""
    with pytest.raises(UsageError, match="end with '/'"):
        HttpTransport("127.0.0.1", 0, "/meta/")
    assert WebSocketTransport("127.0.0.1", 0, "/").path == "/"
    assert check_url_path("/meta/") == "/meta/"
    with pytest.raises(UsageError, match="end with '/'"):
        check_url_path("/meta/", http=True)


def test_a_path_that_is_not_a_string_is_refused() -> None:
    """check_url_path, which gravd's setting parsers share, refuses a value that is no str."""
    with pytest.raises(UsageError, match="a URL path"):
        check_url_path(42)
