"""Tests for gravpy.plugins: the entry-point registry and the plugin records."""

from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint

import pytest

from discovery.static import StaticDiscovery
from gravpy import plugins
from gravpy.errors import UsageError
from gravpy.plugins import (
    DISCOVERY_GROUP,
    TRANSPORT_GROUP,
    PeerReport,
    available_discovery,
    available_transports,
    load_discovery,
    load_transport,
    transport_preference,
)
from gravpy.testing import MemoryTransport
from transports.websocket import WebSocketTransport


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> None:
    """Make the registry see exactly ``eps`` as installed entry points."""

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(plugins, "entry_points", entry_points)


def test_builtin_websocket_transport_loads() -> None:
    """load_transport("websocket") returns WebSocketTransport even before installation."""
    assert load_transport("websocket") is WebSocketTransport


def test_builtin_static_discovery_loads() -> None:
    """load_discovery("static") returns StaticDiscovery."""
    assert load_discovery("static") is StaticDiscovery


def test_unknown_transport_names_the_known_ones() -> None:
    """An unknown name raises UsageError that lists the known transports."""
    with pytest.raises(UsageError, match=r"unknown transport plugin 'carrier-pigeon'.*websocket"):
        load_transport("carrier-pigeon")


def test_unknown_discovery_names_the_known_ones() -> None:
    """An unknown discovery name raises UsageError that lists the known ones."""
    with pytest.raises(UsageError, match=r"unknown discovery plugin 'dns'.*static"):
        load_discovery("dns")


def test_available_lists_include_the_builtins() -> None:
    """The built-ins are listed even without installed entry points."""
    assert "websocket" in available_transports()
    assert "static" in available_discovery()


def test_third_party_entry_point_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin registered under gravpy.transports loads by its name and is listed."""
    ep = EntryPoint("memory", "gravpy.testing:MemoryTransport", TRANSPORT_GROUP)
    _fake_entry_points(monkeypatch, ep)
    assert load_transport("memory") is MemoryTransport
    assert available_transports() == ["http", "memory", "tcp", "websocket"]


def test_entry_point_wins_over_the_builtin_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed entry point with a built-in's name replaces the fallback."""
    ep = EntryPoint("static", "gravpy.testing:MemoryTransport", DISCOVERY_GROUP)
    _fake_entry_points(monkeypatch, ep)
    loaded: object = load_discovery("static")
    assert loaded is MemoryTransport


def test_broken_entry_point_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin whose module cannot be imported raises UsageError naming it."""
    ep = EntryPoint("ghost", "no_such_module_here:Ghost", TRANSPORT_GROUP)
    _fake_entry_points(monkeypatch, ep)
    with pytest.raises(UsageError, match=r"'ghost'.*failed to load") as info:
        load_transport("ghost")
    assert isinstance(info.value.__cause__, ImportError)


def test_non_callable_plugin_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin that is not a class or factory raises UsageError."""
    ep = EntryPoint("constant", "gravpy.plugins:TRANSPORT_GROUP", TRANSPORT_GROUP)
    _fake_entry_points(monkeypatch, ep)
    with pytest.raises(UsageError, match="not a class or factory"):
        load_transport("constant")


def test_peer_report_is_frozen_with_defaults() -> None:
    """A PeerReport needs only an endpoint and cannot be changed."""
    report = PeerReport("ws://10.0.0.5:8080/meta/message")
    assert (report.node_uuid, report.source) == (None, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.endpoint = "elsewhere"  # type: ignore[misc]


def test_transports_rank_tcp_then_websocket_then_http() -> None:
    """The built-in transports state their preference; a transport stating none ranks last."""
    ranked = sorted(
        ["http", "websocket", "tcp"], key=lambda n: transport_preference(load_transport(n))
    )
    assert ranked == ["tcp", "websocket", "http"]
    assert transport_preference(object()) == 100
