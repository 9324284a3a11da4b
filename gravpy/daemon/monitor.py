"""gravd's monitoring HTTP server (aiohttp): ``/healthz``, ``/readyz``, ``/v1/node``, ``/metrics``.

Everything is computed from the node's own counters when it is asked for: ``NodeStatus`` reads
``Grav.statistics()`` (the bus), ``Grav.peers()`` (every link) and ``Hub.statistics()``, and both
the JSON document and the Prometheus metrics (``gravpy.daemon.metrics``) are views of them. The
metrics are served from a ``CollectorRegistry`` of this node's own (never the process-global one),
holding ``NodeCollector`` and prometheus-client's standard process, platform and GC collectors.

``/healthz`` is liveness (200 until the node drains); ``/readyz`` is readiness (200 once gravd
has the node listening and discovery started, and until it drains). ``/v1/node`` lists every peer
and a page of the leaves (``?leaves_offset=&leaves_limit=``), oldest first.

The port is guarded as the HTTP transport's listener is (``transports.http.guard``, the same
code): at most ``MAX_CONNECTIONS`` connections are open at once, and one past that is closed as
soon as it is accepted, before anything is read; a connection must send a request's headers
within ``HEADER_TIMEOUT`` of opening (and of its last answer, when kept alive), and a request's
body within ``BODY_TIMEOUT`` (else 408), so sockets that dribble or say nothing cannot hold
gravd's file descriptors. Each refusal and each deadline missed is counted
(``MonitorStatistics``, the ``gravd_monitor_*`` metrics).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

import gravpy
from gravpy.daemon.config import Address, DaemonConfig
from gravpy.daemon.dashboard import install_dashboard
from gravpy.daemon.dashboard.access import Access
from gravpy.daemon.events_http import EventRoutes, add_event_routes
from gravpy.daemon.events_node import DaemonEvents
from gravpy.daemon.metrics import METRIC_NAMES, NodeCollector, by_role, redacted
from gravpy.daemon.replay_store import ReplayStore
from gravpy.grav import Grav
from gravpy.mesh import Hub, PeerInfo
from gravpy.proto import ROLE_LEAF
from transports.http.guard import ConnectionGuard, GuardedRunner, RateLimitFilter

__all__ = [
    "BODY_TIMEOUT",
    "HEADER_TIMEOUT",
    "MAX_CONNECTIONS",
    "METRIC_NAMES",
    "LeafPage",
    "Monitor",
    "MonitorStatistics",
    "NodeCollector",
    "NodeStatus",
]

SERVING = "serving"
DRAINING = "draining"
STARTING = "starting"
DEFAULT_LEAF_PAGE = 100
MAX_LEAF_PAGE = 1000
_MAX_DIGITS = 18  # of a number in a query: past any count of leaves
MAX_CONNECTIONS = 256  # open at once on the monitoring port (streams, scrapes, pages)
HEADER_TIMEOUT = 10.0  # seconds to send a request's headers, as the mesh listeners allow
BODY_TIMEOUT = 10.0  # seconds to send a request's body

_SERVER_LOG = logging.getLogger("gravpy.daemon.monitor.server")
_SERVER_LOG.addFilter(RateLimitFilter())  # a flood of bad requests logs a few lines


@dataclass(frozen=True, slots=True)
class MonitorStatistics:
    """The monitoring port's connections: open now, and closed for a limit since start."""

    connections: int = 0
    connections_refused: int = 0  # closed at once: MAX_CONNECTIONS were open
    connections_timed_out: int = 0  # headers or body not sent within their deadline
    event_streams: int = 0  # /v1/events/stream open now
    event_streams_refused: int = 0  # answered 503: events_http.MAX_STREAMS were open


@dataclass(frozen=True, slots=True)
class LeafPage:
    """Which leaves ``/v1/node`` lists: ``?leaves_offset=N&leaves_limit=M`` (oldest first)."""

    offset: int = 0
    limit: int = DEFAULT_LEAF_PAGE

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> LeafPage:
        unknown = sorted(set(query) - {"leaves_offset", "leaves_limit"})
        if unknown:  # (a misspelt one would silently show another page)
            shown = ", ".join(repr(name[:40]) for name in unknown[:4])
            raise ValueError(
                f"unknown parameter {shown}: /v1/node takes leaves_offset, leaves_limit"
            )
        offset = _whole(query.get("leaves_offset", "0"), "leaves_offset")
        limit = _whole(query.get("leaves_limit", str(DEFAULT_LEAF_PAGE)), "leaves_limit")
        if not 1 <= limit <= MAX_LEAF_PAGE:
            raise ValueError(f"leaves_limit must be from 1 to {MAX_LEAF_PAGE}")
        return cls(offset, limit)


