"""The event builder's rules, each good and bad, and the event's immutability and round trip."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravpy.errors import UsageError
from gravpy.events import Event, EventBuilder, EventError, EventQuery, EventStatus, Severity
from gravpy.events.event import DESCRIPTION_LIMIT, METADATA_LIMIT, NAME_LIMIT

U = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"


def good() -> EventBuilder:
    """A builder that passes every rule."""
    return (
        Event.builder()
        .acted_upon(uuid.uuid4())
        .from_user(uuid.uuid4())
        .from_system(uuid.uuid4())
        .with_category("connection")
        .with_action("ping")
        .with_severity(Severity.SUCCESS)
        .with_description("reached the cluster")
        .with_metadata({"context": "kind-1"})
    )


Step = Callable[[EventBuilder], EventBuilder]

GOOD: list[tuple[str, Step]] = [
    ("acted_upon as a UUID", lambda b: b.acted_upon(uuid.UUID(U))),
    ("acted_upon as text", lambda b: b.acted_upon(U.upper())),
    ("user as text", lambda b: b.from_user(U)),
    ("system as text", lambda b: b.from_system(U)),
    ("operation id given", lambda b: b.with_operation_id(U)),
    ("category snake_case", lambda b: b.with_category("signup_request")),
    ("category with digits", lambda b: b.with_category("k8s_context2")),
    ("category at the limit", lambda b: b.with_category("a" * NAME_LIMIT)),
    ("action snake_case", lambda b: b.with_action("add_to_organization")),
    ("severity by name", lambda b: b.with_severity("Warning")),
    ("each severity below error", lambda b: b.with_severity(Severity.DEBUG)),
    (
        "error with err",
        lambda b: b.with_severity(Severity.ERROR).with_metadata({"err": "timeout after 5 s"}),
    ),
    (
        "emergency with err",
        lambda b: b.with_severity("emergency").with_metadata({"err": {"code": 7}}),
    ),
    ("doc https", lambda b: b.with_metadata({"doc": "https://docs.example.org/events"})),
    ("doc http", lambda b: b.with_metadata({"doc": "http://10.0.0.1:8080/x"})),
    ("metadata nested", lambda b: b.with_metadata({"a": [1, 2.5, None, True, {"b": "c"}]})),
    ("metadata empty", lambda b: b.with_metadata({})),
    ("description at the limit", lambda b: b.with_description("x" * DESCRIPTION_LIMIT)),
]

BAD: list[tuple[str, Step, str]] = [
    ("acted_upon not a UUID", lambda b: b.acted_upon("conn-1"), "acted_upon"),
    ("acted_upon a number", lambda b: b.acted_upon(7), "acted_upon"),  # type: ignore[arg-type]
    ("user not a UUID", lambda b: b.from_user("alice"), "user_id"),
    ("system not a UUID", lambda b: b.from_system(""), "system_id"),
    ("operation id not a UUID", lambda b: b.with_operation_id("op"), "operation_id"),
    ("category missing", lambda b: b.with_category(""), "category"),
    ("category CamelCase", lambda b: b.with_category("SignupRequest"), "category"),
    ("category kebab", lambda b: b.with_category("signup-request"), "category"),
    ("category double _", lambda b: b.with_category("signup__request"), "category"),
    ("category leading digit", lambda b: b.with_category("2fa"), "category"),
    ("category too long", lambda b: b.with_category("a" * (NAME_LIMIT + 1)), "category"),
    ("action spaces", lambda b: b.with_action("add to org"), "action"),
    ("action trailing _", lambda b: b.with_action("ping_"), "action"),
    ("severity unknown", lambda b: b.with_severity("fatal"), "severity"),
    ("error without err", lambda b: b.with_severity(Severity.ERROR), "metadata"),
    (
        "critical with empty err",
        lambda b: b.with_severity("critical").with_metadata({"err": ""}),
        "metadata",
    ),
    ("alert without err", lambda b: b.with_severity(Severity.ALERT), "metadata"),
    ("doc not a URL", lambda b: b.with_metadata({"doc": "see the docs"}), "metadata"),
    ("doc ftp", lambda b: b.with_metadata({"doc": "ftp://example.org/x"}), "metadata"),
    ("doc no host", lambda b: b.with_metadata({"doc": "https://"}), "metadata"),
    ("doc not text", lambda b: b.with_metadata({"doc": 42}), "metadata"),
    ("metadata not JSON", lambda b: b.with_metadata({"when": object()}), "metadata"),
    ("metadata bytes", lambda b: b.with_metadata({"raw": b"\x00"}), "metadata"),
    ("metadata NaN", lambda b: b.with_metadata({"x": float("nan")}), "metadata"),
    ("metadata int too big", lambda b: b.with_metadata({"x": 1 << 70}), "metadata"),
    ("metadata too large", lambda b: b.with_metadata({"x": "y" * METADATA_LIMIT}), "metadata"),
    ("metadata not a map", lambda b: b.with_metadata([1, 2]), "metadata"),  # type: ignore[arg-type]
    ("description missing", lambda b: b.with_description(""), "description"),
    ("description blank", lambda b: b.with_description("   "), "description"),
    (
        "description too long",
        lambda b: b.with_description("x" * (DESCRIPTION_LIMIT + 1)),
        "description",
    ),
    (
        "description with a lone surrogate",
        lambda b: b.with_description("cannot read /data/caf\udce9.csv"),
        "description",
    ),
    ("metadata with a lone surrogate", lambda b: b.with_metadata({"f": "\ud800"}), "metadata"),
    ("metadata key a lone surrogate", lambda b: b.with_metadata({"\udc80": 1}), "metadata"),
]


@pytest.mark.parametrize(("name", "step"), GOOD, ids=[g[0] for g in GOOD])
def test_builder_accepts(name: str, step: Step) -> None:
    """Each rule's good case builds an event that keeps what was given."""
    event = step(good()).build()
    assert isinstance(event, Event)
    assert Event.from_dict(event.to_dict()) == event


