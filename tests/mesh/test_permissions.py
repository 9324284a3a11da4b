"""Per-type permissions: the pure rules, and their enforcement by real nodes on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import gravpy
from gravpy import Message
from gravpy.errors import PermissionDenied, UsageError
from gravpy.identity import keygen, parse_public_key
from gravpy.mesh.permissions import Refusal, TypeRules, parse_authority

from .conftest import FAST, NodeFactory, linked_to


def test_deny_wins_and_nothing_is_allowed_without_an_allow() -> None:
    """A type allowed and denied is denied; an empty allow list allows nothing."""
    rules = TypeRules(allow=("sensor.*", "a.>"), deny=("sensor.secret",))
    assert rules.allows("sensor.temp")
    assert not rules.allows("sensor.secret")
    assert not rules.allows("sensor.temp.x")
    assert rules.allows("a.b.c")
    assert not TypeRules(allow=()).allows("x")


def test_a_pattern_is_wholly_forbidden_only_when_no_type_of_it_may_pass() -> None:
    """forbids_all_of: covered by a deny, or sharing no type with any allow."""
    rules = TypeRules(allow=(">",), deny=("secret.>",))
    assert rules.forbids_all_of("secret.>")
    assert rules.forbids_all_of("secret.*.x")
    assert not rules.forbids_all_of(">")  # some types pass, so the pod gets those
    narrow = TypeRules(allow=("sensor.*",))
    assert narrow.forbids_all_of("motor.>")
    assert not narrow.forbids_all_of("*.temp")


def test_the_auth_file_admits_by_key_or_token_and_refuses_the_rest(tmp_path: Path) -> None:
    """A listed key or token gets its identity; others are refused with a reason."""
    line = keygen(tmp_path / "k")
    authority = parse_authority(
        {
            "identities": [
                {"name": "k", "public_key": line},
                {"name": "t", "token": "tok", "publish": {"allow": ["a.*"], "deny": []}},
            ]
        }
    )
    admitted = authority.admit(parse_public_key(line), "")
    assert not isinstance(admitted, Refusal)
    assert admitted.name == "k"
    by_token = authority.admit(b"", "tok")
    assert not isinstance(by_token, Refusal)
    assert by_token.publish.allows("a.b")
    assert authority.admit(b"", "") == Refusal(
        "not_allowed", "this node accepts only listed identities"
    )
    with pytest.raises(UsageError, match="public_key or a token"):
        parse_authority({"identities": [{"name": "x"}]})
    with pytest.raises(UsageError, match="not a type pattern"):
        parse_authority({"anonymous": {"publish": {"allow": ["a..b"]}}})
    with pytest.raises(UsageError, match=r"unknown keys \['subcribe'\]"):
        parse_authority({"identities": [{"name": "x", "token": "t", "subcribe": {}}]})


def test_a_token_that_is_not_ascii_is_compared_like_any_other() -> None:
    """A non-ASCII token in the file, or presented, is admitted or refused, never an error."""
    authority = parse_authority(
        {"identities": [{"name": "u", "token": "clé-ü"}, {"name": "a", "token": "plain"}]}
    )
    for token, name in (("clé-ü", "u"), ("plain", "a")):
        admitted = authority.admit(b"", token)
        assert not isinstance(admitted, Refusal)
        assert admitted.name == name
    assert isinstance(authority.admit(b"", "pläin"), Refusal)


SENSORS = {
    "name": "sensors",
    "token": "sensor-token",
    "publish": {"allow": ["sensor.*"], "deny": []},
    "subscribe": {"allow": [">"], "deny": ["secret.>"]},
}


async def test_a_forbidden_publish_raises_at_the_sender_and_the_node_drops_what_slips_by(
    node: NodeFactory,
) -> None:
    """PermissionDenied at send; with the app's own check bypassed, the node drops the message,
    counts it, and the link stays up for allowed ones."""
    a = await node(authority=parse_authority({"identities": [SENSORS]}))
    got: asyncio.Queue[Message] = asyncio.Queue(8)
    a.connect().on(got.put_nowait)
    async with gravpy.connect(a.endpoints()[0], hub_config=FAST, token="sensor-token") as app:
        pod = app.connect()
        with pytest.raises(PermissionDenied, match=r"motor\.run"):
            pod.send(Message.new("motor.run", b""))
        assert app.hub is not None
        app.hub.traffic.grant = None  # a misbehaving app that skips its own check
        pod.send(Message.new("motor.run", b"forbidden"))
        pod.send(Message.new("sensor.temp", b"allowed"))
        async with asyncio.timeout(5):
            first = await got.get()
        assert (first.type, first.data) == ("sensor.temp", b"allowed")
        assert got.empty()
        assert a.hub is not None
        assert a.hub.traffic.gate.denied_publish == 1
        assert [p.state for p in app.peers()] == ["open"]


async def test_an_app_receives_only_what_it_may_and_replies_always(node: NodeFactory) -> None:
    """A pod on '>' gets no secret.* message; on_type('secret.>') raises; a reply of a
    forbidden type to the app's own request still reaches it."""
    a = await node(authority=parse_authority({"identities": [SENSORS]}))
    responder = a.connect()
    responder.on_type(
        "sensor.ask", lambda m: responder.reply_to(m, Message.new("secret.answer", b"42"))
    )
    async with gravpy.connect(a.endpoints()[0], hub_config=FAST, token="sensor-token") as app:
        pod = app.connect()
        with pytest.raises(PermissionDenied, match="secret"):
            pod.on_type("secret.>", lambda m: None)
        got: asyncio.Queue[Message] = asyncio.Queue(8)
        pod.on(got.put_nowait)
        await a.wait_for(linked_to(app, interest=">"), timeout=5)
        sender = a.connect()
        sender.send(Message.new("secret.plan", b"no"))
        sender.send(Message.new("public.news", b"yes"))
        async with asyncio.timeout(5):
            first = await got.get()
        assert first.type == "public.news"
        reply = await app.connect().send(Message.new("sensor.ask", b"")).wait_until(5)
        assert (reply.type, reply.data) == ("secret.answer", b"42")


