"""The SQLite event store: queries agree with a reference filter; writes, retention and bad files."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravpy.errors import UsageError
from gravpy.events import (
    Event,
    EventError,
    EventQuery,
    EventStatus,
    EventStore,
    EventStoreError,
    Page,
    Severity,
)

USERS = [str(uuid.UUID(int=i + 1)) for i in range(3)]
CATEGORIES = ["connection", "signup_request"]


def make(
    user: str | None = None,
    severity: Severity = Severity.INFORMATIONAL,
    category: str = "connection",
    description: str = "something happened",
    created_at: float = 1_000.0,
    status: EventStatus = EventStatus.UNREAD,
) -> Event:
    """An event with these fields (created_at set after build, as if made then)."""
    builder = Event.builder().with_category(category).with_action("ping")
    builder.with_severity(severity).with_description(description)
    if severity.is_error:
        builder.with_metadata({"err": "failed"})
    if user is not None:
        builder.from_user(user)
    return replace(builder.build(), created_at=created_at, status=status)


events_strategy = st.lists(
    st.builds(
        make,
        user=st.sampled_from([*USERS, None]),
        severity=st.sampled_from(list(Severity)),
        category=st.sampled_from(CATEGORIES),
        description=st.text(alphabet="abAB_%\\ x", min_size=1, max_size=6).filter(str.strip),
        created_at=st.sampled_from([1_000.0, 1_001.0, 1_002.5, 1_003.0]),
        status=st.sampled_from(list(EventStatus)),
    ),
    max_size=30,
)
query_strategy = st.builds(
    EventQuery,
    user=st.sampled_from([*USERS, None]),
    severity=st.lists(st.sampled_from(list(Severity)), max_size=3).map(tuple),
    category=st.sampled_from([*CATEGORIES, None]),
    status=st.sampled_from([*EventStatus, None]),
    since=st.sampled_from([None, 1_001.0, 1_002.0]),
    until=st.sampled_from([None, 1_002.5, 1_004.0]),
    search=st.sampled_from([None, "a", "A", "_", "%", "\\", "b x"]),
    order=st.sampled_from(["newest", "oldest"]),
    page=st.integers(1, 4),
    page_size=st.integers(1, 8),
)


def passes(e: Event, q: EventQuery) -> bool:
    """The filters, in plain Python (the descriptions here are ASCII)."""
    return (
        (q.user is None or e.user_id == q.user)
        and (not q.severity or e.severity in q.severity)
        and (q.category is None or e.category == q.category)
        and (q.status is None or e.status == q.status)
        and (q.since is None or e.created_at >= q.since)
        and (q.until is None or e.created_at < q.until)
        and (q.search is None or q.search.lower() in e.description.lower())
    )


def reference(events: list[Event], q: EventQuery) -> tuple[list[Event], int]:
    """The page and total a query should give, computed in Python from the stored list."""
    matched = [e for e in events if passes(e, q)]
    ordered = sorted(enumerate(matched), key=lambda p: (p[1].created_at, p[0]))
    if q.order == "newest":
        ordered.reverse()
    start = (q.page - 1) * q.page_size
    return [e for _, e in ordered[start : start + q.page_size]], len(matched)


async def _stored_then_queried(events: list[Event], query: EventQuery) -> Page:
    async with await EventStore.open() as store:
        await store.persist_many(events)
        return await store.query(query)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy, query=query_strategy)
def test_query_matches_reference_filter(events: list[Event], query: EventQuery) -> None:
    """Every filter, order and page of a query gives what a plain Python filter gives."""
    page = asyncio.run(_stored_then_queried(events, query))
    expected, total = reference(events, query)
    assert page.total == total
    assert [e.id for e in page.events] == [e.id for e in expected]
    assert page.events == expected


@settings(max_examples=150, deadline=None)
@given(events=events_strategy, query=query_strategy)
def test_a_live_event_passes_a_query_as_a_stored_one_would(
    events: list[Event], query: EventQuery
) -> None:
    """EventQuery.matches (for events that are not stored: gravctl events --follow) agrees with
    the filter, search included."""
    assert [e.id for e in events if query.matches(e)] == [e.id for e in events if passes(e, query)]


async def test_search_folds_ascii_case_only_in_the_store_and_live() -> None:
    """As SQLite's LIKE: "deploy" finds "DEPLOY", "é" does not find "É"; matches agrees."""
    events = [make(description="DEPLOY done"), make(description="Élan lost")]
    async with await EventStore.open() as store:
        await store.persist_many(events)
        for search, found in (("deploy", [events[0]]), ("élan", []), ("Élan", [events[1]])):
            query = EventQuery(search=search)
            assert (await store.query(query)).events == found
            assert [e for e in events if query.matches(e)] == found


