"""HTTP transport: a link is a session of plain HTTP/1.1 requests, every one made by the dialler.

For networks where only plain HTTP passes (proxies, firewalls that refuse the WebSocket upgrade).
The core does the handshake, liveness and routing exactly as over WebSocket; this module only moves
opaque frames. Built on aiohttp: ``web.AppRunner`` and ``web.TCPSite`` listen, one
``ClientSession`` per transport dials.

Wire use
--------

Only the dialling side opens connections, so a dialler behind NAT or an outgoing-only proxy still
gets traffic both ways: frames for the acceptor ride in POST bodies, frames for the dialler in the
answers to the long polls it keeps outstanding. Paths are under ``path`` (default ``/meta/http``):

``POST {path}/open`` with ``X-Grav-Max-Frame-Bytes`` (the dialler's limit)
    200 and JSON ``{"version": 1, "session": ID, "max_frame_bytes": N, "poll_timeout": S}``; the
    acceptor hands a new link to ``on_link``. ``ID`` (``secrets.token_urlsafe``, 144 bits) is the
    session's only credential, so later requests carry it in the ``X-Grav-Session`` header, never
    in the URL (URLs end up in proxy and access logs).
``POST {path}/send`` with ``X-Grav-Session``, ``X-Grav-Seq: n``
    A body of frames for the acceptor; 204 once they are queued. Bodies are numbered 1, 2, ... and
    a number already taken is answered 204 and ignored, so a send can be retried. Backpressure:
    the answer is held until the frames fit in the acceptor's queue. One send is in flight per
    link, and every frame queued meanwhile goes into the next (batching is what makes HTTP fast).
    410 with the reason once the acceptor closed the link: the dialler sends nothing more but
    keeps polling for the frames the acceptor sent before it closed.
``GET {path}/recv`` with ``X-Grav-Session``, ``X-Grav-Ack: n``, ``X-Grav-Wait: s``, ``X-Grav-Room: b``
    A long poll: 200 with the next batch (numbered in ``X-Grav-Batch``) as soon as the acceptor
    has frames; 204 after ``s`` seconds (at most the acceptor's ``poll_timeout``) without any; 410
    with the close reason once the acceptor closed the link and every frame went out. ``Ack`` is
    the last batch received: the acceptor keeps a batch until it is acknowledged and sends it again
    to a poll that does not acknowledge it, so an answer lost with its connection costs a poll, not
    frames. ``Room`` is how many bytes the dialler can buffer: a batch holds no more (but at least
    one frame); ``Room: 0`` only says "still here" and is answered 204 at once. A newer poll ends
    an older one that is still waiting (204).
``POST {path}/close`` with ``X-Grav-Session``, the reason as the UTF-8 body
    The dialler closed the link; 204.

A body is frames, each a 4-byte big-endian length and that many bytes, and holds at most the
receiver's ``max_frame_bytes`` + 4 bytes. Every answer carries ``Cache-Control: no-store``.

Why long polls rather than one streamed (chunked) answer: an answer that ends after each batch
passes proxies that buffer bodies (many corporate and antivirus proxies do), a lost answer is
recovered by the acknowledgement above, and the dialler bounds its buffer with ``Room``. Under load a
poll returns at once with a full batch, so the round trip per batch costs little.

The acceptor never fails on what a client sends. Unknown session: 404. Another path or method:
404/405. A body over the limit or a frame over ``max_frame_bytes``: 413; a body that is not frames,
a bad header, a batch or acknowledgement out of sequence: 400 -- and these close the session with
that reason. Opening with the session table full (counted in ``connections_refused``) or while
stopping: 503. A session with no request for 3 x ``poll_timeout`` is reaped, its link closed with
the reason; a dialler whose own buffer is full keeps polling with ``Room: 0``. Bodies are never
decompressed, redirects never followed.

The dialler retries a request once when its connection dropped (a stale keep-alive connection) or
a proxy answered 502/503/504; numbered sends and acknowledged batches make that safe. A poll with
no answer within its wait + 10 s means the acceptor is gone: the link is lost. No proxy from the
environment (``trust_env=False``), no cookies.

Every aiohttp (and socket) exception, and every HTTP answer that ends a link, is translated in one
place, :class:`_ErrorMap`: :class:`~gravpy.errors.LinkClosedError` for a link (the message says who
closed it and why), :class:`~gravpy.errors.TransportError` for listen and dial failures, with the
original exception as ``__cause__``.
"""

from transports.http.client import HttpDialledLink
from transports.http.server import HttpAcceptedLink
from transports.http.transport import HttpTransport
from transports.http.wire import _decode_batch as _decode_batch  # the body codec, for tests
from transports.http.wire import _encode_batch as _encode_batch

__all__ = ["HttpAcceptedLink", "HttpDialledLink", "HttpTransport"]
