"""``wait_idle``: wait until a node's pods have handled everything delivered to them."""

from __future__ import annotations

import asyncio

from gravpy.errors import WaitTimeout
from gravpy.grav import Grav

__all__ = ["wait_idle"]


async def wait_idle(grav: Grav, timeout: float = 5.0) -> None:
    """Let the loop run until every pod of ``grav`` is idle (``Pod.idle``).

    A test that asserts something did *not* arrive calls this first: once every pod with a
    consumer has an empty inbox and no drain is scheduled or running (a pod with none holds
    what came), whatever was sent before has been handled. Raises
    ``WaitTimeout`` after ``timeout`` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            while not all(pod.idle for pod in grav.bus.pods()):  # noqa: ASYNC110 - no idle event
                await asyncio.sleep(0)  # drains run on later loop turns; each turn re-checks
    except TimeoutError:
        raise WaitTimeout(f"pods still busy after {timeout} s") from None
