"""Real ``gravd`` and ``gravctl`` processes for end-to-end tests and benchmarks.

``running_gravd()`` starts gravd on 127.0.0.1 port 0 (node and monitor), reads its JSON log lines
from stderr until the ``listening`` event tells the real ports, and kills the process in its
``finally`` if the test did not stop it. Every line a process prints is collected by a reader task
the ``Process`` owns (so a chatty child never blocks on a full pipe), and tests wait on those lines.

The only waits here are on lines, process exits and HTTP answers; ``wait_http`` re-asks the
monitor until a condition holds (the mesh's interests propagate with no event a test can see).
The test's hang guard is pytest-timeout (``PYTEST_TIMEOUT`` raises it on a slow machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gravpy.filter import Pattern

ROOT = Path.cwd()  # where processes run: the repository root when tests or benchmarks run
GRAVD = (sys.executable, "-m", "gravpy.daemon.main")
GRAVCTL = (sys.executable, "-m", "gravpy.cli.main")
LOCAL = ("--listen", "127.0.0.1:0", "--monitor", "127.0.0.1:0")
_POLL = 0.02


# The longest output line read whole (a /v1/node document printed on one line can pass asyncio's
# default of 64 KiB; a longer line would end the reader, and every wait after it)
_LINE_LIMIT = 16 * 1024 * 1024


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any GRAVD_*/GRAVCTL_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAVD_", "GRAVCTL_"))}
    env.update(extra or {})
    return env


@dataclass
class Result:
    """How a finished process ended and what it printed."""

    code: int
    stdout: str
    stderr: str


class Process:
    """A child process whose output lines are collected as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Condition()
        self._readers = [
            asyncio.create_task(self._read(proc.stdout, self.stdout), name=f"{name}-stdout"),
            asyncio.create_task(self._read(proc.stderr, self.stderr), name=f"{name}-stderr"),
        ]

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        cwd: Path = ROOT,
    ) -> Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=clean_env(env),
            cwd=cwd,
            limit=_LINE_LIMIT,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            await proc.stdin.drain()
            proc.stdin.close()
            await proc.stdin.wait_closed()
        return cls(proc, Path(argv[2] if argv[0] == sys.executable else argv[0]).name)

    async def _read(self, stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            async with self._changed:
                into.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    @property
    def eof(self) -> bool:
        return all(t.done() for t in self._readers)

    async def wait_line(self, predicate: Callable[[str], bool], *, stream: str = "stderr") -> str:
        """The first line (past or future) of ``stream`` that ``predicate`` accepts."""
        lines = self.stderr if stream == "stderr" else self.stdout
        checked = 0
        async with self._changed:
            while True:
                for line in lines[checked:]:
                    if predicate(line):
                        return line
                checked = len(lines)
                if self.eof:
                    raise AssertionError(
                        f"{self.name} ended (code {self.proc.returncode}) without the line; "
                        f"stdout={self.stdout!r} stderr={self.stderr!r}"
                    )
                await self._changed.wait()

    async def wait_event(self, event: str, **fields: object) -> dict[str, Any]:
        """The first JSON log line on stderr for ``event`` with these field values."""

        def matches(line: str) -> bool:
            record = json_object(line)
            return record.get("event") == event and all(
                record.get(k) == v for k, v in fields.items()
            )

        return json_object(await self.wait_line(matches))

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line printed on stderr so far."""
        return [r for r in map(json_object, self.stderr) if r]

    async def wait(self) -> Result:
        """Wait for the process to exit and its output to end."""
        code = await self.proc.wait()
        await asyncio.gather(*self._readers)
        return Result(code, "\n".join(self.stdout), "\n".join(self.stderr))

    def signal(self, signum: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signum)

    async def close(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.wait()


def json_object(line: str) -> dict[str, Any]:
    """``line`` as a JSON object, or ``{}`` if it is not one (a log line, a traceback)."""
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: bytes | None = None
) -> Result:
    """Run a command to completion."""
    proc = await Process.start(argv, env=env, stdin=stdin)
    try:
        return await proc.wait()
    finally:
        await proc.close()


async def gravctl(
    *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
) -> Result:
    """Run ``gravctl ARGS`` to completion."""
    return await run([*GRAVCTL, *args], env=env, stdin=stdin)


@dataclass
class Gravd:
    """A running gravd and what its ``listening`` event said."""

    process: Process
    listening: dict[str, Any]
    session: aiohttp.ClientSession = field(repr=False)

    @property
    def uuid(self) -> str:
        return str(self.listening["node"])

    @property
    def endpoint(self) -> str:
        return str(self.listening["endpoints"][0])

    @property
    def monitor(self) -> str:
        return f"http://{self.listening['monitor']}"

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.monitor + path) as response:
            return response.status, await response.text()

    async def node(self) -> dict[str, Any]:
        status, body = await self.get("/v1/node")
        assert status == 200, body
        value = json.loads(body)
        assert isinstance(value, dict)
        return value

    async def wait_http(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Re-read ``/v1/node`` until ``check`` accepts it."""
        while True:
            node = await self.node()
            if check(node):
                return node
            await asyncio.sleep(_POLL)  # mesh state has no event to wait on; re-ask

    async def wait_interest(self, msg_type: str) -> dict[str, Any]:
        """Wait until a link of this node says it wants ``msg_type`` (the mesh can route it)."""
        return await self.wait_http(lambda node: wants(node, msg_type))

    async def wait_peers(self, n: int) -> dict[str, Any]:
        """Wait until this node has ``n`` open peer links."""
        return await self.wait_http(
            lambda node: sum(p["state"] == "open" for p in node["peers"]) == n
        )

    async def stop(self, signum: int = signal.SIGTERM) -> Result:
        self.process.signal(signum)
        return await self.process.wait()


def wants(node: Mapping[str, Any], msg_type: str) -> bool:
    """True if some link of ``node`` (a ``/v1/node`` document) admits ``msg_type`` (for its
    ungrouped pods or for a group)."""
    return any(
        Pattern(p).matches(msg_type)
        for link in [*node["peers"], *node["leaves"]]
        if link["state"] == "open"
        for p in [*link["interests"], *(entry[1] for entry in link.get("groups", ()))]
    )


@asynccontextmanager
async def running_gravd(
    *args: str,
    env: Mapping[str, str] | None = None,
    local: bool = True,
    command: Sequence[str] = GRAVD,
) -> AsyncIterator[Gravd]:
    """A gravd on 127.0.0.1 port 0 (unless ``local`` is False), killed on exit if still running.

    ``command`` runs gravd some other way (the README's ``.venv/bin/gravd``). Unless the test
    says otherwise (``--data-dir``, ``XDG_STATE_HOME``), gravd keeps its files in a temporary
    state directory of its own, removed afterwards.
    """
    argv = [*command, *(LOCAL if local else ()), *args]
    with tempfile.TemporaryDirectory(prefix="gravd-state-") as state:
        async with _started(argv, {"XDG_STATE_HOME": state, **(env or {})}) as gravd:
            yield gravd


@asynccontextmanager
async def _started(argv: Sequence[str], env: Mapping[str, str]) -> AsyncIterator[Gravd]:
    process = await Process.start(argv, env=env)
    try:
        listening = await process.wait_event("listening")
        async with aiohttp.ClientSession() as session:
            yield Gravd(process, listening, session)
    finally:
        await process.close()


def loopback_multicast_problem() -> str | None:
    """Why multicast does not go round on 127.0.0.1 here (mDNS tests skip), or None if it does."""
    group, payload = "224.0.0.251", b"gravd-mdns-probe"
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("", 0))
            membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1"))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            rx.settimeout(2.0)  # a blocking receive in a sync helper, bounded
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.sendto(payload, (group, rx.getsockname()[1]))
            while rx.recv(64) != payload:
                pass
    except OSError as exc:
        return f"multicast on 127.0.0.1 does not work here: {exc!r}"
    return None
