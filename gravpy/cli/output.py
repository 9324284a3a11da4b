"""What gravctl prints: messages (as ``nats sub`` does, or JSON lines) and the peers table."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gravpy.message import Message

__all__ = ["format_message", "format_peers", "message_json", "printable", "write_data"]

# C0 and C1 control characters and DEL, written as escapes in the lines gravctl itself writes
# (a type, an id or a header from the mesh could otherwise move the cursor or retitle the
# terminal); the data is written as sent, as ``nats sub`` does
_CONTROLS: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` with its control characters written as ``\\xNN`` escapes."""
    return text.translate(_CONTROLS)


def message_json(msg: Message) -> dict[str, Any]:
    """A message as a JSON-able dict: data as text when it is UTF-8, else as ``data_base64``."""
    out: dict[str, Any] = {
        "uuid": msg.uuid,
        "type": msg.type,
        "reply_to": msg.reply_to,
        "parent_id": msg.parent_id,
        "timestamp": datetime.fromtimestamp(msg.timestamp, UTC).isoformat(),
    }
    try:
        out["data"] = msg.data.decode()
    except UnicodeDecodeError:
        out["data_base64"] = base64.b64encode(msg.data).decode()
    if msg.headers:
        out["headers"] = msg.headers
    return out


def format_message(
    msg: Message, n: int, *, as_json: bool, raw: bool = False, headers: bool = False
) -> str:
    """``[#n] Received on "type"``, the headers if asked, the data and a blank line; or one JSON
    line (``as_json``); or the data alone (``raw``, preceded by ``K: V`` header lines if asked)."""
    if as_json:
        return json.dumps(message_json(msg), ensure_ascii=False)
    header_lines = (
        [f"{printable(k)}: {printable(v)}" for k, v in (msg.headers or {}).items()]
        if headers
        else []
    )
    try:
        body = msg.data.decode()
    except UnicodeDecodeError:
        body = f"<{len(msg.data)} bytes, not UTF-8> {base64.b64encode(msg.data).decode()}"
    if raw:
        return "\n".join([*header_lines, body.removesuffix("\n")])
    head = f'[#{n}] Received on "{printable(msg.type)}"'
    if msg.reply_to:
        head += f" (reply to {printable(msg.reply_to)})"
    if header_lines:
        return "\n".join([head, *header_lines, "", body]) + "\n"
    return f"{head}\n{body}\n"


def write_data(data: bytes) -> None:
    """Data on stdout as it is, with a newline after it unless it ends with one."""
    out = sys.stdout.buffer
    out.write(data)
    if not data.endswith(b"\n"):
        out.write(b"\n")
    out.flush()


_COLUMNS = (
    "NODE",
    "ROLE",
    "NAME",
    "STATE",
    "ENDPOINT",
    "IN",
    "OUT",
    "BYTES_IN",
    "BYTES_OUT",
    "DROPPED",
    "QUEUED",
)


def _size(n: object) -> str:
    """Bytes, short: ``812``, ``12.3K``, ``4.5M``, ``1.2G`` (powers of 1024); ``-`` if unknown."""
    if not isinstance(n, int):
        return "-"
    value = float(n)
    for unit in ("", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}" if not unit else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_peers(node: Mapping[str, Any]) -> str:
    """The ``/v1/node`` document as a table: this node first, then its peers, then its leaves
    (NAME is the name an app gave when it attached, ``gravpy.connect(url, name=...)``)."""
    messages = node.get("messages", {})
    by_role = messages.get("by_role", {}).values()
    rows: list[Sequence[str]] = [
        _COLUMNS,
        (
            f"{node.get('uuid', '?')} (this node)",
            "peer",
            "-",
            str(node.get("state", "?")),
            ", ".join(node.get("listen", {}).get("endpoints", [])) or "-",
            str(messages.get("in", "-")),
            str(messages.get("out", "-")),
            _size(sum(r.get("bytes_in", 0) for r in by_role)),
            _size(sum(r.get("bytes_out", 0) for r in by_role)),
            str(sum(messages.get("dropped", {}).values())),
            "-",
        ),
    ]
    for link in [*node.get("peers", []), *node.get("leaves", [])]:
        rows.append(
            (
                link.get("uuid") or "?",
                link.get("role") or "?",
                link.get("name") or "-",
                link.get("state") or "?",
                link.get("endpoint") or link.get("remote_address") or "-",
                str(link.get("messages_in", 0)),
                str(link.get("messages_out", 0)),
                _size(link.get("bytes_in")),
                _size(link.get("bytes_out")),
                str(link.get("dropped", 0)),
                str(link.get("queued", 0)),
            )
        )
    rows = [[printable(str(cell)) for cell in row] for row in rows]  # (an app names itself)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    peers, leaves = len(node.get("peers", [])), len(node.get("leaves", []))
    lines.append(
        f"\nmesh {printable(str(node.get('mesh', '?')))!r}: {peers} peer(s), {leaves} leaf/leaves, "
        f"up {node.get('uptime_seconds', 0):.0f} s, gravpy {node.get('version', '?')}"
    )
    return "\n".join(lines)
