"""Socket addresses as transports print and advertise them; shared by every built-in transport."""

from __future__ import annotations

import socket

__all__ = ["format_address", "wildcard_hosts"]


def format_address(address: object) -> str:
    """``"host:port"`` (``"[v6]:port"``) from a socket address tuple."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def wildcard_hosts(family: int) -> list[str]:
    """Addresses to advertise for a wildcard bind: the default-route interface's, then loopback."""
    probe, loopback = ("192.0.2.1", "127.0.0.1")  # TEST-NET-1: never routed, nothing is sent
    if family == socket.AF_INET6:
        probe, loopback = ("2001:db8::1", "::1")
    guesses: list[str] = []
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))  # a UDP connect only picks a route; no packet leaves
            guesses.append(str(udp.getsockname()[0]))
    except OSError:
        pass  # no route: loopback only
    return [g for g in guesses if g != loopback] + [loopback]
