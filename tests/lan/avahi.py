"""Debian's Avahi on one host of a LanBed: an mDNS implementation that is not ours.

``avahi-browse`` and ``avahi-publish`` only talk to ``avahi-daemon`` over D-Bus, and the daemon
wants a *system* bus. None is used from the machine: :class:`Avahi` starts, all in a temporary
directory removed on exit,

1. a private bus, ``dbus-daemon --config-file=bus.conf --nofork --nopidfile --print-address``;
   ``bus.conf`` declares ``<type>system</type>``, listens on ``unix:path=<tmp>/bus`` and allows
   everything (the stock system-bus policy lets only root or the ``avahi`` user own
   ``org.freedesktop.Avahi``; ours need not care who runs the test);
2. ``avahi-daemon --file=avahi-daemon.conf --no-drop-root --no-chroot --no-rlimits
   --no-proc-title`` inside the host's namespace, with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at
   that bus (libdbus honours it for the system bus). The config allows ``eth0`` only, IPv4 only,
   D-Bus on, and a fixed host name. The daemon runs under ``sh -c 'mount -t tmpfs ... /run &&
   exec avahi-daemon ...'``: ``ip netns exec`` gives each command a private mount namespace, so
   the tmpfs hides the machine's ``/run`` from this daemon only, and its pid file and socket
   (``/run/avahi-daemon/``) neither clash with a system avahi-daemon nor outlive it;
3. ``avahi-browse`` / ``avahi-publish`` in the same namespace with the same bus address.

Readiness is read from output: the bus prints its address, the daemon logs "Server startup
complete", avahi-publish prints "Established under name". Every process is stopped by its handle
when the stack unwinds. Needs the Debian packages avahi-daemon, avahi-utils and dbus
(``dbus-daemon``); :func:`avahi_problem` says what is missing.
"""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from gravpy.testing.gravd import Process
from gravpy.testing.lan.bed import Host

TOOLS = ("avahi-daemon", "avahi-browse", "avahi-publish", "dbus-daemon")

_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

_AVAHI_CONF = """[server]
host-name={host_name}
use-ipv4=yes
use-ipv6=no
allow-interfaces={iface}
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-hinfo=no
publish-workstation=no
"""

_TXT_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def avahi_problem() -> str | None:
    """None if Avahi and D-Bus are installed, else what is missing and how to get it."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install avahi-daemon avahi-utils dbus)"
    return None


@dataclass(frozen=True)
class Resolved:
    """One ``=`` line of ``avahi-browse --resolve --parsable``."""

    iface: str
    name: str
    service_type: str
    host_name: str
    address: str
    port: int
    txt: dict[str, str]


def parse_resolved(line: str) -> Resolved | None:
    """The resolved record on ``line``, or None if it is another kind of line."""
    fields = line.split(";", 9)
    if len(fields) != 10 or fields[0] != "=":
        return None
    _, iface, _, name, service_type, _, host_name, address, port, txt = fields
    entries = (_unescape(raw).partition("=") for raw in _TXT_STRING.findall(txt))
    return Resolved(
        iface, name, service_type, host_name, address, int(port), {k: v for k, _, v in entries}
    )


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class Avahi:
    """avahi-daemon (and its private D-Bus) on ``host``; see the module docstring."""

    def __init__(self, host: Host, stack: AsyncExitStack) -> None:
        self.host = host
        self.stack = stack
        self.env: dict[str, str] = {}
        self.daemon: Process | None = None
        self.processes: list[Process] = []

    async def start(self) -> None:
        """Start the bus and the daemon; return once the daemon is serving."""
        tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="gp-avahi-")))
        if tmp.is_relative_to("/run"):  # the daemon sees a fresh /run: its config must be elsewhere
            raise RuntimeError(f"TMPDIR {tmp.parent} is under /run; point it elsewhere")
        (tmp / "bus.conf").write_text(_BUS_CONF.format(socket=tmp / "bus"))
        (tmp / "avahi-daemon.conf").write_text(
            _AVAHI_CONF.format(host_name=f"gp-avahi-{self.host.index}", iface=self.host.iface)
        )
        bus_argv = ["dbus-daemon", f"--config-file={tmp / 'bus.conf'}", "--nofork", "--nopidfile"]
        bus = await self._start("dbus", [*bus_argv, "--print-address"])
        address = await bus.wait_line(lambda line: line.startswith("unix:"), stream="stdout")
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": address.strip()}
        daemon_argv = [
            "avahi-daemon", f"--file={tmp / 'avahi-daemon.conf'}",
            "--no-drop-root", "--no-chroot", "--no-rlimits", "--no-proc-title",
        ]  # fmt: skip
        private_run = "mount -t tmpfs gp-avahi-run /run && exec " + shlex.join(daemon_argv)
        self.daemon = await self._start("avahi-daemon", ["sh", "-c", private_run])
        await self.daemon.wait_line(lambda line: "Server startup complete" in line)

    async def browse(self, service_type: str) -> Process:
        """``avahi-browse --resolve --parsable`` of ``service_type`` (e.g. ``_grav._tcp``), running."""
        return await self._start("avahi-browse", ["avahi-browse", "-r", "-p", "-k", service_type])

    async def publish(
        self, name: str, service_type: str, port: int, txt: dict[str, str]
    ) -> Process:
        """``avahi-publish -s``: the record stays published while the process runs."""
        entries = [f"{key}={value}" for key, value in txt.items()]
        argv = ["avahi-publish", "-s", name, service_type, str(port), *entries]
        publisher = await self._start("avahi-publish", argv)
        await publisher.wait_line(lambda line: "Established under name" in line)
        return publisher

    async def _start(self, name: str, argv: list[str]) -> Process:
        process = await Process.start(self.host.exec_argv(argv), env=self.env)
        process.name = name
        self.stack.push_async_callback(process.close)
        self.processes.append(process)
        return process

    def digest(self) -> str:
        """What every Avahi and D-Bus process printed (for a failed test's report)."""
        return "\n".join(
            f"== {p.name}\n  stdout {p.stdout}\n  stderr {p.stderr}" for p in self.processes
        )