async def test_persist_mark_delete_get() -> None:
    """An event is found by id, marked read, deleted once; unknown ids answer None/False."""
    async with await EventStore.open() as store:
        event = make(user=USERS[0])
        await store.persist(event)
        await store.persist(event)  # the same id again changes nothing
        assert await store.count() == 1
        assert await store.get(event.id) == event
        marked = await store.mark(event.id, "read")
        assert marked == event.with_status(EventStatus.READ)
        assert (await store.query(user=USERS[0], status="unread")).total == 0
        assert await store.delete(event.id) is True
        assert await store.delete(event.id) is False
        assert await store.get(event.id) is None
        assert await store.mark(event.id, "read") is None


async def test_bad_ids_and_filters_raise_event_error() -> None:
    """A bad id or filter raises EventError naming it, before the database is asked."""
    async with await EventStore.open() as store:
        with pytest.raises(EventError) as caught:
            await store.delete("42")
        assert caught.value.field == "id"
        with pytest.raises(EventError) as caught:
            await store.query(page_size=100_000)
        assert caught.value.field == "page_size"
        with pytest.raises(UsageError):
            await store.query(EventQuery(), user=USERS[0])
    for text in ("²", "١٢", "1e3", "-1"):  # digits to str.isdigit, not whole numbers here
        with pytest.raises(EventError) as caught:
            EventQuery.from_params({"page": text})
        assert caught.value.field == "page"


async def test_retention_by_count_and_age() -> None:
    """retain keeps the newest max_count events and drops those older than max_age."""
    async with await EventStore.open() as store:
        now = 2_000_000_000.0
        events = [make(created_at=now - 10_000 + i) for i in range(10)]
        events += [make(created_at=now + i) for i in range(5)]
        await store.persist_many(events)
        assert await store.retain(max_age=now - 5_000.0) == 0  # an age from 1970: nothing older
        assert await store.retain(max_count=12) == 3
        left = await store.query(order="oldest", page_size=100)
        assert [e.id for e in left.events] == [e.id for e in events[3:]]


async def test_store_opened_with_limits_applies_them(tmp_path: Path) -> None:
    """Limits given to open are applied at open: the file shrinks to max_count."""
    path = tmp_path / "events.sqlite3"
    async with await EventStore.open(path) as store:
        await store.persist_many([make(created_at=1e9 + i) for i in range(20)])
    async with await EventStore.open(path, max_count=5) as store:
        assert await store.count() == 5


async def test_events_survive_reopening_the_file(tmp_path: Path) -> None:
    """What one store wrote to a file, a store opened later on that file reads."""
    path = tmp_path / "events.sqlite3"
    event = make(user=USERS[1], severity=Severity.ERROR)
    async with await EventStore.open(path) as store:
        await store.persist(event)
    async with await EventStore.open(path) as store:
        page = await store.query(user=USERS[1], severity="error")
    assert page.events == [event]


async def test_corrupt_file_fails_at_open(tmp_path: Path) -> None:
    """A file that is not a database raises EventStoreError at open, saying so."""
    path = tmp_path / "events.sqlite3"
    path.write_bytes(b"this is not SQLite at all" * 200)
    with pytest.raises(EventStoreError) as caught:
        await EventStore.open(path)
    assert caught.value.path == str(path)
    assert "not a database" in str(caught.value)


async def test_locked_file_fails_at_open(tmp_path: Path) -> None:
    """A database another connection keeps locked raises EventStoreError at open, saying so."""
    path = tmp_path / "events.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE other (x)")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(EventStoreError, match="locked"):
            await EventStore.open(path, timeout=0.05)
    finally:
        holder.close()
    async with await EventStore.open(path) as store:  # free again: it opens
        assert await store.count() == 0


