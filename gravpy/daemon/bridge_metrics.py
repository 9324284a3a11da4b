"""The ``gravd_bridge_*`` metrics: each bridge's state, traffic and losses, at scrape time.

``gravd_bridge_state{server,state}`` is 1 for the state the bridge is in (idle, connecting,
connected, reconnecting, closing, closed) and 0 for the others, so an alert can watch
``gravd_bridge_state{state="connected"} == 0``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gravpy.bridge.config import NatsBridgeStatistics

__all__ = ["BRIDGE_STATES", "bridge_metrics"]

BRIDGE_STATES = ("idle", "connecting", "connected", "reconnecting", "closing", "closed")


def bridge_metrics(bridges: list[NatsBridgeStatistics]) -> Iterable[Metric]:
    """Metrics for each bridge, labelled by its first server URL."""
    if not bridges:
        return
    state = GaugeMetricFamily(
        "gravd_bridge_state", "1 for the state each bridge is in", labels=["server", "state"]
    )
    messages = CounterMetricFamily(
        "gravd_bridge_messages",
        "Messages carried by a bridge, by direction (out: to NATS, in: into the mesh)",
        labels=["server", "direction"],
    )
    lost = CounterMetricFamily(
        "gravd_bridge_lost",
        "Messages that could not cross a bridge, by reason",
        labels=["server", "reason"],
    )
    failures = CounterMetricFamily(
        "gravd_bridge_connect_failures",
        "Connection attempts to NATS that failed (unreachable, TLS, authentication)",
        labels=["server"],
    )
    exporter = GaugeMetricFamily(
        "gravd_bridge_exporter", "1 if this node publishes its mesh's messages", labels=["server"]
    )
    shadow = CounterMetricFamily(
        "gravd_bridge_shadow",
        "Messages a standby bridge held for a takeover, by outcome (struck: the active bridge "
        "delivered them; recovered: delivered on taking over; expired: never seen delivered)",
        labels=["server", "outcome"],
    )
    held = GaugeMetricFamily(
        "gravd_bridge_held", "Messages a standby bridge holds now", labels=["server"]
    )
    covered = CounterMetricFamily(
        "gravd_bridge_standby_exported",
        "Messages a standby bridge exported because its mesh's active bridge could not take "
        "them (not linked to this node, or not admitting the type)",
        labels=["server"],
    )
    expired = CounterMetricFamily(
        "gravd_bridge_remote_expired",
        "Other bridges forgotten for falling silent past the ttl (gone, or this node too busy "
        "to hear them); what their meshes wanted was not exported meanwhile",
        labels=["server"],
    )
    errors = CounterMetricFamily(
        "gravd_bridge_errors",
        "Connections the bridge ended on an unexpected error (logged as bridge_failed); it "
        "reconnects, counting what was queued as lost (disconnected)",
        labels=["server"],
    )
    export_shadow = CounterMetricFamily(
        "gravd_bridge_export_shadow",
        "Messages a standby bridge held for export until NATS echoed them, by outcome "
        "(recovered: it published them, the active bridge having died or left its reach; "
        "expired: never echoed within the shadow's age)",
        labels=["server", "outcome"],
    )
    export_held = GaugeMetricFamily(
        "gravd_bridge_export_held",
        "Messages a standby bridge holds for export now, until NATS echoes them",
        labels=["server"],
    )
    for s in bridges:
        server = s.servers[0]
        for name in BRIDGE_STATES:
            state.add_metric([server, name], int(s.state == name))
        messages.add_metric([server, "out"], s.exported)
        messages.add_metric([server, "in"], s.imported)
        for reason, n in sorted(s.lost.items()):
            lost.add_metric([server, reason], n)
        exporter.add_metric([server], int(s.exporter))
        failures.add_metric([server], s.failed_connects)
        for outcome, n in (
            ("struck", s.struck),
            ("recovered", s.recovered),
            ("expired", s.shadow_expired),
        ):
            shadow.add_metric([server, outcome], n)
        held.add_metric([server], s.held)
        covered.add_metric([server], s.standby_exported)
        expired.add_metric([server], s.remote_expired)
        errors.add_metric([server], s.errors)
        export_shadow.add_metric([server, "recovered"], s.export_recovered)
        export_shadow.add_metric([server, "expired"], s.export_expired)
        export_held.add_metric([server], s.export_held)
    yield from (state, messages, lost, exporter, failures, shadow, held, covered, expired, errors)
    yield from (export_shadow, export_held)
