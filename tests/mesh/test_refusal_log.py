"""RefusalLog: a flood of refused handshakes writes a few lines per reason, and says how many not."""

from __future__ import annotations

from gravpy.mesh.refusal_log import MAX_WINDOWS, RefusalLog


def test_a_burst_per_event_and_reason_then_the_count_of_those_dropped() -> None:
    """Five lines per (event, reason) pass in a period, the rest are dropped; the first line of
    the next period carries how many were; other reasons have their own window."""
    clock = [100.0]
    limit = RefusalLog(burst=5, period=10.0, clock=lambda: clock[0])
    passed = [limit.admit("handshake_rejected", "bad_signature") for _ in range(50)]
    assert passed[:5] == [{}] * 5
    assert passed[5:] == [None] * 45
    assert limit.admit("handshake_rejected", "unknown_key") == {}
    assert limit.admit("handshake_refused", "bad_signature") == {}
    clock[0] += 10.0
    assert limit.admit("handshake_rejected", "bad_signature") == {"suppressed": 45}
    assert limit.admit("handshake_rejected", "bad_signature") == {}
    assert limit.dropped == 45


def test_reasons_named_by_remotes_cannot_grow_the_windows_without_bound() -> None:
    """Past MAX_WINDOWS live windows a line for a new reason is dropped and counted; once the
    period is over the old windows are forgotten and new reasons are logged again."""
    clock = [0.0]
    limit = RefusalLog(burst=1, period=10.0, clock=lambda: clock[0])
    for i in range(MAX_WINDOWS):
        assert limit.admit("handshake_rejected", f"reason-{i}") == {}
    assert limit.admit("handshake_rejected", "one-too-many") is None
    assert limit.dropped == 1
    clock[0] += 10.0
    assert limit.admit("handshake_rejected", "one-too-many") == {}
