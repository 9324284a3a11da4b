"""Tests for gravpy.buffer: the bounded ring of recent messages."""

from __future__ import annotations

import math

import pytest

from gravpy.buffer import MsgBuffer
from gravpy.errors import UsageError
from gravpy.message import Message


def _msgs(n: int) -> list[Message]:
    return [Message.new("t", str(i)) for i in range(n)]


def test_push_iter_len_keep_order() -> None:
    """Pushed messages iterate oldest to newest and len counts them."""
    buf = MsgBuffer(4)
    msgs = _msgs(3)
    for m in msgs:
        buf.push(m)
    assert len(buf) == 3
    assert list(buf) == msgs
    assert buf.evicted == 0


def test_oldest_is_evicted_first_and_counted() -> None:
    """Past the limit the oldest messages go first, and evicted counts each one."""
    buf = MsgBuffer(3)
    msgs = _msgs(10)
    for m in msgs:
        buf.push(m)
    assert list(buf) == msgs[-3:]
    assert len(buf) == 3
    assert buf.evicted == 7
    assert buf.size_bytes == 3  # ("7", "8", "9": the data held, with no byte bound too)


def test_default_limit_is_grav_128() -> None:
    """The default size is Grav's 128."""
    buf = MsgBuffer()
    for m in _msgs(200):
        buf.push(m)
    assert buf.limit == 128
    assert len(buf) == 128
    assert buf.evicted == 72


def test_entries_keep_origins() -> None:
    """entries() pairs each message with the origin it was pushed with, oldest first."""
    buf = MsgBuffer(2)
    a, b, c = _msgs(3)
    buf.push(a, "p1")
    buf.push(b)
    buf.push(c, "p2")
    assert buf.entries() == [(b, None), (c, "p2")]


def test_iteration_is_a_snapshot() -> None:
    """Pushing while iterating neither fails nor changes what the iteration yields."""
    buf = MsgBuffer(2)
    first = _msgs(2)
    for m in first:
        buf.push(m)
    seen = []
    for m in buf:
        seen.append(m)
        buf.push(Message.new())
    assert seen == first


def test_limit_zero_keeps_nothing() -> None:
    """A buffer of size 0 stores nothing (replay disabled) and reports no eviction."""
    buf = MsgBuffer(0)
    for m in _msgs(5):
        buf.push(m)
    assert len(buf) == 0
    assert list(buf) == []
    assert buf.evicted == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "8", None])
def test_invalid_limits_are_refused(bad: object) -> None:
    """The limit must be an int >= 0."""
    with pytest.raises(UsageError):
        MsgBuffer(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"limit": True},
        {"max_bytes": True},
        {"max_bytes": -1},
        {"max_bytes": "8"},
        {"max_age": "1"},
        {"max_age": None},
        {"max_age": True},
        {"max_age": -1.0},
        {"max_age": math.nan},
    ],
)
def test_invalid_bounds_are_refused_with_usage_error(bad: dict[str, object]) -> None:
    """A bool where a count belongs, or a max_age that is not a number >= 0, is a UsageError
    (never a TypeError from comparing it)."""
    with pytest.raises(UsageError):
        MsgBuffer(**bad)  # type: ignore[arg-type]


def test_repr_shows_limit_and_length() -> None:
    """repr() shows the limit and how many messages are held."""
    buf = MsgBuffer(5)
    buf.push(Message.new())
    assert repr(buf) == "MsgBuffer(limit=5, len=1)"


def test_buffer_bounded_by_bytes_evicts_the_oldest_and_counts_them() -> None:
    """Past max_bytes of data the oldest entries leave, counted, until the rest fits."""
    buf = MsgBuffer(100, max_bytes=10)
    msgs = [Message.new("a.b", bytes(4)) for _ in range(4)]
    for msg in msgs:
        buf.push(msg)
    assert list(buf) == msgs[2:]
    assert buf.size_bytes == 8
    assert buf.evicted == 2


def test_buffer_bounded_by_age_evicts_what_is_older_than_max_age() -> None:
    """Entries pushed more than max_age ago leave the buffer, at a push or on expire()."""
    now = [1000.0]
    buf = MsgBuffer(100, max_age=5.0, clock=lambda: now[0])
    old, new = Message.new("a.b", b"1"), Message.new("a.b", b"2")
    buf.push(old)
    now[0] += 3
    buf.push(new)
    now[0] += 3
    buf.expire()
    assert list(buf) == [new]
    assert buf.evicted == 1


def test_buffer_keeps_origin_sequence_numbers_for_a_resend() -> None:
    """sequenced_after gives the numbered entries above a number, and the oldest number held."""
    buf = MsgBuffer(3)
    msgs = [Message.new("a.b", bytes([i])) for i in range(4)]
    for i, msg in enumerate(msgs, start=1):
        buf.push(msg, None, i)
    assert buf.sequenced_after(2) == ([(3, msgs[2]), (4, msgs[3])], 2)
    assert buf.last_seq() == 4
