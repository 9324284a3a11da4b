"""``gravctl events --follow`` against a real gravd process that goes away."""

from __future__ import annotations

import asyncio

from gravpy.testing.gravd import GRAVCTL, Process, running_gravd

GUARD = 15.0  # seconds: a hang guard, never a timing expectation


async def test_follow_says_so_and_exits_4_when_gravd_stops() -> None:
    """gravctl events --follow, following a gravd that then stops, prints that the link to gravd
    closed and exits 4 (instead of following on after a redial, past a gap it never shows)."""
    async with running_gravd() as gravd:
        follow = await Process.start([*GRAVCTL, "--url", gravd.endpoint, "events", "--follow"])
        try:
            async with asyncio.timeout(GUARD):
                await follow.wait_line(lambda line: "event(s)" in line)  # the page's footer
                assert (await gravd.stop()).code == 0
                result = await follow.wait()
        finally:
            await follow.close()
    assert result.code == 4, result.stderr
    assert "the live events stopped: the link to gravd closed" in result.stderr