def _whole(text: str, name: str) -> int:
    """``text`` as a whole number: digits 0-9 only (``str.isdigit`` also takes "²", which
    ``int`` refuses), at most ``_MAX_DIGITS`` of them (``int`` refuses past 4,300)."""
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS):
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise ValueError(
            f"{name} must be a whole number of at most {_MAX_DIGITS} digits, not {shown!r}"
        )
    return int(text)


class NodeStatus:
    """What the monitor reports about one running node; ``draining`` flips on shutdown."""

    def __init__(self, grav: Grav, config: DaemonConfig) -> None:
        self.grav = grav
        self.config = config
        self.started_at = time.time()
        self._started = time.monotonic()
        self.state = SERVING
        self.ready = False  # set once the node listens and its discovery runs
        self.monitor_address = ""
        self.events: DaemonEvents | None = None  # gravd sets it once the event store is open
        self.replay: ReplayStore | None = None  # gravd sets it when the buffer is durable
        self.monitor: Monitor | None = None  # the monitor serving this status, once made

    @property
    def serving(self) -> bool:
        return self.state == SERVING

    def set_draining(self) -> None:
        self.state = DRAINING

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def monitor_statistics(self) -> MonitorStatistics:
        """The monitoring port's counters (all zero without a monitor)."""
        return self.monitor.statistics() if self.monitor is not None else MonitorStatistics()

    def links(self) -> list[PeerInfo]:
        return self.grav.peers()

    def snapshot(self, page: LeafPage | None = None) -> dict[str, Any]:
        """The ``/v1/node`` document (the first page of leaves unless ``page`` says otherwise)."""
        grav, stats = self.grav, self.grav.statistics()
        page = page or LeafPage()
        links = self.links()
        peers = [_link_json(p) for p in links if p.role != ROLE_LEAF]
        all_leaves = sorted(
            (p for p in links if p.role == ROLE_LEAF), key=lambda p: p.connected_since or 0.0
        )
        leaves = [_link_json(p) for p in all_leaves[page.offset : page.offset + page.limit]]
        hub = grav.hub
        hub_stats = hub.statistics() if hub is not None else None
        return {
            "uuid": grav.node_uuid,
            "version": gravpy.__version__,
            "state": self.state,
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
            "uptime_seconds": round(self.uptime(), 3),
            "mesh": self.config.mesh,
            "keyed": self.config.mesh_key is not None,
            "discovery": self.config.discovery,
            "listen": {
                "address": str(self.config.listen),
                "http_address": str(http) if (http := self.config.listen_http) else None,
                "endpoints": grav.endpoints(),
            },
            "monitor": self.monitor_address,
            "peers": peers,
            "leaves": leaves,
            "leaves_page": {"offset": page.offset, "limit": page.limit, "total": len(all_leaves)},
            "pods": {
                "count": stats.pods,
                "receivers": stats.receivers,
                "interests": list(grav.bus.interests()),
            },
            "links": _links_totals(hub),
            "bridges": [redacted(b.statistics()).as_json() for b in grav.bridges],
            "messages": {
                "in": hub_stats.messages_in if hub_stats else 0,
                "out": hub_stats.messages_out if hub_stats else 0,
                "by_role": {role: t.as_json() for role, t in by_role(hub_stats).items()},
                "sent_by_pods": stats.sent,
                "undelivered_from_pods": stats.undelivered,
                "delivered_to_pods": stats.delivered,
                "buffered": stats.buffered,
                "unclaimed_replies": stats.unclaimed_replies,
                "handler_failures": stats.handler_failures,
                "dropped": {
                    "inbox_overflow": stats.dropped_overflow,
                    "handler_failed": stats.dropped_failed,
                    "pod_closed": stats.dropped_closed,
                    "duplicate": hub_stats.dropped_duplicate if hub_stats else 0,
                    "no_route": hub_stats.dropped_no_route if hub_stats else 0,
                    "link": hub_stats.dropped_link if hub_stats else 0,
                    "no_member": stats.group_misses
                    + (hub_stats.dropped_no_member if hub_stats else 0),
                },
                "lost_by_origin": dict(hub_stats.lost_by_origin) if hub_stats else {},
                "resent": hub_stats.resent if hub_stats else 0,
            },
            "replay_store": (
                dataclasses.asdict(self.replay.statistics()) if self.replay is not None else None
            ),
        }


