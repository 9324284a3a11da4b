"""gravctl's commands that read a node's monitoring port: ``peers`` and ``check``.

Both ask ``/v1/node`` (and ``check`` also ``/healthz``) over plain HTTP with the standard library,
run in a worker thread: a one-shot GET needs no HTTP client library, and not importing one keeps
gravctl's start-up short. ``--monitor`` takes ``HOST:PORT`` as gravd's own ``--monitor`` does,
or a URL.

``check`` follows the Nagios plugin convention: one status line (``GRAVD OK - ...`` with
performance data after ``|``) and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Drops are the sum
of ``messages.dropped`` in the node document since the node started, duplicates left out (the
seen-set dropping a second copy loses nothing), and of what its NATS bridges lost. A bridge that is
not connected (still connecting, reconnecting) is a WARNING unless ``--bridge-down`` says
otherwise: the node serves its LAN, but the meshes beyond it are cut off. The words name such a
bridge's last error with its age by the node's own clock (``last error 4 s ago: ...``): a bridge
that keeps failing refreshes it at every attempt, so an old one is from an earlier outage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from gravpy.cli.attach import Failure
from gravpy.cli.parser import EXIT_CONNECT, EXIT_OK

__all__ = ["check", "monitor_url", "peers"]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
LEAF_PAGE = 1000  # leaves asked for per page (gravd's MAX_LEAF_PAGE)
LEAF_OVERLAP = 100  # leaves each page after the first reads again (``node_with_every_leaf``)
_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def monitor_url(monitor: str) -> str:
    """``http://HOST:PORT`` from ``HOST:PORT`` (or a URL, kept), without a trailing slash."""
    text = monitor.strip().rstrip("/")
    return text if "://" in text else f"http://{text}"


def _get(url: str, timeout: float) -> tuple[int, Any]:
    """(status, JSON body) of a GET; 4xx/5xx answers are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _json(exc.read() or b"null")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # (say what it is, not where the JSON parser stopped)
        raise ValueError(
            "it answered, but not with gravd's JSON: is that the monitor's port?"
        ) from None


async def fetch(args: argparse.Namespace, path: str) -> tuple[int, Any]:
    """GET ``path`` from the monitor; ``Failure(EXIT_CONNECT)`` with one line if it cannot."""
    url = monitor_url(args.monitor) + path
    try:
        return await asyncio.to_thread(_get, url, args.connect_timeout)
    except (OSError, ValueError) as exc:  # URLError is an OSError; bad JSON a ValueError
        reason = getattr(exc, "reason", None) or exc
        raise Failure(EXIT_CONNECT, f"cannot read {url}: {reason}") from None


async def peers(args: argparse.Namespace) -> int:
    from gravpy.cli.output import format_peers

    print(format_peers(await node_with_every_leaf(args)))
    return EXIT_OK


async def node_with_every_leaf(args: argparse.Namespace) -> dict[str, Any]:
    """The node document with all its leaves. ``/v1/node`` lists them a page at a time, oldest
    first (``leaves_offset``, ``leaves_limit``), so pages are read and joined by uuid. An app
    that leaves between two reads moves the later ones up a place, so each page after the first
    starts ``LEAF_OVERLAP`` leaves before the end of the last: up to that many apps may leave
    between two reads and none that stayed is missed (a new app joins at the end)."""
    node = await _node_page(args, 0)
    page: list[Any] = node.get("leaves", [])
    leaves = {_leaf_key(leaf): leaf for leaf in page}
    offset = 0
    while len(page) == LEAF_PAGE:
        offset += LEAF_PAGE - min(LEAF_OVERLAP, LEAF_PAGE - 1)  # (at least one new place)
        page = (await _node_page(args, offset)).get("leaves", [])
        leaves.update((_leaf_key(leaf), leaf) for leaf in page if _leaf_key(leaf) not in leaves)
    node["leaves"] = list(leaves.values())
    return node


def _leaf_key(leaf: Any) -> object:
    """What tells two listed leaves apart: the uuid of the app's node (its identity if odd)."""
    return leaf.get("uuid", id(leaf)) if isinstance(leaf, dict) else id(leaf)


async def _node_page(args: argparse.Namespace, offset: int) -> dict[str, Any]:
    """``/v1/node`` with the page of leaves from ``offset`` (the largest page gravd serves)."""
    path = f"/v1/node?leaves_offset={offset}&leaves_limit={LEAF_PAGE}"
    status, node = await fetch(args, path)
    if status != 200 or not isinstance(node, dict):
        raise Failure(EXIT_CONNECT, f"{monitor_url(args.monitor)}{path} answered {status}")
    return node


