"""gravd's Prometheus metrics: what the node routes, computed from its counters at scrape time.

Theory of operation
-------------------
``NodeCollector`` reads one snapshot per scrape (``Grav.statistics()`` for the pods on this node,
``Hub.statistics()`` for every link since start, ``Grav.peers()`` for the open ones) and yields
every ``gravd_*`` family in ``METRIC_NAMES``. Three kinds of traffic are told apart:

- *local*: what pods on this node send and receive (``gravd_local_*``; in gravd that is only its
  ``gravd.info`` responder, so these stay small while traffic passes through);
- *links*: messages and bytes the node received from and wrote to other nodes and attached
  apps, and what links dropped by reason (``gravd_link_*{role="peer"|"leaf"}``), which is where
  a relay's traffic shows;
- *mesh* totals over all links (``gravd_mesh_*``).

Every link counter is exact and only ever grows: the hub keeps, per role, what closed links
carried (``HubStatistics.by_role``, ``gravpy.mesh.link_stats``), so a leaf that disconnects takes
nothing away. Leaves are never labelled by uuid (short-lived ``gravctl`` calls would churn
series): they are summed per role, and the JSON document keeps the per-link detail (app name,
bytes, drops by reason). Per-peer series (``gravd_peer_*{peer}``) exist for peers only, which are
few and long-lived. The histograms ``gravd_local_request_seconds`` and
``gravd_local_handler_seconds`` are what gravd's own pods did (``gravpy.timings``);
``gravd_relayed_request_seconds`` is what the node saw of its leaves' requests: from a leaf's wait
notice to the first reply it routed back to that leaf (``Router.relayed``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

import gravpy
from gravpy.bridge.config import shown_url
from gravpy.daemon.bridge_metrics import bridge_metrics
from gravpy.mesh.link_stats import DROP_REASONS, RoleTraffic
from gravpy.proto import ROLE_LEAF, ROLE_PEER
from gravpy.timings import LatencyHistogram, Timings

if TYPE_CHECKING:
    from gravpy.bridge.config import NatsBridgeStatistics
    from gravpy.bus import BusStatistics
    from gravpy.daemon.monitor import MonitorStatistics, NodeStatus
    from gravpy.daemon.replay_store import ReplayStore
    from gravpy.mesh import HubStatistics, PeerInfo
    from gravpy.timings import HistogramSnapshot

__all__ = [
    "METRIC_NAMES",
    "NodeCollector",
    "by_role",
    "redacted",
]

METRIC_NAMES = (
    "gravd_info",
    "gravd_start_time_seconds",
    "gravd_uptime_seconds",
    "gravd_serving",
    "gravd_ready",
    "gravd_links",
    "gravd_local_pods",
    "gravd_local_pod_receivers",
    "gravd_local_messages_sent_total",
    "gravd_local_messages_delivered_total",
    "gravd_local_messages_undelivered_total",
    "gravd_messages_dropped_total",
    "gravd_handler_failures_total",
    "gravd_buffered_messages",
    "gravd_unclaimed_replies",
    "gravd_link_messages_received_total",
    "gravd_link_messages_sent_total",
    "gravd_link_messages_dropped_total",
    "gravd_link_bytes_received_total",
    "gravd_link_bytes_sent_total",
    "gravd_link_queued_messages",
    "gravd_peer_rtt_seconds",
    "gravd_peer_messages_dropped_total",
    "gravd_mesh_messages_received_total",
    "gravd_mesh_messages_sent_total",
    "gravd_links_opened_total",
    "gravd_links_closed_total",
    "gravd_connections_refused_total",
    "gravd_connections_timed_out_total",
    "gravd_tls_handshakes_failed_total",
    "gravd_protocol_violations_total",
    "gravd_publish_denied_total",
    "gravd_gossip_ignored_total",
    "gravd_handshakes_rejected_total",
    "gravd_link_moves_total",
    "gravd_messages_lost_total",
    "gravd_messages_resent_total",
    "gravd_local_request_seconds",
    "gravd_local_handler_seconds",
    "gravd_relayed_request_seconds",
    "gravd_monitor_connections",
    "gravd_monitor_connections_refused_total",
    "gravd_monitor_connections_timed_out_total",
    "gravd_event_streams",
    "gravd_event_streams_refused_total",
    "gravd_replay_write_failures_total",
    "gravd_replay_unwritten_messages_total",
)
"""Every ``gravd_*`` metric NodeCollector exposes (prometheus-client adds ``process_*``)."""


def redacted(stats: NatsBridgeStatistics) -> NatsBridgeStatistics:
    """``stats`` with the credentials of its NATS URLs (``nats://user:password@host``,
    ``nats://token@host``) shown as ``***``, in ``servers`` and in ``last_error``.

    A bridge's servers label its ``gravd_bridge_*`` series and appear in ``/v1/node``, which
    the dashboard shows and gravd's ``gravd.info`` responder sends to any app on the mesh.
    """
    secrets = {u.netloc.rpartition("@")[0] for u in map(urlsplit, stats.servers)} - {""}
    if not secrets:
        return stats
    servers = tuple(shown_url(url) for url in stats.servers)
    error = stats.last_error
    for secret in sorted(secrets, key=len, reverse=True):
        error = error.replace(secret + "@", "***@")
    return dataclasses.replace(stats, servers=servers, last_error=error)


def by_role(hub: HubStatistics | None) -> dict[str, RoleTraffic]:
    """The hub's exact link totals by role, ``peer`` and ``leaf`` always present."""
    totals = {ROLE_PEER: RoleTraffic(), ROLE_LEAF: RoleTraffic()}
    if hub is not None:
        totals.update(hub.by_role)
    return totals


class NodeCollector:
    """A Prometheus collector computing every ``gravd_*`` metric from the node at scrape time."""

    def __init__(self, status: NodeStatus) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        grav = self.status.grav
        links = self.status.links()
        hub = grav.hub.statistics() if grav.hub is not None else None
        yield from self._node_metrics(links)
        yield from _local_metrics(grav.statistics())
        yield from _drop_metrics(grav.statistics(), hub)
        yield from _link_metrics(links, by_role(hub))
        yield from _peer_metrics(links)
        yield from _mesh_metrics(hub)
        yield from bridge_metrics([redacted(b.statistics()) for b in grav.bridges])
        yield from _timing_metrics(grav.timings)
        relayed = grav.hub.router.relayed.histogram if grav.hub is not None else None
        yield _histogram(
            "gravd_relayed_request_seconds",
            "From a leaf's wait on a request to the first reply this node routed back to it",
            (relayed or LatencyHistogram()).snapshot(),
        )
        yield from _monitor_metrics(self.status.monitor_statistics())
        yield from _replay_metrics(self.status.replay)

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
        yield _gauge("gravd_ready", "1 once listening with discovery started", int(status.ready))
        open_links = GaugeMetricFamily("gravd_links", "Open links, by role", labels=["role"])
        for role in (ROLE_PEER, ROLE_LEAF):
            open_links.add_metric([role], sum(p.role == role and p.state == "open" for p in links))
        yield open_links


def _local_metrics(stats: BusStatistics) -> Iterable[Metric]:
    yield _gauge("gravd_local_pods", "Pods on this node (gravd's own, not apps')", stats.pods)
    yield _gauge("gravd_local_pod_receivers", "Pods on this node that receive", stats.receivers)
    yield _counter("gravd_local_messages_sent", "Messages sent by pods on this node", stats.sent)
    yield _counter(
        "gravd_local_messages_undelivered",
        "Messages pods on this node sent that no pod or link took (no receiver anywhere)",
        stats.undelivered,
    )
    yield _counter(
        "gravd_local_messages_delivered", "Messages delivered to pods on this node", stats.delivered
    )
    yield _counter("gravd_handler_failures", "Handler calls that raised", stats.handler_failures)
    yield _gauge("gravd_buffered_messages", "Messages in the replay buffer", stats.buffered)
    yield _gauge(
        "gravd_unclaimed_replies",
        "Replies kept for a wait that has not started",
        stats.unclaimed_replies,
    )


def _drop_metrics(stats: BusStatistics, hub: HubStatistics | None) -> Iterable[Metric]:
    dropped = CounterMetricFamily(
        "gravd_messages_dropped", "Messages dropped on this node, by reason", labels=["reason"]
    )
    for reason, value in (
        ("inbox_overflow", stats.dropped_overflow),
        ("handler_failed", stats.dropped_failed),
        ("pod_closed", stats.dropped_closed),
        ("duplicate", hub.dropped_duplicate if hub else 0),
        ("no_route", hub.dropped_no_route if hub else 0),
        ("link", hub.dropped_link if hub else 0),
        ("no_member", stats.group_misses + (hub.dropped_no_member if hub else 0)),
    ):
        dropped.add_metric([reason], value)
    yield dropped


_ROLE_COUNTERS = (
    (
        "gravd_link_messages_received",
        "Messages this node received from links, by the role of the link (peer: another "
        "node; leaf: an attached app)",
        "messages_in",
    ),
    ("gravd_link_messages_sent", "Messages this node wrote to links, by role", "messages_out"),
    ("gravd_link_bytes_received", "Bytes of frames received from links, by role", "bytes_in"),
    ("gravd_link_bytes_sent", "Bytes of frames written to links, by role", "bytes_out"),
)


def _link_metrics(links: list[PeerInfo], totals: dict[str, RoleTraffic]) -> Iterable[Metric]:
    for name, doc, field in _ROLE_COUNTERS:
        counter = CounterMetricFamily(name, doc, labels=["role"])
        for role, traffic in totals.items():
            counter.add_metric([role], getattr(traffic, field))
        yield counter
    dropped = CounterMetricFamily(
        "gravd_link_messages_dropped",
        "Messages a link lost, by role and reason (queue_full, queue_bytes, link_closed, "
        "remote_withdrew, too_large: could not be sent; permission_denied: arrived, not allowed; "
        "arrived_closed: arrived after the link was closed here)",
        labels=["role", "reason"],
    )
    queued = GaugeMetricFamily(
        "gravd_link_queued_messages", "Messages waiting in the links' send queues", labels=["role"]
    )
    for role, traffic in totals.items():
        for reason, count in zip(DROP_REASONS, traffic.drops.as_dict().values(), strict=True):
            dropped.add_metric([role, reason], count)
        queued.add_metric([role], sum(p.queued for p in links if p.role == role))
    yield from (dropped, queued)


def _timing_metrics(timings: Timings | None) -> Iterable[Metric]:
    """The node's histograms; all zero on a node that keeps none (gravd always keeps them)."""
    stats = (timings or Timings()).statistics()
    yield _histogram(
        "gravd_local_request_seconds",
        "From a send by one of gravd's own pods to the first reply its wait returned",
        stats.requests,
    )
    yield _histogram(
        "gravd_local_handler_seconds", "Handler calls of gravd's own pods", stats.handlers
    )


def _histogram(name: str, doc: str, snapshot: HistogramSnapshot) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=snapshot.cumulative(), sum_value=snapshot.sum)


