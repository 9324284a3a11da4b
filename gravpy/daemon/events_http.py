"""gravd's events over HTTP, on the monitoring port: list, mark, delete and a live stream.

``GET /v1/events``: the filters of ``EventQuery`` as query parameters (``severity`` may repeat or
be comma-separated), answering ``{"events": [...], "total": N, "page": P, "page_size": S}``.
``PATCH /v1/events/{id}`` with ``{"status": "read"}`` answers the updated event;
``DELETE /v1/events/{id}`` answers ``{"deleted": id}``; both 404 for an unknown id.
``GET /v1/events/stream?user=UUID`` streams that user's live events as server-sent events
(``event: event``, ``id:`` the event id, ``data:`` the event as JSON), via aiohttp-sse.

Each stream is a pod on gravd's bus with the user's interest, which travels to the peers, so at
most ``MAX_STREAMS`` are open at once: one more answers 503 and is counted (``streams_refused``),
as the dashboard's tail caps its viewers. A stream's pod leaves the bus as soon as its client goes:
the monitor cancels a handler whose connection is lost (aiohttp's ``handler_cancellation``), so
nothing waits for the next ping to notice.

Bad input answers 400 with ``{"error": reason, "field": name}``: an id or user that is not a UUID,
an unknown filter, a bad severity, a page size over the limit. A store failure answers 503.

Events carry what apps and nodes report (users, failures, metadata), so every route goes through
the dashboard's gate (``gravpy.daemon.dashboard.access.Access``): open on a loopback monitor
to requests whose ``Host`` names loopback (403 otherwise: DNS rebinding), the dashboard token
beyond it (401 without it, 403 when no token file is set).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp_sse import sse_response

from gravpy.events import Event, EventError, EventQuery, EventStoreError, Subscription
from gravpy.events.event import check_uuid

if TYPE_CHECKING:
    from gravpy.daemon.events_node import DaemonEvents

__all__ = ["MAX_STREAMS", "EventRoutes", "add_event_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PING_INTERVAL = 15.0
MAX_STREAMS = 64  # open at once; each is a pod with an interest the mesh learns


def add_event_routes(
    app: web.Application,
    events: DaemonEvents | None,
    guard: Callable[[Handler], Handler] | None = None,
) -> EventRoutes | None:
    """Add the ``/v1/events`` routes to the monitor's ``app`` (nothing if gravd keeps no events),
    each behind ``guard`` (the dashboard's ``Access.guard``) when one is given; return them."""
    if events is None:
        return None
    routes = EventRoutes(events)

    def gated(handler: Handler) -> Handler:
        return handler if guard is None else guard(handler)

    app.router.add_get("/v1/events", gated(routes.list))
    app.router.add_get("/v1/events/stream", gated(routes.stream))
    app.router.add_patch("/v1/events/{id}", gated(routes.mark))
    app.router.add_delete("/v1/events/{id}", gated(routes.delete))
    return routes


def _bad(field: str, reason: str) -> web.Response:
    return web.json_response({"error": reason, "field": field}, status=400)


def _guarded(handler: Handler) -> Handler:
    """Answer 400 for bad input and 503 for a failing store, whatever the handler."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except EventError as exc:
            return _bad(exc.field, exc.problem)
        except EventStoreError as exc:
            return web.json_response({"error": str(exc), "field": None}, status=503)

    return guarded


class EventRoutes:
    """The handlers, over one gravd's store and broadcaster."""

    def __init__(self, events: DaemonEvents) -> None:
        self.events = events
        self.streams = 0  # open now
        self.streams_refused = 0  # answered 503: MAX_STREAMS were open
        self.list = _guarded(self._list)
        self.mark = _guarded(self._mark)
        self.delete = _guarded(self._delete)
        self.stream = _guarded(self._stream)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        params: dict[str, Any] = {}
        for key in request.query:
            values = request.query.getall(key)
            if key == "severity":
                params[key] = ",".join(values)
            elif len(values) > 1:
                raise EventError(key, "given more than once")
            else:
                params[key] = values[0]
        page = await self.events.store.query(EventQuery.from_params(params))
        return web.json_response(page.to_dict())

    async def _mark(self, request: web.Request) -> web.StreamResponse:
        event_id = check_uuid("id", request.match_info["id"])
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise EventError("body", 'expected JSON like {"status": "read"}') from None
        if not isinstance(body, dict) or set(body) != {"status"}:
            raise EventError("body", 'expected JSON like {"status": "read"}')
        found = await self.events.store.mark(event_id, body["status"])
        return _found(event_id, found)

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        event_id = check_uuid("id", request.match_info["id"])
        if not await self.events.store.delete(event_id):
            return _missing(event_id)
        return web.json_response({"deleted": event_id})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if set(request.query) - {"user"}:
            raise EventError(sorted(set(request.query) - {"user"})[0], "unknown parameter")
        user = request.query.get("user")
        if not user:
            raise EventError("user", "the stream is per user: give ?user=UUID")
        user = check_uuid("user", user)
        if self.streams >= MAX_STREAMS:
            self.streams_refused += 1
            return web.json_response(
                {"error": f"too many event streams open ({MAX_STREAMS}); try later", "field": None},
                status=503,
            )
        self.streams += 1
        try:
            return await self._send_events(request, user)
        finally:
            self.streams -= 1

    async def _send_events(self, request: web.Request, user: str) -> web.StreamResponse:
        subscription = self.events.broadcaster.subscribe(user)
        async with subscription, sse_response(request, ping_interval=PING_INTERVAL) as sse:
            ended = asyncio.ensure_future(sse.wait())
            try:
                while (event := await _next_or_none(subscription, ended)) is not None:
                    await sse.send(json.dumps(event.to_dict()), id=event.id, event="event")
            except ConnectionResetError:
                pass  # the client went away mid-write
            finally:
                ended.cancel()
                await asyncio.gather(ended, return_exceptions=True)
        return sse


async def _next_or_none(subscription: Subscription, ended: asyncio.Future[None]) -> Event | None:
    """The next event, or None when the client went away or the subscription closed."""
    nxt: asyncio.Future[Event] = asyncio.ensure_future(anext(subscription))
    try:
        waits: list[asyncio.Future[Any]] = [nxt, ended]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not nxt.done():
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
    if nxt.cancelled() or nxt.exception() is not None:
        return None
    return nxt.result()


def _found(event_id: str, event: Event | None) -> web.Response:
    return _missing(event_id) if event is None else web.json_response(event.to_dict())


def _missing(event_id: str) -> web.Response:
    return web.json_response({"error": f"no event {event_id}", "field": "id"}, status=404)
