"""gravd's monitoring HTTP server (aiohttp): ``/healthz``, ``/v1/node`` and ``/metrics``.

Everything is computed from the node's own counters when it is asked for: ``NodeStatus`` reads
``Grav.statistics()`` (the bus), ``Grav.peers()`` (every link) and the hub's duplicate count, and
both the JSON document and the Prometheus metrics are views of that one snapshot. The metrics are
served from a ``CollectorRegistry`` of this node's own (never the process-global one), holding
``NodeCollector`` and the process collector, so two nodes in one process never mix.

Counters that belong to a link (``gravd_link_*``) live as long as the link: when a peer
reconnects its counters start again from zero, which Prometheus treats as a counter reset.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

import gravpy
from gravpy.bus import BusStatistics
from gravpy.daemon.config import Address, DaemonConfig
from gravpy.daemon.dashboard import install_dashboard
from gravpy.daemon.events_http import add_event_routes
from gravpy.daemon.events_node import DaemonEvents
from gravpy.grav import Grav
from gravpy.mesh import Hub, PeerInfo
from gravpy.proto import ROLE_LEAF

__all__ = ["METRIC_NAMES", "Monitor", "NodeCollector", "NodeStatus"]

SERVING = "serving"
DRAINING = "draining"

METRIC_NAMES = (
    "gravd_info",
    "gravd_start_time_seconds",
    "gravd_uptime_seconds",
    "gravd_serving",
    "gravd_links",
    "gravd_pods",
    "gravd_pod_receivers",
    "gravd_messages_sent_total",
    "gravd_messages_delivered_total",
    "gravd_messages_dropped_total",
    "gravd_handler_failures_total",
    "gravd_buffered_messages",
    "gravd_unclaimed_replies",
    "gravd_link_messages_received_total",
    "gravd_link_messages_sent_total",
    "gravd_link_messages_dropped_total",
    "gravd_link_queued_messages",
    "gravd_mesh_messages_received_total",
    "gravd_mesh_messages_sent_total",
    "gravd_links_opened_total",
    "gravd_links_closed_total",
    "gravd_publish_denied_total",
    "gravd_gossip_ignored_total",
)
"""Every ``gravd_*`` metric NodeCollector exposes (the process collector adds ``gravd_process_*``)."""


class NodeStatus:
    """What the monitor reports about one running node; ``draining`` flips on shutdown."""

    def __init__(self, grav: Grav, config: DaemonConfig) -> None:
        self.grav = grav
        self.config = config
        self.started_at = time.time()
        self._started = time.monotonic()
        self.state = SERVING
        self.monitor_address = ""
        self.events: DaemonEvents | None = None  # gravd sets it once the event store is open

    @property
    def serving(self) -> bool:
        return self.state == SERVING

    def set_draining(self) -> None:
        self.state = DRAINING

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def links(self) -> list[PeerInfo]:
        return self.grav.peers()

    def snapshot(self) -> dict[str, Any]:
        """The ``/v1/node`` document."""
        grav, stats = self.grav, self.grav.statistics()
        links = self.links()
        peers = [_link_json(p) for p in links if p.role != ROLE_LEAF]
        leaves = [_link_json(p) for p in links if p.role == ROLE_LEAF]
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
            "pods": {
                "count": stats.pods,
                "receivers": stats.receivers,
                "interests": list(grav.bus.interests()),
            },
            "links": _links_totals(hub),
            "messages": {
                "in": hub_stats.messages_in if hub_stats else 0,
                "out": hub_stats.messages_out if hub_stats else 0,
                "sent_by_pods": stats.sent,
                "delivered_to_pods": stats.delivered,
                "buffered": stats.buffered,
                "unclaimed_replies": stats.unclaimed_replies,
                "handler_failures": stats.handler_failures,
                "dropped": {
                    "inbox_overflow": stats.dropped_overflow,
                    "handler_failed": stats.dropped_failed,
                    "pod_closed": stats.dropped_closed,
                    "duplicate": hub.duplicates if hub is not None else 0,
                    "no_route": hub.dropped_no_route if hub is not None else 0,
                    "link": hub_stats.dropped_link if hub_stats else 0,
                },
            },
        }


def _links_totals(hub: Hub | None) -> dict[str, Any]:
    """Links opened and closed since start, and handshakes refused by reason."""
    if hub is None:
        return {"opened": 0, "closed": 0, "rejected": {}}
    s = hub.statistics()
    return {"opened": s.links_opened, "closed": s.links_closed, "rejected": s.handshakes_rejected}


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


class NodeCollector:
    """A Prometheus collector computing every ``gravd_*`` metric from the node at scrape time."""

    def __init__(self, status: NodeStatus) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        stats = self.status.grav.statistics()
        links = self.status.links()
        yield from self._node_metrics(links)
        yield from _message_metrics(stats, self.status.grav)
        yield from _link_metrics(links)

    def _node_metrics(self, links: list[PeerInfo]) -> Iterable[Metric]:
        status, grav = self.status, self.status.grav
        info = GaugeMetricFamily(
            "gravd_info",
            "This node: its uuid, gravpy version and mesh",
            labels=["node", "version", "mesh"],
        )
        info.add_metric([grav.node_uuid, gravpy.__version__, status.config.mesh], 1)
        yield info
        yield _gauge(
            "gravd_start_time_seconds", "When gravd started (Unix time)", status.started_at
        )
        yield _gauge("gravd_uptime_seconds", "Seconds since gravd started", status.uptime())
        yield _gauge("gravd_serving", "1 while serving, 0 while draining", int(status.serving))
        open_links = GaugeMetricFamily("gravd_links", "Open links, by role", labels=["role"])
        for role in ("peer", "leaf"):
            n = sum(1 for p in links if p.role == role and p.state == "open")
            open_links.add_metric([role], n)
        yield open_links


def _message_metrics(stats: BusStatistics, grav: Grav) -> Iterable[Metric]:
    yield _gauge("gravd_pods", "Pods on this node", stats.pods)
    yield _gauge("gravd_pod_receivers", "Pods on this node that receive", stats.receivers)
    yield _counter("gravd_messages_sent", "Messages sent by pods on this node", stats.sent)
    yield _counter("gravd_messages_delivered", "Messages pushed into pod inboxes", stats.delivered)
    dropped = CounterMetricFamily(
        "gravd_messages_dropped", "Messages dropped on this node, by reason", labels=["reason"]
    )
    for reason, value in (
        ("inbox_overflow", stats.dropped_overflow),
        ("handler_failed", stats.dropped_failed),
        ("pod_closed", stats.dropped_closed),
        ("duplicate", grav.hub.duplicates if grav.hub is not None else 0),
        ("no_route", grav.hub.dropped_no_route if grav.hub is not None else 0),
        ("link", grav.hub.statistics().dropped_link if grav.hub is not None else 0),
    ):
        dropped.add_metric([reason], value)
    yield dropped
    totals = grav.hub.statistics() if grav.hub is not None else None
    for name, doc, field in (
        ("gravd_mesh_messages_received", "Messages received from links", "messages_in"),
        ("gravd_mesh_messages_sent", "Messages written to links", "messages_out"),
        ("gravd_links_opened", "Links that completed a handshake", "links_opened"),
        ("gravd_links_closed", "Open links that closed", "links_closed"),
    ):
        yield _counter(name, doc, getattr(totals, field) if totals is not None else 0)
    rejected = CounterMetricFamily(
        "gravd_handshakes_rejected", "Handshakes refused, by reason", labels=["reason"]
    )
    for reason, count in sorted(totals.handshakes_rejected.items() if totals else ()):
        rejected.add_metric([reason], count)
    yield rejected
    violations = CounterMetricFamily(
        "gravd_protocol_violations",
        "Links closed for a protocol violation, by reason",
        labels=["reason"],
    )
    for reason, count in sorted(totals.protocol_violations.items() if totals else ()):
        violations.add_metric([reason], count)
    yield violations
    for name, doc, field in (
        (
            "gravd_publish_denied",
            "Messages a link's identity may not publish, dropped",
            "publish_denied",
        ),
        ("gravd_gossip_ignored", "Gossiped endpoints over the gossip bounds", "gossip_ignored"),
    ):
        yield _counter(name, doc, getattr(totals, field) if totals is not None else 0)
    yield _counter("gravd_handler_failures", "Handler calls that raised", stats.handler_failures)
    yield _gauge("gravd_buffered_messages", "Messages in the replay buffer", stats.buffered)
    yield _gauge(
        "gravd_unclaimed_replies",
        "Replies kept for a wait that has not started",
        stats.unclaimed_replies,
    )


def _link_metrics(links: list[PeerInfo]) -> Iterable[Metric]:
    labels = ["peer", "role"]
    received = CounterMetricFamily(
        "gravd_link_messages_received", "Messages received on a link", labels=labels
    )
    sent = CounterMetricFamily("gravd_link_messages_sent", "Messages sent on a link", labels=labels)
    dropped = CounterMetricFamily(
        "gravd_link_messages_dropped", "Messages dropped from a link's send queue", labels=labels
    )
    queued = GaugeMetricFamily(
        "gravd_link_queued_messages",
        "Messages waiting in a link's send queue",
        labels=labels,
    )
    for p in links:
        key = [p.uuid, p.role]
        received.add_metric(key, p.messages_in)
        sent.add_metric(key, p.messages_out)
        dropped.add_metric(key, p.dropped)
        queued.add_metric(key, p.queued)
    yield from (received, sent, dropped, queued)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class Monitor:
    """The monitoring HTTP server of one node. ``await start()``, then ``await stop()``."""

    def __init__(self, status: NodeStatus, address: Address) -> None:
        self.status = status
        self.address = address
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(status))
        ProcessCollector(namespace="gravd", registry=self.registry)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/v1/node", self._node)
        app.router.add_get("/metrics", self._metrics)
        add_event_routes(app, self.status.events)
        if self.status.config.dashboard:
            install_dashboard(app, self.status, self.address)
        return app

    async def start(self) -> str:
        """Listen; return the bound ``host:port`` (the real port when 0 was asked)."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
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

    async def _healthz(self, request: web.Request) -> web.Response:
        status = self.status
        return web.json_response(
            {"status": status.state, "uuid": status.grav.node_uuid},
            status=200 if status.serving else 503,
        )

    async def _node(self, request: web.Request) -> web.Response:
        return web.json_response(self.status.snapshot())

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
