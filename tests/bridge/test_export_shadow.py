"""``ExportShadow``: what a standby holds for export until NATS echoes it. Pure: times passed in."""

from __future__ import annotations

from gravpy.bridge.export_shadow import ExportShadow
from gravpy.message import Message


def msgs(n: int) -> list[Message]:
    return [Message.new("stream.n", str(i)) for i in range(n)]


def test_what_was_echoed_is_forgotten_and_the_rest_is_taken_oldest_first() -> None:
    shadow = ExportShadow(limit=100, max_age=7.0)
    sent = msgs(5)
    for i, m in enumerate(sent):
        shadow.hold(m, float(i))
    shadow.heard(sent[0].uuid)
    shadow.heard(sent[2].uuid)
    assert (len(shadow), shadow.struck) == (3, 2)
    assert shadow.take(4.0) == [sent[1], sent[3], sent[4]]
    assert len(shadow) == 0
    assert shadow.take(4.0) == []


def test_an_echo_heard_before_the_message_arrives_forgets_it_on_arrival() -> None:
    shadow = ExportShadow(limit=100, max_age=7.0)
    early, late = msgs(2)
    shadow.heard(early.uuid)
    shadow.hold(early, 0.0)
    shadow.hold(late, 0.0)
    assert shadow.take(1.0) == [late]
    assert shadow.struck == 1


def test_past_the_limit_the_oldest_is_dropped_and_counted() -> None:
    shadow = ExportShadow(limit=3, max_age=7.0)
    sent = msgs(5)
    for m in sent:
        shadow.hold(m, 0.0)
    assert shadow.overflow == 2
    assert shadow.take(0.0) == sent[2:]


def test_what_no_echo_confirmed_within_max_age_expires_counted() -> None:
    shadow = ExportShadow(limit=100, max_age=7.0)
    old, new = msgs(2)
    shadow.hold(old, 0.0)
    shadow.hold(new, 5.0)
    shadow.expire(7.5)
    assert (len(shadow), shadow.expired) == (1, 1)
    assert shadow.take(8.0) == [new]
