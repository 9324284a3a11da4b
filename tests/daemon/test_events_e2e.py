"""gravd's events end to end: a real gravd process, its store file, HTTP, SSE and gravctl."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import gravpy
from gravpy.cli.events import format_event, page_footer
from gravpy.events import Event, EventBroadcaster, EventStore, Severity, event_type
from gravpy.testing.gravd import GRAVD, Gravd, Process, gravctl, running_gravd

USER = str(uuid.uuid4())
GUARD = 15.0  # seconds: a hang guard, never a timing expectation


def failure_event() -> Event:
    return (
        Event.builder()
        .acted_upon(uuid.uuid4())
        .from_user(USER)
        .with_category("connection")
        .with_action("ping")
        .with_severity(Severity.ERROR)
        .with_description("could not reach the cluster")
        .with_metadata({"err": "timeout after 5 s", "doc": "https://example.org/ping"})
        .build()
    )


async def events_of(node: Gravd, query: str) -> dict[str, Any]:
    status, body = await node.get("/v1/events?" + query)
    assert status == 200, body
    value: dict[str, Any] = json.loads(body)
    return value


async def test_stored_events_survive_a_restart_and_gravctl_reads_them(tmp_path: Path) -> None:
    """An event an app persists through gravd is still there after gravd restarts on the same
    data dir, next to gravd's own config and drain events; gravctl lists and marks it."""
    data = ("--data-dir", str(tmp_path / "state"))
    ev = failure_event()
    async with running_gravd(*data) as first:
        async with gravpy.connect(first.endpoint) as app:
            await EventBroadcaster(app).publish(USER, ev, persist=True)
        assert (await first.stop()).code == 0
    assert (tmp_path / "state" / "events.sqlite3").is_file()
    async with running_gravd(*data) as second:
        page = await events_of(second, f"user={USER}&severity=error")
        assert page["total"] == 1
        assert page["events"][0]["id"] == ev.id
        assert page["events"][0]["metadata"]["err"] == "timeout after 5 s"
        loaded = await events_of(second, "category=config&action=loaded")
        assert loaded["total"] == 2  # one per start
        drained = await events_of(second, "category=node&action=drain")
        assert drained["total"] == 1
        listed = await gravctl("--url", second.endpoint, "events", "--user", USER, "--json")
        assert listed.code == 0, listed.stderr
        assert json.loads(listed.stdout.splitlines()[0])["id"] == ev.id
        assert listed.stderr.splitlines()[-1] == page_footer(1, 1, 0)
        read = await gravctl("--url", second.endpoint, "events", "read", ev.id)
        assert read.code == 0, read.stderr
        missing = await gravctl("--url", second.endpoint, "events", "read", str(uuid.uuid4()))
        assert missing.code == 1
        assert (await events_of(second, f"user={USER}&status=unread"))["total"] == 0
        assert (await second.stop()).code == 0


def test_the_listing_footer_says_which_events_it_showed_and_in_what_order() -> None:
    """Page 2 of 2-event pages shows the 3rd and 4th newest, oldest first, as the footer says."""
    assert page_footer(2, 6, 2) == (
        "2 of 6 event(s): #3 to #4 counted from the newest, shown oldest first"
    )
    assert page_footer(0, 6, 10) == "0 of 6 event(s)"


def test_a_time_no_clock_prints_is_listed_as_its_number() -> None:
    """An event stored before times were bounded, dated 1e20, lists (not an OverflowError)."""
    line = format_event(replace(failure_event(), created_at=1e20), as_json=False)
    assert line.startswith("100000000000000000000 ")
    assert "could not reach the cluster" in line