def _links_totals(hub: Hub | None) -> dict[str, Any]:
    """Links opened and closed since start, handshakes refused by reason, and links moved to a
    faster transport by outcome."""
    if hub is None:
        return {"opened": 0, "closed": 0, "rejected": {}, "moved": {}}
    s = hub.statistics()
    return {
        "opened": s.links_opened,
        "closed": s.links_closed,
        "rejected": s.handshakes_rejected,
        "moved": s.link_moves,
    }


def _link_json(info: PeerInfo) -> dict[str, Any]:
    return {
        "uuid": info.uuid,
        "role": info.role,
        "state": info.state,
        "endpoint": info.endpoint,
        "transport": info.transport,
        "remote_address": info.remote_address,
        "initiator": info.initiator,
        "withdrawn": info.withdrawn,
        "messages_in": info.messages_in,
        "messages_out": info.messages_out,
        "dropped": info.dropped,
        "drops": info.drops.as_dict(),  # by reason (gravpy.mesh.link_stats)
        "name": info.name,  # the app's name in its HELLO (leaves), "" if none
        "bytes_in": info.bytes_in,
        "bytes_out": info.bytes_out,
        "queued": info.queued,
        "interests": list(info.interests),
        "groups": [list(entry) for entry in info.groups],  # [group, pattern, members]
        "rtt_seconds": info.rtt,
        "connected_since": (
            datetime.fromtimestamp(info.connected_since, UTC).isoformat()
            if info.connected_since is not None
            else None
        ),
    }


class Monitor:
    """The monitoring HTTP server of one node. ``await start()``, then ``await stop()``.

    ``max_connections``, ``header_timeout`` and ``body_timeout`` are its limits (see the module
    docstring); the defaults are what gravd runs with.
    """

    def __init__(
        self,
        status: NodeStatus,
        address: Address,
        *,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.status = status
        self.address = address
        self.guard = ConnectionGuard(max_connections, header_timeout)
        self.body_timeout = body_timeout
        self.bodies_timed_out = 0
        self.event_routes: EventRoutes | None = None
        status.monitor = self
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(status))
        ProcessCollector(registry=self.registry)  # the standard process_* metrics
        PlatformCollector(registry=self.registry)  # python_info
        GCCollector(registry=self.registry)  # python_gc_*
        self._runner: web.AppRunner | None = None

    def statistics(self) -> MonitorStatistics:
        guard, events = self.guard, self.event_routes
        return MonitorStatistics(
            connections=guard.open,
            connections_refused=guard.refused,
            connections_timed_out=guard.timed_out + self.bodies_timed_out,
            event_streams=events.streams if events is not None else 0,
            event_streams_refused=events.streams_refused if events is not None else 0,
        )

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard.middleware, self._body_deadline])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/v1/node", self._node)
        app.router.add_get("/metrics", self._metrics)
        # events carry what apps report: behind the dashboard's token beyond loopback
        access = Access.for_monitor(self.address, self.status.config.dashboard_token_file)
        self.event_routes = add_event_routes(app, self.status.events, access.guard)
        if self.status.config.dashboard:
            install_dashboard(app, self.status, self.address, access)
        return app

    async def start(self) -> str:
        """Listen; return the bound ``host:port`` (the real port when 0 was asked)."""
        runner = GuardedRunner(
            self.app(),
            self.guard,
            logger=_SERVER_LOG,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,  # a stream whose client went ends now, with its pod
            lingering_time=0.0,  # a body refused unread (408, 413) closes: no 10 s of draining
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.address.host, self.address.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        bound = str(Address(str(host), int(port)))
        self.status.monitor_address = bound
        return bound

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @web.middleware
    async def _body_deadline(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Read a request's body within ``body_timeout`` before its handler runs, else 408."""
        if request.body_exists:
            try:
                async with asyncio.timeout(self.body_timeout):
                    await request.read()  # kept by the request for the handler
            except TimeoutError:
                self.bodies_timed_out += 1
                answer = web.json_response(
                    {"error": f"the body was not received within {self.body_timeout:g} s"},
                    status=408,
                )
                answer.force_close()
                return answer
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        status = self.status
        return web.json_response(
            {"status": status.state, "uuid": status.grav.node_uuid, "pid": os.getpid()},
            status=200 if status.serving else 503,
        )

    async def _readyz(self, request: web.Request) -> web.Response:
        """200 once the node listens and discovery runs, until it drains; else 503."""
        status = self.status
        ready = status.ready and status.serving
        state = status.state if status.ready else STARTING
        return web.json_response(
            {"status": "ready" if ready else state, "uuid": status.grav.node_uuid},
            status=200 if ready else 503,
        )

    async def _node(self, request: web.Request) -> web.Response:
        try:
            page = LeafPage.from_query(request.query)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.status.snapshot(page))

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
