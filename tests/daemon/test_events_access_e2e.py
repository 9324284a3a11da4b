"""gravd's /v1/events behind the dashboard token when the monitor listens beyond loopback."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp

from gravpy.testing.gravd import Gravd, running_gravd

TOKEN = "events-token-0123456789abcdef"
BEYOND = ("--monitor", "0.0.0.0:0", "--discovery", "none")  # reached below through 127.0.0.1


def local_monitor(node: Gravd) -> str:
    """The monitor's base URL on 127.0.0.1 (it listens on every interface)."""
    return "http://127.0.0.1:" + str(node.listening["monitor"]).rsplit(":", 1)[1]


async def statuses(base: str, headers: dict[str, str]) -> list[int]:
    """The status of a list, a stream, a mark and a delete of ``/v1/events`` with ``headers``."""
    some_id = str(uuid.uuid4())
    asks = [
        ("GET", "/v1/events"),
        ("GET", f"/v1/events/stream?user={uuid.uuid4()}"),
        ("PATCH", f"/v1/events/{some_id}"),
        ("DELETE", f"/v1/events/{some_id}"),
    ]
    found = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for method, path in asks:
            body = {"status": "read"} if method == "PATCH" else None
            async with http.request(method, base + path, json=body) as response:
                found.append(response.status)  # a stream answers 200 at once; not read on
    return found


async def test_events_need_the_dashboard_token_beyond_loopback(tmp_path: Path) -> None:
    """On a monitor beyond loopback with a token file, every /v1/events route answers 401
    without the token and serves it with it; /healthz needs none."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with running_gravd(*BEYOND, "--dashboard-token-file", str(token_file)) as node:
        base = local_monitor(node)
        assert await statuses(base, {}) == [401, 401, 401, 401]
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert await statuses(base, bearer) == [200, 200, 404, 404]  # an unknown id: 404
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        assert await statuses(base, wrong) == [401, 401, 401, 401]
        async with aiohttp.ClientSession() as http, http.get(base + "/healthz") as response:
            assert response.status == 200


async def test_events_beyond_loopback_without_a_token_file_are_refused(tmp_path: Path) -> None:
    """Beyond loopback with no token file, /v1/events answers 403 saying what to set; on a
    loopback monitor it stays open."""
    async with running_gravd(*BEYOND) as node:
        assert await statuses(local_monitor(node), {}) == [403, 403, 403, 403]
    async with running_gravd() as node:
        assert await statuses(node.monitor, {}) == [200, 200, 404, 404]
