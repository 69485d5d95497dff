"""gunicorn worker classes whose SIGTERM also wakes every long-poll at once.

gunicorn's own handlers only mark the worker as stopping; a dequeue parked
for 30 s would then hold the stop for 30 s. Both classes call
``shutdown.begin()`` from their main loop (never inside a signal handler),
which starts the wake-up thread; the parked dequeues answer 204 and gunicorn
closes their connections since the worker is no longer alive.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import signal
import time
from collections.abc import Callable
from typing import Any

from gunicorn.workers.gasgi import ASGIWorker
from gunicorn.workers.gthread import ThreadWorker

from zoldyq.http import shutdown

KEEPALIVE_LINGER = 0.1  # a stopping gthread worker closes idle keep-alive connections this fast
CHUNK_PREFIXES = 256  # chunk sizes whose framing gunicorn's asgi protocol keeps ready


def _small_chunk_prefixes() -> None:
    """gunicorn 27's asgi protocol formats 16384 chunk-size prefixes at import (1.7 MB of
    heap, in the pages every server process maps) for a lookup that falls back to
    formatting the size (``_CHUNK_PREFIXES.get(size) or f"{size:x}\\r\\n"...``, checked by
    tests/test_footprint.py): keep the small sizes only. Another gunicorn: left alone."""
    names = vars(importlib.import_module("gunicorn.asgi.protocol"))
    table = names.get("_CHUNK_PREFIXES")
    if importlib.import_module("gunicorn").version_info[0] == 27 and isinstance(table, dict):
        names["_CHUNK_PREFIXES"] = {i: table[i] for i in range(CHUNK_PREFIXES) if i in table}


_small_chunk_prefixes()


class AsgiWorker(ASGIWorker):
    """gunicorn's asyncio worker running the ``falcon.asgi`` app."""

    _main: asyncio.Task[Any] | None = None

    def init_signals(self) -> None:
        """Stop signals through plain handlers that only schedule the stop on the loop.

        asyncio learns of a signal by reading its number from the loop's
        self-pipe, and every ``call_soon_threadsafe`` writes a byte there: a
        burst of them (say, waking 100 parked dequeues) can fill it, and a
        SIGTERM written at that moment is lost. A Python-level handler still runs.
        """
        super().init_signals()
        for sig, stop in ((signal.SIGTERM, self.handle_exit_signal),
                          (signal.SIGINT, self.handle_quit_signal),
                          (signal.SIGQUIT, self.handle_quit_signal)):
            self.loop.remove_signal_handler(sig)
            signal.signal(sig, functools.partial(self._schedule, stop))

    def _schedule(self, stop: Callable[[], None], signum: int, frame: object) -> None:
        """A plain signal handler: run ``stop`` on the loop."""
        self.loop.call_soon_threadsafe(stop)

    async def _serve(self) -> None:
        self._main = asyncio.current_task()
        await super()._serve()

    def handle_exit_signal(self) -> None:
        # Runs as a loop callback (see init_signals), not in signal context.
        if not self.alive:
            return  # a second SIGTERM (the arbiter's and, say, systemd's): already stopping
        super().handle_exit_signal()
        shutdown.begin()
        if self._main is not None and self.servers:
            self._main.cancel()  # the main loop sleeps 1 s between heartbeats: stop now

    def handle_quit_signal(self) -> None:
        shutdown.begin()
        super().handle_quit_signal()


class GthreadWorker(ThreadWorker):
    """gunicorn's gthread worker running the WSGI app."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self.method_queue.defer(shutdown.begin)  # run by the main loop, right after the signal

    def _cap_keepalive(self, deadline: float) -> None:
        super()._cap_keepalive(min(deadline, time.monotonic() + KEEPALIVE_LINGER))