BAD_REQUESTS = [
    ("GET", "/v1/events?user=alice", None, "user"),
    ("GET", "/v1/events?severity=fatal", None, "severity"),
    ("GET", "/v1/events?page_size=1000000", None, "page_size"),
    ("GET", "/v1/events?page_size=0", None, "page_size"),
    ("GET", "/v1/events?page=-1", None, "page"),
    ("GET", "/v1/events?page=%C2%B2", None, "page"),  # "²": a digit to str.isdigit only
    ("GET", "/v1/events?colour=red", None, "colour"),
    ("GET", "/v1/events?since=yesterday", None, "since"),
    ("GET", "/v1/events?category=Bad-Name", None, "category"),
    ("GET", "/v1/events?order=random", None, "order"),
    ("GET", "/v1/events?user=" + USER + "&user=" + USER, None, "user"),
    ("PATCH", "/v1/events/42", {"status": "read"}, "id"),
    ("PATCH", f"/v1/events/{USER}", {"status": "archived"}, "status"),
    ("PATCH", f"/v1/events/{USER}", {"colour": "red"}, "body"),
    ("PATCH", f"/v1/events/{USER}", "not json", "body"),
    ("DELETE", "/v1/events/not-a-uuid", None, "id"),
    ("GET", "/v1/events/stream", None, "user"),
    ("GET", "/v1/events/stream?user=bob", None, "user"),
]


async def test_http_bad_input_answers_400_with_the_reason() -> None:
    """Bad ids, filters, bodies and huge page sizes answer 400 naming the field; unknown ids 404;
    a good PATCH and DELETE work."""
    async with running_gravd() as node:
        for method, path, body, field in BAD_REQUESTS:
            data = body if isinstance(body, str) else json.dumps(body) if body else None
            async with node.session.request(method, node.monitor + path, data=data) as response:
                answer = await response.json()
                assert response.status == 400, (method, path, answer)
                assert answer["field"] == field, (method, path, answer)
                assert answer["error"]
        [own] = (await events_of(node, "category=config"))["events"]
        missing = f"{node.monitor}/v1/events/{uuid.uuid4()}"
        async with node.session.delete(missing) as response:
            assert response.status == 404
        url = f"{node.monitor}/v1/events/{own['id']}"
        async with node.session.patch(url, json={"status": "read"}) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "read"
        async with node.session.delete(url) as response:
            assert response.status == 200
            assert (await response.json()) == {"deleted": own["id"]}
        assert (await events_of(node, "category=config"))["total"] == 0
        assert (await node.stop()).code == 0


async def test_stream_sends_a_users_live_events_as_sse() -> None:
    """GET /v1/events/stream?user= sends that user's event, published by an app, as SSE."""
    async with (
        running_gravd() as node,
        node.session.get(f"{node.monitor}/v1/events/stream?user={USER}") as stream,
        gravpy.connect(node.endpoint) as app,
    ):
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        wanted = event_type(USER)
        await app.wait_for(lambda peers: any(wanted in p.interests for p in peers), GUARD)
        ev = failure_event()
        await EventBroadcaster(app).publish(USER, ev)
        async with asyncio.timeout(GUARD):
            while not (line := (await stream.content.readline()).decode()).startswith("data:"):
                assert line, "the stream ended before the event"
        assert Event.from_dict(json.loads(line[5:])) == ev.with_system(app.node_uuid)


async def test_corrupt_store_fails_the_start_clearly(tmp_path: Path) -> None:
    """A corrupt events.sqlite3 makes gravd exit 1 at start, logging the file and the reason."""
    (tmp_path / "events.sqlite3").write_bytes(b"garbage, not SQLite " * 100)
    argv = [*GRAVD, "--listen", "127.0.0.1:0", "--monitor", "off", "--data-dir", str(tmp_path)]
    process = await Process.start(argv)
    try:
        result = await process.wait()
    finally:
        await process.close()
    assert result.code == 1
    [failed] = [e for e in process.events() if e.get("event") == "start_failed"]
    assert str(tmp_path / "events.sqlite3") in failed["error"]
    assert "not a database" in failed["error"]
    assert not any(e.get("event") == "listening" for e in process.events())


async def test_store_file_is_usable_by_the_library_after_gravd(tmp_path: Path) -> None:
    """The file gravd wrote opens with EventStore.open and holds gravd's own events."""
    async with running_gravd("--data-dir", str(tmp_path)) as node:
        assert (await node.stop()).code == 0
    async with await EventStore.open(tmp_path / "events.sqlite3") as store:
        page = await store.query(category="config")
    assert page.total == 1
    assert page.events[0].system_id == node.uuid
