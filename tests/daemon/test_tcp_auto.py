"""gravd's TCP listener by default (``listen_tcp = auto``): beside ``listen``, off if taken."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from gravpy.daemon.config import load_config_with_sources
from gravpy.daemon.parsers import Address


@pytest.fixture
def free_pair() -> Iterator[int]:
    """A port P on 127.0.0.1 such that P + 2 is free too (P itself is left free)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 2 > 65535:
            continue
        with socket.socket() as t:
            try:
                t.bind(("127.0.0.1", port + 2))
            except OSError:
                continue
        yield port
        return
    pytest.skip("no free pair of ports found")


def test_auto_listens_beside_the_websocket_port(free_pair: int) -> None:
    """By default TCP listens on listen's host at its port + 2, and says it is the default."""
    config, sources = load_config_with_sources({"listen": f"127.0.0.1:{free_pair}"}, {})
    assert config.listen_tcp == Address("127.0.0.1", free_pair + 2)
    assert sources["listen_tcp"] == "default"


def test_auto_beside_port_0_takes_any_free_port() -> None:
    """Beside --listen HOST:0 (tests, ad-hoc nodes) TCP also takes any free port."""
    config, _ = load_config_with_sources({"listen": "127.0.0.1:0"}, {})
    assert config.listen_tcp == Address("127.0.0.1", 0)


def test_auto_is_off_when_its_port_is_taken(free_pair: int) -> None:
    """A taken port + 2 turns TCP off (gravd still starts) and the source says why."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_pair + 2))
        holder.listen()
        config, sources = load_config_with_sources({"listen": f"127.0.0.1:{free_pair}"}, {})
    assert config.listen_tcp is None
    assert "taken" in sources["listen_tcp"]


def test_auto_steps_aside_for_the_http_listener(free_pair: int) -> None:
    """If --listen-http takes port + 2, auto does not fight it for the port: TCP is off."""
    flags = {"listen": f"127.0.0.1:{free_pair}", "listen_http": f"127.0.0.1:{free_pair + 2}"}
    config, _ = load_config_with_sources(flags, {})
    assert config.listen_tcp is None
    assert config.listen_http == Address("127.0.0.1", free_pair + 2)


def test_off_and_an_address_are_taken_as_given() -> None:
    """'off' turns TCP off; an explicit address is used as is, from the environment too."""
    off, _ = load_config_with_sources({"listen": "127.0.0.1:0", "listen_tcp": "off"}, {})
    assert off.listen_tcp is None
    env = {"GRAVD_LISTEN_TCP": "127.0.0.1:0"}
    given, sources = load_config_with_sources({"listen": "127.0.0.1:0"}, env)
    assert given.listen_tcp == Address("127.0.0.1", 0)
    assert sources["listen_tcp"] == "environment GRAVD_LISTEN_TCP"
