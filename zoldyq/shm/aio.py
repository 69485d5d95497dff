"""asyncio waiting on a queue's doorbell without a thread per waiter.

One daemon thread per (process, queue) parks on the doorbell semaphore while
any coroutine of any event loop waits on that queue, and wakes them all with
``call_soon_threadsafe`` when the bell rings. Coroutines then try a
non-blocking get on their own loop. A thread that took a ring of the bell
but found nobody left to hand it to passes it on (re-posts), so a consumer
in another process never misses its wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from zoldyq.errors import QueueDeleted
from zoldyq.shm.queue import SharedQueue

SLICE = 0.5


class AsyncBell:
    def __init__(self, sq: SharedQueue) -> None:
        self.sq = sq
        self._cond = threading.Condition()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False

    async def wait(self, timeout: float) -> None:
        """Return when the bell rang (or may have), or after ``timeout`` seconds."""
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        item = (loop, fut)
        with self._cond:
            self._waiters.add(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"zoldyq-bell-{self.sq.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                self._waiters.discard(item)

    def stop(self) -> None:
        """Wake every coroutine and end the thread (the caller interrupts the queue)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        self._wake_all()
        self.sq.interrupt()
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    def retire(self) -> None:
        """The queue was deleted: wake every coroutine (they retry and see it) and let the
        thread end by itself, without waiting for it (``running`` says when it did)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._wake_all()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _wake_all(self) -> None:
        """One call_soon_threadsafe per event loop, not per waiter.

        Each call writes a byte to the loop's self-pipe; a hundred of them can
        fill it, and asyncio then drops a signal arriving at that moment.
        """
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        with self._cond:
            for loop, fut in self._waiters:
                by_loop.setdefault(loop, []).append(fut)
        for loop, futs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(_resolve, futs)

    def _run(self) -> None:
        sq = self.sq
        while True:
            with self._cond:
                while not self._waiters and not self._stopped:
                    if not self._cond.wait(timeout=30):
                        self._thread = None
                        return  # idle: the next wait starts a new thread
                if self._stopped:
                    return
            try:
                rang = sq.wait_bell(SLICE)
            except QueueDeleted:
                rang = True  # waiters retry and see the queue is gone
            if rang or sq.ring.count() or sq.something_due():
                with self._cond:
                    anyone = bool(self._waiters)
                if anyone:
                    self._wake_all()
                elif rang:
                    sq.pass_bell()


def _resolve(futs: list[asyncio.Future[None]]) -> None:
    for fut in futs:
        if not fut.done():
            fut.set_result(None)