@pytest.mark.parametrize(("name", "step", "field"), BAD, ids=[b[0] for b in BAD])
def test_builder_refuses_naming_the_field(name: str, step: Step, field: str) -> None:
    """Each rule's bad case raises EventError naming the field at fault."""
    with pytest.raises(EventError) as caught:
        step(good()).build()
    assert caught.value.field == field
    assert field in str(caught.value)
    assert isinstance(caught.value, UsageError)


def test_builder_without_category_or_action_fails() -> None:
    """A builder that was never given a category refuses to build."""
    with pytest.raises(EventError, match="category"):
        Event.builder().with_action("ping").with_description("x").build()


def test_builder_keeps_operation_id_and_makes_new_ids() -> None:
    """Two events from one builder share the operation id and differ in id."""
    builder = good()
    first, second = builder.build(), builder.build()
    assert first.operation_id == second.operation_id
    assert first.id != second.id
    assert good().build().operation_id != first.operation_id
    assert first.status is EventStatus.UNREAD


def test_ids_are_canonical() -> None:
    """UUIDs given in any accepted form are stored in their canonical lowercase form."""
    event = good().from_user("{" + U.upper() + "}").build()
    assert event.user_id == U


def test_event_is_immutable() -> None:
    """Fields cannot be set after build, and changing a metadata copy changes nothing."""
    event = good().with_metadata({"list": [1]}).build()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.category = "other"  # type: ignore[misc]
    copy = event.metadata
    copy["list"].append(2)
    copy["new"] = True
    assert event.metadata == {"list": [1]}


def test_to_dict_is_json_and_msgpack_safe() -> None:
    """to_dict survives a JSON and a msgpack round trip and reads back equal."""
    event = good().with_severity("error").with_metadata({"err": "boom", "n": [1, 2]}).build()
    through_json = json.loads(json.dumps(event.to_dict()))
    through_msgpack = msgpack.unpackb(msgpack.packb(event.to_dict()), raw=False)
    assert Event.from_dict(through_json) == event
    assert Event.from_dict(through_msgpack) == event


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("id"), "id"),
        (lambda d: d.update(created_at="yesterday"), "created_at"),
        (lambda d: d.update(created_at=float("inf")), "created_at"),
        (lambda d: d.update(created_at=1e20), "created_at"),  # no clock prints that year
        (lambda d: d.update(metadata=deep(1100)), "metadata"),  # deeper than json.dumps goes
        (lambda d: d.update(metadata=[]), "metadata"),  # empty, but not a mapping
        (lambda d: d.update(status="archived"), "status"),
        (lambda d: d.update(severity=3), "severity"),
        (lambda d: d.update(user_id="bob"), "user_id"),
    ],
)
def test_from_dict_checks_every_rule(
    mutate: Callable[[dict[str, Any]], object], field: str
) -> None:
    """A dict that breaks a rule (from the wire) raises EventError naming the field."""
    data = good().build().to_dict()
    mutate(data)
    with pytest.raises(EventError) as caught:
        Event.from_dict(data)
    assert caught.value.field == field


def deep(depth: int) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for _ in range(depth):
        nested = {"a": nested}
    return nested


def test_from_dict_refuses_a_non_mapping() -> None:
    """Something that is not a mapping is refused as a whole event."""
    with pytest.raises(EventError, match="mapping"):
        Event.from_dict(["not", "an", "event"])


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    metadata=st.dictionaries(st.text(max_size=10), _json_values, max_size=5),
    severity=st.sampled_from([s for s in Severity if not s.is_error]),
)
def test_round_trip_any_metadata(metadata: dict[str, Any], severity: Severity) -> None:
    """Any JSON metadata (without a doc) round-trips through to_dict/from_dict unchanged."""
    metadata.pop("doc", None)
    event = good().with_severity(severity).with_metadata(metadata).build()
    back = Event.from_dict(msgpack.unpackb(msgpack.packb(event.to_dict()), raw=False))
    assert back == event
    assert back.metadata == metadata


def test_a_lone_surrogate_read_back_or_searched_for_is_an_event_error() -> None:
    """An event read back with a lone surrogate in its description, and a search for one, raise
    EventError naming the field (not a UnicodeEncodeError from the store later)."""
    with pytest.raises(EventError) as caught:
        Event.from_dict({**good().build().to_dict(), "description": "bad \ud800 text"})
    assert caught.value.field == "description"
    assert "U+D800 at 4" in caught.value.problem
    with pytest.raises(EventError) as caught:
        EventQuery(search="\udce9")
    assert caught.value.field == "search"
