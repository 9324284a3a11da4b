"""Shared test fixtures: every async test fails if it leaves a task running."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.usefixtures("_no_task_leaks"))


@pytest.fixture
async def _no_task_leaks() -> AsyncIterator[None]:
    """Fail the test if tasks it started are still pending when it ends."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    for _ in range(5):  # let tasks that are finishing (already cancelled, closing) run out
        leaked = asyncio.all_tasks() - before - {current}
        if not leaked:
            return
        await asyncio.sleep(0)
    names = sorted(t.get_name() + ": " + repr(t.get_coro()) for t in leaked)
    for task in leaked:
        task.cancel()
    pytest.fail(f"test leaked {len(leaked)} task(s): {names}")