async def test_newer_schema_fails_at_open(tmp_path: Path) -> None:
    """A store written by a newer gravpy (a higher schema version) is refused at open."""
    path = tmp_path / "events.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(EventStoreError, match="newer"):
        await EventStore.open(path)


async def test_closed_store_refuses_calls() -> None:
    """A call on a closed store raises UsageError instead of touching a closed connection."""
    store = await EventStore.open()
    await store.close()
    with pytest.raises(UsageError, match="closed"):
        await store.count()


async def test_concurrent_persists_share_transactions() -> None:
    """Persists that arrive while a write is in flight are committed together, none lost."""
    async with await EventStore.open() as store:
        events = [make(user=USERS[i % 3]) for i in range(200)]
        await asyncio.gather(*(store.persist(e) for e in events))
        assert await store.count() == 200
        stats = store.statistics()
        assert stats.rows == 200
        assert stats.transactions < 200
        await store.persist(events[0])  # alone: a transaction of its own
        assert store.statistics().transactions == stats.transactions + 1


async def test_a_write_that_fails_fails_only_its_own_caller() -> None:
    """An event the database cannot take (a lone surrogate, in an event made without the checks)
    fails its persist with EventStoreError; the good events batched with it are stored."""
    async with await EventStore.open() as store:
        goods = [make(description=f"good {i}") for i in range(5)]
        bad = replace(make(), description="bad \ud800 text")  # (replace skips the checks)
        results = await asyncio.gather(
            *(store.persist(e) for e in [*goods[:2], bad, *goods[2:]]), return_exceptions=True
        )
        assert [r is None for r in results] == [True, True, False, True, True, True]
        assert isinstance(results[2], EventStoreError)
        assert "UnicodeEncodeError" in str(results[2])
        assert {e.id for e in (await store.query(page_size=10)).events} == {e.id for e in goods}
        with pytest.raises(EventStoreError):
            await store.persist(bad)  # alone, too


@pytest.mark.parametrize(
    "limits",
    [
        {"max_count": 0},
        {"max_count": -1},
        {"max_count": "3"},
        {"max_count": True},
        {"max_age": 0},
        {"max_age": -5},
        {"max_age": float("nan")},
        {"max_age": "x"},
    ],
)
async def test_retain_refuses_what_open_refuses_and_deletes_nothing(
    limits: dict[str, object],
) -> None:
    """A count below 1 or an age not above 0 is a UsageError from retain as from open, and
    every event stays."""
    async with await EventStore.open() as store:
        await store.persist_many([make(created_at=1e9 + i) for i in range(10)])
        with pytest.raises(UsageError):
            await store.retain(**limits)  # type: ignore[arg-type]
        assert await store.count() == 10
    with pytest.raises(UsageError):
        await EventStore.open(**limits)  # type: ignore[arg-type]


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def test_wrong_arguments_to_the_store_name_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown filter, a non-event to persist, a bad path or timeout raise EventError or
    UsageError naming the argument, never a TypeError or AttributeError, and make no file."""
    monkeypatch.chdir(tmp_path)
    async with await EventStore.open() as store:
        calls: list[tuple[Callable[[], Awaitable[object]], str]] = [
            (lambda: store.query(foo=1), "foo"),
            (lambda: store.persist(None), "event"),  # type: ignore[arg-type]
            (lambda: store.persist({"id": 1}), "event"),  # type: ignore[arg-type]
            (lambda: store.persist_many(None), "events"),  # type: ignore[arg-type]
        ]
        for call, field in calls:
            with pytest.raises(EventError) as caught:
                await call()
            assert caught.value.field == field
        with pytest.raises(UsageError, match="EventQuery"):
            await store.query("user")  # type: ignore[arg-type]
    for bad in ({"path": None}, {"path": 3}, {"timeout": -1}, {"timeout": "5"}):
        with pytest.raises(UsageError):
            await EventStore.open(**bad)  # type: ignore[arg-type]
    assert _files(tmp_path) == []  # (no file named None, nor 3)
    for params, field in (([], "query"), ({1: "x", "a": 1}, "1"), ({"since": 2**1100}, "since")):
        with pytest.raises(EventError) as caught:
            EventQuery.from_params(params)  # type: ignore[arg-type]
        assert caught.value.field == field
