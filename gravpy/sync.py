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
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from gravpy._mailbox import check_timeout
from gravpy.errors import UsageError, WaitTimeout
from gravpy.grav import Grav
from gravpy.leaf import DEFAULT_URL
from gravpy.leaf import connect as connect_async
from gravpy.mesh import PeerInfo
from gravpy.message import Message
from gravpy.pod import Handler, Pod
from gravpy.receipt import MsgReceipt, WaitFunc

__all__ = ["SyncGrav", "SyncPod", "SyncReceipt", "connect"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, stopped by ``close``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="gravpy-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise UsageError(
                "blocking gravpy.sync call made from a handler; use the async API there"
            )
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


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
        self._closed = False

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
        """Withdraw, close the link and stop the node's thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._grav.stop())
        finally:
            self._runner.close()

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
