"""One supervisor for the tasks an object owns: failures are logged, ``close`` ends them all.

The bus and the hub each own one. A task started with ``spawn`` is kept until it ends; when it
ends with an exception (other than those the owner says to ignore) the failure is logged with the
task's name, never lost. ``close`` cancels and awaits every task, including any that the
cancelled ones start while ending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["TaskSupervisor"]


class TaskSupervisor:
    """Owns tasks: ``spawn`` starts one, ``close`` cancels and awaits them all."""

    __slots__ = ("_ignore", "_log", "_tasks")

    def __init__(self, log: Any, ignore: tuple[type[BaseException], ...] = ()) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = log
        self._ignore = ignore

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in a task owned by this supervisor."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, self._ignore):
            self._log.error("task_failed", task=task.get_name(), error=repr(exc), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task and wait for all of them (and for any they start meanwhile)."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
