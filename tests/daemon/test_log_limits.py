"""gravd writes a few lines, not one per attempt, when a flood of handshakes is refused."""

from __future__ import annotations

import logging

from gravpy.daemon.log_limits import RefusalLogLimit


def record(event: str, reason: str = "unknown_key") -> logging.LogRecord:
    rec = logging.LogRecord("gravpy.mesh.hub", logging.INFO, __file__, 1, event, None, None)
    rec.reason = reason
    return rec


def test_refusals_pass_a_burst_per_reason_then_report_how_many_were_dropped() -> None:
    """Five refusals per reason pass, the rest are dropped; after the period the next one
    passes carrying the count; other events and other reasons are untouched."""
    clock = [100.0]
    limit = RefusalLogLimit(burst=5, period=10.0, clock=lambda: clock[0])
    passed = [limit.filter(record("handshake_refused")) for _ in range(50)]
    assert passed.count(True) == 5
    assert limit.filter(record("handshake_rejected", "bad_signature"))
    assert all(limit.filter(record("peer_connected")) for _ in range(50))
    clock[0] += 10.0
    late = record("handshake_refused")
    assert limit.filter(late)
    assert late.suppressed == 45
