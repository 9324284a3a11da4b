"""A blocking API for code without asyncio: ``gravpy.sync.connect(url)``.

The node runs its event loop in a background thread that this module owns; every call here hands
work to that loop and waits for the result. Handlers set with ``on``/``on_type`` run in that
thread, one message at a time, so they must not block for long (hand heavy work to your own
threads). Everything raises the same exceptions as the async API.

::

    with gravpy.sync.connect("ws://127.0.0.1:8080/meta/message") as g:
        reply = g.connect().send(Message.new("svc.echo", b"hi")).wait_until(2.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import CancelledError, Future
from types import TracebackType
from typing import Any, TypeVar

from gravpy._mailbox import check_timeout
from gravpy.errors import PodDisconnected, UsageError, WaitTimeout
from gravpy.grav import Grav
from gravpy.leaf import DEFAULT_URL
from gravpy.leaf import connect as connect_async
from gravpy.mesh import PeerInfo
from gravpy.message import Message
from gravpy.pod import Handler, Pod
from gravpy.receipt import MsgReceipt, WaitFunc

__all__ = ["SyncGrav", "SyncPod", "SyncReceipt", "connect"]

T = TypeVar("T")

_SETTLE = 1.0  # seconds the calls in flight get to end by themselves once the node has stopped


class _LoopThread:
    """An event loop running in a daemon thread, until ``close``.

    Every call in flight is a task on the loop, tracked until it ends. ``close`` refuses new
    calls, runs the final coroutine (``Grav.stop``, which ends every wait), gives the calls still
    in flight ``_SETTLE`` seconds to end with what that raised, cancels the rest (their callers
    get ``PodDisconnected``), and only then stops the loop: no caller is left waiting.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()  # orders every submission against the start of close
        self._closing = False
        self._closed = threading.Event()  # set when the loop has stopped for good
        self._tasks: set[asyncio.Task[Any]] = set()  # the calls in flight (loop thread only)
        self._thread = threading.Thread(target=self._run, name="gravpy-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block for its result; once closed, what it answers
        without waiting (``_at_once``)."""
        future = self._submit(coro)
        if future is None:
            self._closed.wait()
            return asyncio.run(_at_once(coro))
        return self._result(future)

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on the loop; once closed, here (nothing else runs the node's objects then,
        and a closed pod or bus answers as the async API does without its loop)."""

        async def wrapper() -> T:
            return fn()

        coro = wrapper()
        future = self._submit(coro)
        if future is None:
            coro.close()  # never started: no "never awaited" warning
            self._closed.wait()
            return fn()
        return self._result(future)

    def close(self, final: Coroutine[Any, Any, None] | None = None) -> None:
        """Run ``final`` on the loop, end the calls in flight, stop the loop (once; a later call
        waits for the first to finish)."""
        self._check_caller(final)
        with self._lock:
            first = not self._closing
            self._closing = True
            if first:
                done = asyncio.run_coroutine_threadsafe(self._shutdown(final), self.loop)
        if not first:
            if final is not None:
                final.close()
            self._closed.wait()
            return
        try:
            done.result()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()
            self._closed.set()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T] | None:
        """``coro`` running on the loop; None (``coro`` left to the caller) once closing."""
        self._check_caller(coro)
        with self._lock:
            if self._closing:
                return None
            return asyncio.run_coroutine_threadsafe(self._tracked(coro), self.loop)

    def _check_caller(self, coro: Coroutine[Any, Any, Any] | None) -> None:
        if threading.current_thread() is self._thread:
            if coro is not None:
                coro.close()
            raise UsageError(
                "blocking gravpy.sync call made from a handler; use the async API there"
            )

    def _result(self, future: Future[T]) -> T:
        try:
            return future.result()
        except CancelledError:
            if self._closing:  # close cancelled a call that stopping the node did not end
                raise PodDisconnected("the node is closed") from None
            raise

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await coro
        finally:
            self._tasks.discard(task)

    async def _shutdown(self, final: Coroutine[Any, Any, None] | None) -> None:
        # Every call submitted before close is already running: its task was created (and its
        # first step queued) before this one's.
        try:
            if final is not None:
                await final
        finally:
            if self._tasks:
                _, late = await asyncio.wait(set(self._tasks), timeout=_SETTLE)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)


