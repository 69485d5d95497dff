"""Wake-ups for blocked gets, without polling: one pub/sub subscription per process.

A script that makes messages ready publishes the queue's name on the
namespace's channel when the queue's ``waiters`` count is above zero. A
getter registers its local wake-up here first, then runs the get script,
which counts it as a waiter only if it found nothing, atomically with the
look: a put either comes before that script (and the get sees the message)
or after it (and sees the waiter, and publishes). A wake is never lost, and
spurious wakes only cost a retry. When the subscription breaks (Redis
restarted) every waiter is woken to look again, so a publish missed while
reconnecting costs at most a reconnect.

One daemon thread per broker reads the subscription; asyncio waiters are
woken through their loop's ``call_soon_threadsafe``, so the event loop never
blocks and no thread is parked per waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("zoldyq.redis")
RETRY_SECONDS = 0.2


class Bell(threading.Thread):
    def __init__(self, client: Any, channel: str) -> None:
        """``client``: a sync client of the bell's own, closed when the thread ends."""
        super().__init__(name=f"zoldyq-bell-{channel}", daemon=True)
        self.client = client
        self.channel = channel
        self.subscribed = threading.Event()
        self._waiters: dict[str, set[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self.subscribed.set()
                        self._wake_all()
                    elif msg["type"] == "message":
                        self._wake(msg["data"].decode())
            except Exception as ex:
                if self._stop.is_set():
                    break
                if self.subscribed.is_set():
                    log.warning("wake-up subscription lost (%s): retrying", type(ex).__name__)
                self.subscribed.clear()
                self._wake_all()
                self._stop.wait(RETRY_SECONDS)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
        with contextlib.suppress(Exception):
            self.client.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake_all()

    @contextlib.contextmanager
    def waiter(self, queue: str) -> Iterator[threading.Event]:
        """A threading.Event set whenever ``queue`` may have something new."""
        event = threading.Event()
        with self._registered(queue, event.set):
            yield event

    @contextlib.contextmanager
    def async_waiter(self, queue: str) -> Iterator[asyncio.Event]:
        """The same for the running event loop."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

        with self._registered(queue, wake):
            yield event

    @contextlib.contextmanager
    def _registered(self, queue: str, wake: Callable[[], None]) -> Iterator[None]:
        with self._lock:
            self._waiters.setdefault(queue, set()).add(wake)
        try:
            yield
        finally:
            with self._lock:
                group = self._waiters.get(queue)
                if group is not None:
                    group.discard(wake)
                    if not group:
                        del self._waiters[queue]

    def _wake(self, queue: str) -> None:
        with self._lock:
            wakes = list(self._waiters.get(queue, ()))
        for wake in wakes:
            wake()

    def _wake_all(self) -> None:
        with self._lock:
            wakes = [w for group in self._waiters.values() for w in group]
        for wake in wakes:
            wake()
