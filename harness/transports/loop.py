"""One asyncio loop on its own thread, for transports whose I/O is asyncio (DC-09, SIP): the scenario's
loop never waits on their sockets, and their protocol callbacks stamp arrivals on this thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "vtlab-io") -> None:
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = 30.0) -> T:
        """Run `coro` on the loop thread and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the loop thread without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def start_soon(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start `coro` on the loop thread without waiting, from any thread. On the loop thread itself the
        task is created directly: its first step runs right after the current callback, with no wake-up
        through the loop's self-pipe and no extra turn of the loop (a hand-over on the alarm path)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            asyncio.run_coroutine_threadsafe(coro, self.loop)
            return
        task = self.loop.create_task(coro)
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
