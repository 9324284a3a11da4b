"""The bridge's outbox: bounded, pushes back past its high-water mark, counts what it drops."""

from __future__ import annotations

from gravpy.bridge.outbox import Outbox


class Recorder:
    """Records the congestion calls an outbox makes."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def bridge_congested(self, sink: object, congested: bool) -> None:
        self.calls.append(congested)


def test_past_high_water_the_outbox_pushes_back_and_when_full_drops_the_newest() -> None:
    """Past high water the outbox says it is congested once; past its limit it refuses and counts."""
    outbox = Outbox(limit=4, high_water=2)
    recorder = Recorder()
    outbox.backpressure = recorder
    results = [outbox.put(("s", "", b"x", "meta", "")) for _ in range(6)]
    assert results == [True, True, True, True, False, False]
    assert recorder.calls == [True]
    assert outbox.lost == {"queue_full": 2}
    assert len(outbox) == 4


def test_dropping_everything_counts_it_and_releases_the_publishers() -> None:
    """What is still queued when a connection ends is counted lost and the push-back ends."""
    outbox = Outbox(limit=10, high_water=1)
    recorder = Recorder()
    outbox.backpressure = recorder
    for _ in range(3):
        outbox.put(("s", "", b"x", "meta", ""))
    outbox.drop_all("disconnected")
    assert outbox.lost == {"disconnected": 3}
    assert len(outbox) == 0
    assert recorder.calls == [True, False]