async def _at_once(coro: Coroutine[Any, Any, T]) -> T:
    """What ``coro`` answers without waiting, run on a loop of its own: the node's loop is
    gone, and nothing it could wait for will come. So a bad argument is still a ``UsageError``,
    a reply that came before the close is still returned, a predicate that holds still does,
    as on a stopped async ``Grav``; a call that would wait raises ``PodDisconnected``."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0)  # (its first step: up to its first wait)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise PodDisconnected("the node is closed")
    return task.result()


class SyncReceipt:
    """The blocking twin of ``MsgReceipt``."""

    def __init__(self, receipt: MsgReceipt, runner: _LoopThread) -> None:
        self._receipt = receipt
        self._runner = runner
        self.uuid = receipt.uuid
        self.msg_type = receipt.msg_type

    @property
    def no_responders(self) -> bool:
        """True if no pod, local or remote, admitted the message when it was sent."""
        return self._receipt.no_responders

    def wait_until(self, timeout: float | None, on: WaitFunc | None = None) -> Any:
        """Block until the reply (or what ``on`` returns); see ``MsgReceipt.wait_until``."""
        return self._runner.run(self._receipt.wait_until(timeout, on))

    def wait_on(self, on: WaitFunc) -> Any:
        return self._runner.run(self._receipt.wait_on(on))

    def replies(self, timeout: float | None = None, max: int | None = None) -> list[Message]:
        """Block until ``max`` replies or ``timeout`` seconds; return the replies that came, in
        order (see ``MsgReceipt.replies``)."""

        async def collect() -> list[Message]:
            return [reply async for reply in self._receipt.replies(timeout, max)]

        return self._runner.run(collect())


class SyncPod:
    """The blocking twin of ``Pod``. Handlers run in the node's thread."""

    def __init__(self, pod: Pod, runner: _LoopThread) -> None:
        self._pod = pod
        self._runner = runner

    def send(self, msg: Message) -> SyncReceipt:
        """Send ``msg``; returns a receipt to wait for the reply."""
        return SyncReceipt(self._runner.call(lambda: self._pod.send(msg)), self._runner)

    def publish(self, msg: Message) -> SyncReceipt:
        """Send ``msg``, blocking while receivers or links are congested (backpressure)."""
        return SyncReceipt(self._runner.run(self._pod.publish(msg)), self._runner)

    def reply_to(self, request: Message, msg: Message) -> SyncReceipt:
        return SyncReceipt(
            self._runner.call(lambda: self._pod.reply_to(request, msg)), self._runner
        )

    def on(self, handler: Handler | None) -> None:
        self._runner.call(lambda: self._pod.on(handler))

    def on_type(self, pattern: str, handler: Handler) -> None:
        self._runner.call(lambda: self._pod.on_type(pattern, handler))

    def filter_type(self, pattern: str, allow: bool = True) -> None:
        self._runner.call(lambda: self._pod.filter_type(pattern, allow))

    def receive(self, timeout: float | None = None) -> Message:
        """Block for the next message this pod admits (it must have no handler), at most
        ``timeout`` seconds (None: as long as it takes); raises ``WaitTimeout`` as every wait."""
        seconds = check_timeout(timeout)

        async def next_message() -> Message:
            iterator = aiter(self._pod)
            deadline = asyncio.timeout(seconds)
            try:
                async with deadline:
                    return await anext(iterator)
            except StopAsyncIteration:  # the iteration ended: the pod closed or got a handler
                if self._pod.closed:
                    raise PodDisconnected(self._pod.close_reason) from None
                raise UsageError(
                    f"pod {self._pod.id} got a handler while receive waited; a pod has one consumer"
                ) from None
            except TimeoutError:
                if deadline.expired():
                    raise WaitTimeout(
                        f"no message on pod {self._pod.id} within {timeout} s"
                    ) from None
                raise

        return self._runner.run(next_message())

    def wait_until(self, timeout: float | None, fn: WaitFunc) -> Any:
        return self._runner.run(self._pod.wait_until(timeout, fn))

    def disconnect(self) -> None:
        self._runner.call(self._pod.disconnect)

    def statistics(self) -> Any:
        return self._runner.call(self._pod.statistics)


class SyncGrav:
    """A leaf node driven from blocking code. Use as a context manager."""

    def __init__(self, grav: Grav, runner: _LoopThread) -> None:
        self._grav = grav
        self._runner = runner

    def connect(self) -> SyncPod:
        return SyncPod(self._runner.call(self._grav.connect), self._runner)

    def peers(self) -> list[PeerInfo]:
        return self._runner.call(self._grav.peers)

    def wait_for(
        self, predicate: Callable[[list[PeerInfo]], bool], timeout: float | None = None
    ) -> list[PeerInfo]:
        """Block until ``predicate(peers)`` holds; see ``Grav.wait_for``."""
        return self._runner.run(self._grav.wait_for(predicate, timeout))

    def close(self) -> None:
        """Withdraw, close the link and stop the node's thread. Every call blocked in another
        thread ends: with what the async API raises when its ``Grav`` stops (``PodDisconnected``),
        or its own ``WaitTimeout`` if that came first. Later calls answer as on a stopped
        ``Grav``: ``PodDisconnected`` for pods and waits, ``UsageError`` for bad arguments, a
        ``wait_for`` predicate that holds returns, and ``peers()`` and ``statistics()`` still
        answer."""
        self._runner.close(self._stop())

    async def _stop(self) -> None:
        try:
            await self._grav.stop()
        finally:
            await self._grav.bus.close()  # every pod closed, even if a stage of stop failed

    def __enter__(self) -> SyncGrav:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(url: str = DEFAULT_URL, *, timeout: float = 5.0, **options: Any) -> SyncGrav:
    """Attach to the node at ``url`` and return a blocking handle (see ``gravpy.connect``)."""
    runner = _LoopThread()

    async def start() -> Grav:
        grav = connect_async(url, timeout=timeout, **options)
        await grav.start()
        return grav

    try:
        grav = runner.run(start())
    except BaseException:
        runner.close()
        raise
    return SyncGrav(grav, runner)
