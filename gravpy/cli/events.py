"""``gravctl events``: list, follow and mark the events a gravd keeps.

Everything goes over the mesh, like the other commands: gravctl attaches to the node at ``--url``
as a leaf and asks that gravd's store (``EventStore.remote``); ``--follow`` then subscribes to the
user's live events (``EventBroadcaster.subscribe``; every user's and gravd's own without
``--user``) and prints them as they come, after the newest page, until interrupted. A live event
is shown only if it passes the same severity, category and status filters.

``--follow`` ends with exit 4 when gravctl's link to gravd closes (gravd stopped, the network
went): the leaf would redial, but the events published meanwhile would never be shown, so
following on silently would pass a gap for "no events". It watches the link itself (the
subscription does not end when the link drops) and says so on standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gravpy.cli.output import printable
from gravpy.events import (
    Event,
    EventBroadcaster,
    EventError,
    EventQuery,
    EventStore,
    EventStoreError,
    Severity,
)

if TYPE_CHECKING:
    from gravpy.events.remote import RemoteEventStore
    from gravpy.grav import Grav

__all__ = ["EXIT_NOT_FOUND", "add_events_command", "page_footer", "run_events"]

EXIT_NOT_FOUND = 1
EPILOG = """\
examples:
  gravctl events --user 5b6e... --severity error,critical --status unread
  gravctl events --follow            every event as it happens (gravd's own too)
  gravctl events read 0e2f...        mark one event read

exit codes: 0 success, 1 no such event (read), 2 bad filter, 4 cannot reach the node's store
"""


def add_events_command(commands: Any) -> None:
    """Add ``events`` (and ``events read ID``) to gravctl's subcommands."""
    events = commands.add_parser(
        "events",
        help="list, follow or mark the events gravd keeps",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    events.add_argument("--user", metavar="UUID", help="only this user's events")
    events.add_argument(
        "--severity", metavar="S", help=f"one or several, comma-separated ({_severities()})"
    )
    events.add_argument("--category", metavar="C")
    events.add_argument("--action", metavar="A")
    events.add_argument("--status", choices=("unread", "read"))
    events.add_argument("--search", metavar="TEXT", help="a substring of the description")
    events.add_argument("--page", type=int, default=1, metavar="N")
    events.add_argument("--page-size", type=int, default=50, metavar="N")
    events.add_argument("--json", action="store_true", help="one JSON object per event")
    events.add_argument("--follow", action="store_true", help="then print live events")
    actions = events.add_subparsers(dest="events_command", metavar="read ID")
    read = actions.add_parser("read", help="mark an event read")
    read.add_argument("id", metavar="ID")


async def run_events(args: argparse.Namespace) -> None:
    """The ``events`` command (called by ``gravctl``'s dispatcher)."""
    from gravpy.cli.main import EXIT_CONNECT, EXIT_USAGE, Failure, _until_signal, attached

    async with attached(args) as grav:
        store = EventStore.remote(grav, timeout=args.connect_timeout)
        try:
            if args.events_command == "read":
                await _read(store, args.id)
            else:
                await _list(grav, store, args, _until_signal)
        except EventError as exc:
            raise Failure(EXIT_USAGE, str(exc)) from None
        except EventStoreError as exc:
            raise Failure(EXIT_CONNECT, str(exc)) from None
        finally:
            store.close_pod()


async def _read(store: RemoteEventStore, event_id: str) -> None:
    from gravpy.cli.main import Failure

    if await store.mark(event_id, "read") is None:
        raise Failure(EXIT_NOT_FOUND, f"no event {event_id}")
    print(f"Marked {event_id} read", file=sys.stderr)


async def _list(grav: Grav, store: RemoteEventStore, args: argparse.Namespace, until: Any) -> None:
    query = EventQuery.from_params(
        {
            "user": args.user,
            "severity": args.severity,
            "category": args.category,
            "action": args.action,
            "status": args.status,
            "search": args.search,
            "page": args.page,
            "page_size": args.page_size,
        }
    )
    broadcaster = EventBroadcaster(grav)
    live = broadcaster.subscribe(query.user) if query.user else broadcaster.subscribe_all()
    try:
        page = await store.query(query)
        shown = {e.id for e in page.events}
        for event in reversed(page.events):  # oldest first, so the newest is next to the prompt
            print(format_event(event, as_json=args.json), flush=True)
        first = (page.page - 1) * page.page_size
        print(page_footer(len(page.events), page.total, first), file=sys.stderr)
        if args.follow:
            done = asyncio.Event()
            with until(done):
                await _follow(grav, live, query, shown, args.json, done)
    finally:
        broadcaster.close()


async def _follow(
    grav: Grav,
    live: Any,
    query: EventQuery,
    shown: set[str],
    as_json: bool,
    done: asyncio.Event,
) -> None:
    """Print live events until ``done`` (a signal); ``Failure`` (exit 4) if the link closes."""
    from gravpy.cli.attach import is_open
    from gravpy.cli.main import EXIT_CONNECT, Failure

    ended = asyncio.ensure_future(done.wait())
    lost = asyncio.ensure_future(grav.wait_for(lambda peers: not is_open(peers)))
    try:
        while not done.is_set():
            nxt = asyncio.ensure_future(anext(live))
            await asyncio.wait([nxt, ended, lost], return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
                if done.is_set():
                    return
                raise Failure(EXIT_CONNECT, "the live events stopped: the link to gravd closed")
            failed = nxt.exception()
            if failed is not None:  # said, not a quiet exit 0 the user takes for "no events"
                why = (
                    "the link to gravd closed" if isinstance(failed, StopAsyncIteration) else failed
                )
                raise Failure(EXIT_CONNECT, f"the live events stopped: {why}")
            event: Event = nxt.result()
            if event.id not in shown and query.matches(event):
                print(format_event(event, as_json=as_json), flush=True)
    finally:
        for waiter in (ended, lost):
            waiter.cancel()
        await asyncio.gather(ended, lost, return_exceptions=True)


def page_footer(shown: int, total: int, skipped: int) -> str:
    """The line after a listing: which of the events, counted from the newest, it showed (the
    page lists them oldest first, so the newest is next to the prompt)."""
    if not shown:
        return f"0 of {total} event(s)"
    return (
        f"{shown} of {total} event(s): #{skipped + 1} to #{skipped + shown} counted from the "
        "newest, shown oldest first"
    )


def format_event(event: Event, *, as_json: bool) -> str:
    """One line: time, severity, category/action, status, id, description; or JSON."""
    if as_json:
        return json.dumps(event.to_dict(), ensure_ascii=False)
    try:
        when = datetime.fromtimestamp(event.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # (stored before times were bounded)
        when = f"{event.created_at:>19.0f}"
    mark = "*" if event.status.value == "unread" else " "
    return (
        f"{when} {mark}{event.severity.value:<13} "
        f"{printable(event.category)}/{printable(event.action):<18} "
        f"{event.id}  {printable(event.description)}"
    )


def _severities() -> str:
    return ", ".join(s.value for s in Severity)
