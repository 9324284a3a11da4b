"""A LAN on one machine: network namespaces joined by a bridge, one per "host".

``LanBed(n)`` makes a switch namespace holding a bridge and ``n`` host namespaces, each joined to
the bridge by a veth pair and given an address in 10.213.<k>.0/24 (a range that exists only inside
these namespaces: nothing is routed to or from the machine's own interfaces). Each host has its
own loopback and ``eth0``. ``close()`` deletes every namespace it made, which also removes their
links, and kills any process still running in them; it runs even when a test fails.

Needs root and ``ip`` (iproute2); ``LanBed.available()`` says whether they work here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

_subnets = itertools.count(1)


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class Host:
    """One host of the bed: its namespace and address."""

    index: int
    netns: str
    address: str
    iface: str = "eth0"

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def link_down(self) -> None:
        """Cut this host off the LAN (its cable pulled)."""
        _ip("link", "set", self.iface, "down", netns=self.netns)

    def link_up(self) -> None:
        _ip("link", "set", self.iface, "up", netns=self.netns)


@dataclass
class LanBed:
    """Namespaces joined by a bridge; see the module docstring."""

    size: int
    hosts: list[Host] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    @staticmethod
    def available() -> str | None:
        """None if namespaces can be made here, else why not."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "iproute2 ('ip') is not installed"
        probe = f"gp-probe-{secrets.token_hex(3)}"
        try:
            _ip("netns", "add", probe)
        except (subprocess.CalledProcessError, OSError) as exc:
            return f"cannot create a network namespace: {exc}"
        _ip("netns", "del", probe)
        return None

    def __enter__(self) -> LanBed:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        tag = secrets.token_hex(3)
        subnet = next(_subnets) % 250
        switch = f"gp-sw-{tag}"
        self._add_netns(switch)
        _ip("link", "add", "br0", "type", "bridge", netns=switch)
        # let multicast (mDNS) flood every port, as a plain switch does
        _ip("link", "set", "br0", "type", "bridge", "mcast_snooping", "0", netns=switch)
        _ip("link", "set", "br0", "up", netns=switch)
        for i in range(self.size):
            netns = f"gp-h{i}-{tag}"
            self._add_netns(netns)
            port = f"p{i}"
            _ip(
                "link",
                "add",
                "eth0",
                "netns",
                netns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                switch,
            )
            _ip("link", "set", port, "master", "br0", netns=switch)
            _ip("link", "set", port, "up", netns=switch)
            address = f"10.213.{subnet}.{i + 1}"
            _ip("addr", "add", f"{address}/24", "dev", "eth0", netns=netns)
            _ip("link", "set", "eth0", "multicast", "on", netns=netns)
            _ip("link", "set", "eth0", "up", netns=netns)
            _ip("link", "set", "lo", "up", netns=netns)
            self.hosts.append(Host(i, netns, address))

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)

    def close(self) -> None:
        """Kill what still runs in the namespaces and delete them (idempotent)."""
        for name in reversed(self._namespaces):
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                pids = subprocess.run(
                    ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
                ).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), 9)
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                _ip("netns", "del", name)
        self._namespaces.clear()
        self.hosts.clear()