def _peer_metrics(links: list[PeerInfo]) -> Iterable[Metric]:
    rtt = GaugeMetricFamily(
        "gravd_peer_rtt_seconds", "The last ping round trip to a peer", labels=["peer"]
    )
    dropped = CounterMetricFamily(
        "gravd_peer_messages_dropped",
        "Messages that could not be sent to a peer, since its link opened",
        labels=["peer"],
    )
    for p in links:
        if p.role != ROLE_PEER:
            continue
        if p.rtt is not None:
            rtt.add_metric([p.uuid], p.rtt)
        dropped.add_metric([p.uuid], p.dropped)
    yield from (rtt, dropped)


def _mesh_metrics(hub: HubStatistics | None) -> Iterable[Metric]:
    for name, doc, value in (
        ("gravd_mesh_messages_received", "Messages received from all links", "messages_in"),
        ("gravd_mesh_messages_sent", "Messages written to all links", "messages_out"),
        ("gravd_links_opened", "Links that completed a handshake", "links_opened"),
        ("gravd_links_closed", "Open links that closed", "links_closed"),
        (
            "gravd_connections_refused",
            "Connections closed at once: --max-connections were open",
            "connections_refused",
        ),
        (
            "gravd_connections_timed_out",
            "Connections dropped because their transport's handshake (the TCP greeting, the "
            "WebSocket upgrade, an HTTP request) did not come within its deadline",
            "connections_timed_out",
        ),
        (
            "gravd_tls_handshakes_failed",
            "TLS handshakes on this node's listeners that failed or timed out",
            "tls_handshakes_failed",
        ),
    ):
        yield _counter(name, doc, getattr(hub, value) if hub is not None else 0)
    for name, doc, label, counts in (
        (
            "gravd_handshakes_rejected",
            "Handshakes refused, by reason (a code the remote sent that this version does not "
            "know: other)",
            "reason",
            hub.handshakes_rejected if hub is not None else {},
        ),
        (
            "gravd_protocol_violations",
            "Links closed for a protocol violation, by reason",
            "reason",
            hub.protocol_violations if hub is not None else {},
        ),
        (
            "gravd_link_moves",
            "Links moved to a faster transport, by outcome (moved, failed, refused)",
            "outcome",
            hub.link_moves if hub is not None else {},
        ),
    ):
        yield _labelled(name, doc, label, counts)
    for name, doc, counted in (
        (
            "gravd_publish_denied",
            "Messages a link's identity may not publish, dropped",
            "publish_denied",
        ),
        ("gravd_gossip_ignored", "Gossiped endpoints over the gossip bounds", "gossip_ignored"),
    ):
        yield _counter(name, doc, getattr(hub, counted) if hub is not None else 0)
    lost = CounterMetricFamily(
        "gravd_messages_lost",
        "Messages missed across a link flap that fell out of their origin's buffer, by origin",
        labels=["origin"],
    )
    for origin, count in sorted(hub.lost_by_origin.items() if hub else ()):
        lost.add_metric([origin], count)
    yield lost
    yield _counter(
        "gravd_messages_resent",
        "Messages resent to peers that missed them across a link flap",
        hub.resent if hub is not None else 0,
    )


