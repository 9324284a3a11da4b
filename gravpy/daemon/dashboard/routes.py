"""The dashboard's routes on the monitor's aiohttp application.

Theory of operation. ``install_dashboard(app, status, address)`` adds the page (``/``), its
assets (``/dashboard/<name>``, read once from the package into memory, so no path from a request
ever reaches the file system) and the JSON the page polls: ``/v1/mesh`` (``MeshSurvey``),
``/v1/traffic`` (``TrafficHistory``) and ``/v1/dashboard`` (what is on, the tail's counters), plus
the live tail, ``/v1/tail?pattern=...``, as server-sent events. The events inbox is another
component's ``/v1/events``; the page calls it directly and says when it is absent.

Its components start with the application (``on_startup``) and stop with it: the tail's streams
end on ``on_shutdown`` (before aiohttp waits for open requests), the traffic sampler and the
survey pod on ``on_cleanup``. Every route goes through ``Access.guard``; every query parameter is
checked and anything unexpected answers 400 with the reason; no handler waits on the mesh longer
than a survey's window.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gravpy.daemon.dashboard.access import Access
from gravpy.daemon.dashboard.mesh import MeshSurvey
from gravpy.daemon.dashboard.tail import Tail, Viewer
from gravpy.daemon.dashboard.traffic import TrafficHistory, read_counters
from gravpy.daemon.parsers import Address
from gravpy.errors import UsageError
from gravpy.filter import Pattern

if TYPE_CHECKING:
    from gravpy.daemon.monitor import NodeStatus

__all__ = ["ASSETS", "Dashboard", "install_dashboard"]

_log = logging.getLogger("gravpy.daemon.dashboard")
ASSETS = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
_STATS_EVERY = 1.0  # seconds between the tail's counter events
_DROP_GRACE = 2.0  # seconds a dropped viewer's stream has to send its end before it is cut
_NO_STORE = {"Cache-Control": "no-store"}
_STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-store"}


class BadRequestError(UsageError):
    """A dashboard request with a bad parameter; answered with 400 and this message."""


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise BadRequestError(f"unknown parameter(s): {', '.join(unknown)}")
    if any(len(request.query.getall(k)) > 1 for k in request.query):
        raise BadRequestError("each parameter may be given once")
    return {k: request.query[k] for k in request.query}


def _bad(exc: UsageError) -> web.Response:
    return web.json_response({"error": str(exc)}, status=400)


class Dashboard:
    """The dashboard of one node: its components and its route handlers."""

    def __init__(self, status: NodeStatus, address: Address, access: Access | None = None) -> None:
        config = status.config
        self.status = status
        self.access = access or Access.for_monitor(address, config.dashboard_token_file)
        self.tail_enabled = config.dashboard_tail
        self.assets = {
            name: resources.files(__package__).joinpath("static", name).read_bytes()
            for name in ASSETS
        }
        self.traffic = TrafficHistory(lambda: read_counters(status.snapshot()))
        self.survey: MeshSurvey | None = None
        self.tail: Tail | None = None
        self._sampler: asyncio.Task[None] | None = None

    def install(self, app: web.Application) -> None:
        guard = self.access.guard
        app.router.add_get("/", self._index)
        app.router.add_get("/dashboard/{name}", guard(self._asset))
        app.router.add_get("/v1/mesh", guard(self._mesh))
        app.router.add_get("/v1/traffic", guard(self._traffic))
        app.router.add_get("/v1/dashboard", guard(self._about))
        app.router.add_get("/v1/tail", guard(self._tail))
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)

    async def _start(self, app: web.Application) -> None:
        grav = self.status.grav
        self.survey = MeshSurvey(grav, self.status.snapshot)
        self.tail = Tail(grav) if self.tail_enabled else None
        self._sampler = asyncio.create_task(self.traffic.run(), name="dashboard-traffic")
        self._sampler.add_done_callback(_log_failure)

    async def _shutdown(self, app: web.Application) -> None:
        if self.tail is not None:
            self.tail.close()

    async def _cleanup(self, app: web.Application) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            await asyncio.wait([sampler])
        if self.survey is not None:
            self.survey.close()

    # -- the page --------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        login = self.access.login(request)
        if login is not None:
            return login
        problem = self.access.problem(request)
        if problem is not None:
            return problem
        return self._file("index.html")

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound(text=f"no dashboard asset {name!r}")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(
            body=self.assets[name], content_type=ASSETS[name], charset="utf-8", headers=_NO_STORE
        )

    # -- the JSON it polls -----------------------------------------------------------------------

    async def _mesh(self, request: web.Request) -> web.StreamResponse:
        try:
            _query(request, ())
        except UsageError as exc:
            return _bad(exc)
        assert self.survey is not None
        return web.json_response(await self.survey.mesh(), headers=_NO_STORE)

    async def _traffic(self, request: web.Request) -> web.StreamResponse:
        try:
            last = _count(_query(request, ("last",)).get("last"), self.traffic.samples.maxlen)
        except UsageError as exc:
            return _bad(exc)
        document = self.traffic.to_json()
        document["samples"] = document["samples"][-last:] if last else []
        return web.json_response(document, headers=_NO_STORE)

    async def _about(self, request: web.Request) -> web.StreamResponse:
        try:
            _query(request, ())
        except UsageError as exc:
            return _bad(exc)
        return web.json_response(
            {
                "uuid": self.status.grav.node_uuid,
                "tail": self.tail.statistics() if self.tail is not None else None,
                "refused": self.access.refused,
                "surveys": self.survey.surveys if self.survey is not None else 0,
            },
            headers=_NO_STORE,
        )

    # -- the live tail ---------------------------------------------------------------------------

    async def _tail(self, request: web.Request) -> web.StreamResponse:
        try:
            query = _query(request, ("pattern",))
            pattern = Pattern(query.get("pattern", ">"))
        except UsageError as exc:
            return _bad(exc)
        if self.tail is None:
            return web.json_response(
                {"error": "the tail is off on this node (--dashboard-tail off)"}, status=403
            )
        if request.method == "HEAD":  # the headers a GET would start with; no viewer, no body
            return web.Response(headers=_STREAM_HEADERS)
        viewer = self.tail.open(pattern)
        if viewer is None:
            return web.json_response({"error": "too many tail viewers; try later"}, status=503)
        try:
            return await self._stream(request, viewer)
        finally:
            self.tail.release(viewer)

    async def _stream(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        """Write ``viewer``'s rows as server-sent events until it closes or is dropped.

        A dropped viewer's browser does not read: the write in progress may wait for ever on its
        backed-up connection, holding the viewer's place. So a drop gives the stream
        ``_DROP_GRACE`` seconds to send its ``end``, then cuts the connection.
        """
        response = web.StreamResponse(headers=_STREAM_HEADERS)
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as cutoff:
                viewer.on_drop = lambda: cutoff.reschedule(loop.time() + _DROP_GRACE)
                await _pump(response, viewer)
        except TimeoutError:  # dropped, and its connection still backed up
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            pass  # the browser went away
        finally:
            viewer.on_drop = None
        return response


async def _pump(response: web.StreamResponse, viewer: Viewer) -> None:
    """Write ``viewer``'s rows, and its counters every ``_STATS_EVERY``, then its end."""
    await _event(response, "stats", viewer.statistics())
    while True:
        try:
            async with asyncio.timeout(_STATS_EVERY):
                rows = await viewer.next_rows()
        except TimeoutError:
            await _event(response, "stats", viewer.statistics())
            continue
        if not rows:
            break
        await _event(response, "rows", rows)
    await _event(response, "end", viewer.statistics())


async def _event(response: web.StreamResponse, kind: str, data: Any) -> None:
    await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())


def _count(text: str | None, limit: int | None) -> int | None:
    """``last``: digits 0-9 only (``str.isdigit`` also takes "²", which ``int`` refuses), and
    no longer than the limit's, so ``int`` never sees thousands of digits."""
    if text is None:
        return limit
    if (
        limit is None
        or not (text.isascii() and text.isdigit() and len(text) <= len(str(limit)))
        or int(text) > limit
    ):
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise BadRequestError(f"last must be a number from 0 to {limit}, not {shown!r}")
    return int(text)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("dashboard_task_failed", exc_info=task.exception())


def install_dashboard(
    app: web.Application, status: NodeStatus, address: Address, access: Access | None = None
) -> Dashboard:
    """Add the dashboard to the monitor's ``app`` (the monitor listens on ``address``; ``access``
    is the gate it shares with ``/v1/events``, else its own)."""
    dashboard = Dashboard(status, address, access)
    dashboard.install(app)
    return dashboard