async def test_a_forged_reply_is_checked_like_any_message(node: NodeFactory) -> None:
    """A message whose reply_to names no request or process known here is routed by type, so the
    rules apply: an app may not publish a forbidden type by calling it a reply (dropped,
    counted), and a forbidden type dressed as a reply reaches no app that may not receive it."""
    a = await node(authority=parse_authority({"identities": [SENSORS]}))
    on_node: asyncio.Queue[Message] = asyncio.Queue(8)
    a.connect().on(on_node.put_nowait)
    async with gravpy.connect(a.endpoints()[0], hub_config=FAST, token="sensor-token") as app:
        pod = app.connect()
        got: asyncio.Queue[Message] = asyncio.Queue(8)
        pod.on(got.put_nowait)
        await a.wait_for(linked_to(app, interest=">"), timeout=5)
        never_asked = "0f1e2d3c4b5a69788796" + "a5b4c3d2e1f0"  # a process nobody here runs
        forged = Message.new("motor.run", b"forged")
        forged.reply_to = never_asked
        pod.send(forged)  # (the app's own check lets replies by: the node must not)
        sneaked = Message.new("secret.plan", b"forged")
        sneaked.reply_to = never_asked
        a.connect().send(sneaked)
        a.connect().send(Message.new("public.news", b"after"))
        pod.send(Message.new("sensor.temp", b"allowed"))
        async with asyncio.timeout(5):
            seen_here = [await on_node.get() for _ in range(3)]
            first = await got.get()
        assert [m.type for m in seen_here] == ["secret.plan", "public.news", "sensor.temp"]
        assert (first.type, first.data) == ("public.news", b"after")
        assert got.empty()
        assert a.hub is not None
        assert a.hub.traffic.gate.denied_publish == 1
        assert [p.state for p in app.peers()] == ["open"]


def test_rules_narrow_a_pattern_to_the_part_they_allow() -> None:
    """narrowed() meets a pattern with each allow pattern, drops what a deny covers whole, and
    keeps no pattern inside another."""
    sensors = TypeRules(allow=("sensor.*",))
    assert sensors.narrowed(">") == ("sensor.*",)
    assert sensors.narrowed("grp.*") == ()
    assert TypeRules(allow=("a.>",)).narrowed("*.b") == ("a.b",)
    assert TypeRules(allow=("a.*", "a.b")).narrowed(">") == ("a.*",)
    no_secrets = TypeRules(allow=(">",), deny=("secret.>",))
    assert no_secrets.narrowed("secret.x") == ()
    assert no_secrets.narrowed(">") == (">",)  # (a deny of part of it cannot be cut out)
    assert TypeRules(allow=("x",)).narrowed("x.>") == ()
    assert TypeRules().narrowed("a.b") == ("a.b",)


async def test_an_app_may_answer_with_any_type_only_what_it_was_sent(node: NodeFactory) -> None:
    """An answer of a type the app may not publish passes only for a message the node sent to
    the app: one to a request it was never sent (its id guessed) is dropped and counted."""
    a = await node(authority=parse_authority({"identities": [SENSORS]}))
    asker = a.connect()
    a.connect().on_type("ops.status", lambda m: None)  # takes it, does not answer
    async with gravpy.connect(a.endpoints()[0], hub_config=FAST, token="sensor-token") as app:
        pod = app.connect()
        asked: asyncio.Queue[Message] = asyncio.Queue(8)
        pod.on_type("sensor.ask", asked.put_nowait)
        await a.wait_for(linked_to(app, interest="sensor.ask"), timeout=5)
        unseen = asker.send(Message.new("ops.status", b"not for the app"))
        forged: list[Message] = []
        unseen.on_reply(forged.append)
        delivered = asker.send(Message.new("sensor.ask", b""))
        async with asyncio.timeout(5):
            request = await asked.get()
        guessed = Message.new("motor.run", b"forged")
        guessed.reply_to = unseen.uuid  # (ids are predictable: the app could work this one out)
        pod.send(guessed)
        pod.reply_to(request, Message.new("secret.answer", b"42"))  # after it, on one link
        reply = await delivered.wait_until(5)
        assert (reply.type, reply.data) == ("secret.answer", b"42")
        assert forged == []
        assert a.hub is not None
        assert a.hub.traffic.gate.denied_publish == 1
        assert [p.state for p in app.peers()] == ["open"]
