"""Fixtures for the bridge tests: real nats-server processes (one, or a cluster of two)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.bridge.nats_proc import NatsServer, nats_cluster

MAX_PAYLOAD = 65_536  # ``small_nats``'s: a message over it is far under the mesh's limit
BIG = b"x" * MAX_PAYLOAD  # over max_payload once the NATS headers are added


@pytest.fixture
async def nats_pair(tmp_path: Path) -> AsyncIterator[list[NatsServer]]:
    """A cluster of two nats-server processes on 127.0.0.1, routed to each other."""
    async with nats_cluster(tmp_path, 2) as servers:
        yield servers


@pytest.fixture
async def nats_one(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """One nats-server on 127.0.0.1."""
    async with nats_cluster(tmp_path, 1) as servers:
        yield servers[0]


@pytest.fixture
async def small_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """One nats-server on 127.0.0.1 with a max_payload of 64 KiB."""
    server = NatsServer("small", tmp_path / "nats.log", config=f"max_payload: {MAX_PAYLOAD}\n")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
