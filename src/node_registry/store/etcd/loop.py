"""The event loop one replica runs on, and the hop onto it from other threads and loops.

A replica runs on its caller's loop (``EtcdReplica.open``, as ``serve`` runs it) or on one
of its own in a daemon thread (the constructor, for sync embedders). Every etcd call and
every task of the replica runs there; a call from elsewhere hops onto it and waits,
bounded (twice the etcd timeout and a second), so a stuck etcd costs a caller
``StoreUnavailableError``, never a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar

from node_registry.errors import StoreUnavailableError

T = TypeVar("T")


class ReplicaLoop:
    """Replica ``name``'s loop: the running one, or (``own_thread``) a new one in a thread."""

    def __init__(self, name: str, endpoint: str, timeout: float, *, own_thread: bool) -> None:
        self._name = name
        self._endpoint = endpoint
        self._timeout = timeout
        self.thread: threading.Thread | None = None
        if not own_thread:
            self.loop = asyncio.get_running_loop()
            return
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="node-registry-etcd", daemon=True
        )
        self.thread.start()

    def __repr__(self) -> str:
        return f"ReplicaLoop({self._name!r}, own_thread={self.thread is not None})"

    def on_loop(self) -> bool:
        """Whether the caller runs on this loop."""
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for it, bounded by the timeout."""
        if self.thread is None and self.on_loop():
            coroutine.close()
            # Waiting here would stop the loop that is to answer: a bug of the caller's.
            raise StoreUnavailableError(
                f"replica {self._name} runs on this event loop: a sync store call from it "
                "would block the loop; await the replica's ``aio`` instead"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(self._timeout * 2 + 1)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._timed_out() from None

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the loop: here if it is this one, else one hop."""
        bound = self._timeout * 2 + 1
        try:
            if self.on_loop():
                async with asyncio.timeout(bound):
                    return await coroutine
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
            return await asyncio.wait_for(asyncio.wrap_future(future), bound)
        except TimeoutError:
            raise self._timed_out() from None

    def stop_thread(self, stop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """The loop's own thread: run ``stop()`` there, end the loop and the thread."""
        thread = self.thread
        if thread is None:
            return
        if thread.is_alive():
            with suppress(Exception):
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(self._timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join(self._timeout)
        if not thread.is_alive():
            self.loop.close()

    def _timed_out(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"etcd ({self._endpoint}) did not answer within {self._timeout} s"
        )
