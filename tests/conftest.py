"""Shared test fixtures: every async test fails if it leaves a task running, and every process a
test starts keeps its state in the session's temporary directory, never the user's."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Iterator

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.usefixtures("_no_task_leaks"))


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """gravd and gravctl started by a test (without a state dir of their own, as
    ``running_gravd`` gives) keep their files under the session's temp dir: no test reads or
    leaves a durable replay buffer in ``~/.local/state``."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if before is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = before


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