def _monitor_metrics(stats: MonitorStatistics) -> Iterable[Metric]:
    """The monitoring port's own connections (``gravpy.daemon.monitor``)."""
    yield _gauge(
        "gravd_monitor_connections", "Connections open on the monitoring port", stats.connections
    )
    yield _counter(
        "gravd_monitor_connections_refused",
        "Connections to the monitoring port closed at once: its cap were open",
        stats.connections_refused,
    )
    yield _counter(
        "gravd_monitor_connections_timed_out",
        "Connections to the monitoring port closed for not sending a request's headers or body "
        "in time",
        stats.connections_timed_out,
    )
    yield _gauge("gravd_event_streams", "/v1/events/stream streams open", stats.event_streams)
    yield _counter(
        "gravd_event_streams_refused",
        "/v1/events/stream requests answered 503: the most streams were open",
        stats.event_streams_refused,
    )


def _replay_metrics(store: ReplayStore | None) -> Iterable[Metric]:
    """The durable replay buffer's writes (``gravpy.daemon.replay_store``); 0 when not durable."""
    stats = store.statistics() if store is not None else None
    yield _counter(
        "gravd_replay_write_failures",
        "Writes of the replay buffer to replay.sqlite3 that failed (each retried with the next)",
        stats.write_failures if stats is not None else 0,
    )
    yield _counter(
        "gravd_replay_unwritten_messages",
        "Messages the replay buffer held that never reached replay.sqlite3 (writes kept failing)",
        stats.unwritten if stats is not None else 0,
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family