async def check(args: argparse.Namespace) -> int:
    try:
        health, _ = await fetch(args, "/healthz")
        status, node = await fetch(args, "/v1/node")
    except Failure as exc:
        print(f"GRAVD UNKNOWN - {exc}")
        return UNKNOWN
    if status != 200 or not isinstance(node, dict):
        print(f"GRAVD UNKNOWN - /v1/node answered {status}")
        return UNKNOWN
    code, summary = verdict(health, node, args)
    open_peers = sum(p.get("state") == "open" for p in node.get("peers", []))
    drops = lost(node)
    bridges = node.get("bridges", [])
    up = sum(bridge.get("state") == "connected" for bridge in bridges)
    print(
        f"GRAVD {_NAMES[code]} - {summary} | peers={open_peers};{args.warn_peers}:;"
        f"{args.crit_peers}: drops={drops}c;{_limit(args.warn_drops)};{_limit(args.crit_drops)}"
        + (f" bridges_connected={up};;;0;{len(bridges)}" if bridges else "")
    )
    return code


def verdict(health: int, node: dict[str, Any], args: argparse.Namespace) -> tuple[int, str]:
    """The check's exit code and its words, from /healthz's status and the node document."""
    open_peers = sum(p.get("state") == "open" for p in node.get("peers", []))
    drops = lost(node)
    facts = f"{node.get('state', '?')}, {open_peers} peer(s), {drops} dropped"
    down = _bridges_down(node)
    if down:
        facts += "; " + "; ".join(down)
    bridged = _BRIDGE_DOWN[args.bridge_down] if down else OK
    if health != 200:
        return CRITICAL, f"not healthy (/healthz {health}): {facts}"
    if open_peers < args.crit_peers or _over(drops, args.crit_drops) or bridged == CRITICAL:
        return CRITICAL, facts
    if open_peers < args.warn_peers or _over(drops, args.warn_drops) or bridged == WARNING:
        return WARNING, facts
    return OK, facts


_BRIDGE_DOWN = {"ok": OK, "warning": WARNING, "critical": CRITICAL}


def _bridges_down(node: dict[str, Any]) -> list[str]:
    """A few words on each NATS bridge of the node that is not connected, with its last error
    and how long ago that was."""
    down: list[str] = []
    now = _node_time(node)
    for bridge in node.get("bridges", []):
        state = bridge.get("state", "?")
        if state != "connected":
            servers = ",".join(bridge.get("servers", [])) or "?"
            error = bridge.get("last_error") or ""
            if error:
                ago = _ago(_unix_time(bridge.get("last_error_at")), now)
                error = f" (last error{ago}: {error})"
            down.append(f"bridge {servers} {state}{error}")
    return down


def _node_time(node: dict[str, Any]) -> float | None:
    """The node's clock now (Unix time: it started at ``started_at``, ``uptime_seconds`` ago),
    so an age shown here does not depend on this machine's clock."""
    started = _unix_time(node.get("started_at"))
    uptime = node.get("uptime_seconds")
    if started is None or not isinstance(uptime, int | float):
        return None
    return started + uptime


def _unix_time(text: object) -> float | None:
    """An ISO 8601 time of the node document as Unix time; None if absent or not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _ago(at: float | None, now: float | None) -> str:
    """`` 4 s ago`` (or ``min``, ``h``, ``d``); nothing if either time is unknown."""
    if at is None or now is None:
        return ""
    seconds = max(0.0, now - at)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size:
            return f" {seconds // size:.0f} {unit} ago"
    return f" {seconds:.0f} s ago"


def _over(drops: int, limit: int | None) -> bool:
    return limit is not None and drops >= limit


def _limit(limit: int | None) -> str:
    return "" if limit is None else str(limit)


def lost(node: dict[str, Any]) -> int:
    """Messages the node dropped since it started, except duplicates (a copy, not a loss), and
    those its bridges lost."""
    dropped = node.get("messages", {}).get("dropped", {})
    bridged: int = sum(sum(b.get("lost", {}).values()) for b in node.get("bridges", []))
    local: int = sum(n for reason, n in dropped.items() if reason != "duplicate")
    return local + bridged
