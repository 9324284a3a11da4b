"""An in-process monitor on 127.0.0.1 for tests that speak real HTTP to it, and its metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gravpy import Grav
from gravpy.daemon.config import Address, DaemonConfig
from gravpy.daemon.events_node import DaemonEvents
from gravpy.daemon.monitor import Monitor, NodeStatus


@dataclass
class Served:
    """A running monitor (dashboard and events routes, events in memory) and its node."""

    grav: Grav
    monitor: Monitor
    base: str  # http://127.0.0.1:PORT

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def pods(self) -> int:
        return self.grav.statistics().pods


@asynccontextmanager
async def served_monitor(**limits: Any) -> AsyncIterator[Served]:
    """A loopback monitor with no token file (the default) and these ``Monitor`` limits."""
    async with Grav() as grav:
        config = DaemonConfig()
        status = NodeStatus(grav, config)
        status.events = await DaemonEvents.open(grav, config, in_memory=True)
        monitor = Monitor(status, Address("127.0.0.1", 0), **limits)
        try:
            yield Served(grav, monitor, f"http://{await monitor.start()}")
        finally:
            await monitor.stop()
            await status.events.close()


async def metric(base: str, name: str) -> float:
    """The value of the sample ``name`` on the monitor's /metrics."""
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
        text = await response.text()
    return next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on 127.0.0.1 (port 0) until the block ends; its base URL."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
