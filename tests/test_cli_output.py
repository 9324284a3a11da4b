"""What gravctl writes itself never carries a control character that came from the mesh."""

from __future__ import annotations

import re

from gravpy.cli.events import format_event
from gravpy.cli.output import format_message, format_peers
from gravpy.events import Event
from gravpy.message import Message

# an OSC sequence that retitles the terminal, a cursor move, a bell, NUL and a C1 control
HOSTILE = "a\x1b]0;pwned\x07b\x1b[2J\x00\x9b"
LAYOUT = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every control but the newline


def test_a_received_message_is_printed_with_its_controls_escaped() -> None:
    """A type, reply id and header holding terminal controls are printed as escapes; the data,
    as ``nats sub`` prints it, is left as sent."""
    msg = Message("1", "", "r" + HOSTILE, "t" + HOSTILE, 0.0, b"x", {"k" + HOSTILE: HOSTILE})
    text = format_message(msg, 1, as_json=False, headers=True)
    assert LAYOUT.search(text) is None
    assert '[#1] Received on "ta\\x1b]0;pwned\\x07b\\x1b[2J\\x00\\x9b"' in text
    assert "\\x1b" in text.splitlines()[1]


def test_the_peers_table_escapes_the_names_apps_give_themselves() -> None:
    """An app's name (its own choice) is shown escaped in ``gravctl peers``."""
    node = {"uuid": "n", "state": "serving", "leaves": [{"uuid": "l", "name": HOSTILE}]}
    text = format_peers(node)
    assert LAYOUT.search(text) is None
    assert "a\\x1b]0;pwned\\x07b" in text


def test_an_event_line_escapes_its_description() -> None:
    """An event's description (any text a node or app recorded) is shown escaped."""
    event = (
        Event.builder()
        .with_category("peer")
        .with_action("linked")
        .with_severity("informational")
        .with_description(HOSTILE)
        .build()
    )
    line = format_event(event, as_json=False)
    assert LAYOUT.search(line) is None
    assert line.endswith("a\\x1b]0;pwned\\x07b\\x1b[2J\\x00\\x9b")
