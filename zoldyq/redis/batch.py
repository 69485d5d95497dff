"""The scripts that the coroutines of one event loop send in the same loop turn, sent
together as one pipeline.

Under load an ASGI worker has dozens of requests in flight, each waiting on one
script. Sent one by one, each costs its own socket write, read wake-up and
parser pass, on both sides: that was most of the engine's cost per request.
Gathered per loop turn they cost one of each per batch (a batch of one is sent at
once, a turn later). Every script is still its own atomic operation: the
pipeline is not a transaction, and one script's error is only its caller's.

A caller that stops waiting (cancelled: its client left, or ``client.Calls``
timed it out) does not stop its script, as a script already written to the
socket would run anyway; its reply goes to the caller's ``orphan`` hook when it
gave one (a plain get puts the messages it took back at the head), else it is
dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import NoScriptError

Orphan = Callable[[Any], Coroutine[Any, Any, Any] | None] | None
Pending = tuple[str, str, tuple[bytes, ...], list[Any], "asyncio.Future[Any]", Orphan]


class Batches:
    """EVALSHA through ``client`` (a plain asyncio Redis client), batched per loop turn."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._pending: list[Pending] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def evalsha(self, sha: str, source: str, keys: tuple[bytes, ...],
                      argv: list[Any], orphan: Orphan = None) -> Any:
        """The script's reply; ``source`` is sent instead when the server lacks it;
        ``orphan`` gets the reply if the caller stopped waiting for it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((sha, source, keys, argv, fut, orphan))
        return await fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._start(self._send(batch))

    def _start(self, coro: Coroutine[Any, Any, Any] | None) -> None:
        if coro is not None:
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)  # held until done (the loop keeps only weak references)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Pending]) -> None:
        try:
            replies = await self._run([(sha, keys, argv) for sha, _, keys, argv, *_ in batch])
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:  # a new or restarted server: EVAL sends them (and caches them)
                again = await self._run([(batch[i][1], batch[i][2], batch[i][3])
                                         for i in missing], command="EVAL")
                for i, r in zip(missing, again, strict=True):
                    replies[i] = r
        except BaseException as ex:  # the connection failed (or the loop is closing)
            for *_, fut, _ in batch:
                if not fut.done():
                    fut.set_exception(ex)
            if not isinstance(ex, Exception):
                raise
            return
        for (*_, fut, orphan), reply in zip(batch, replies, strict=True):
            if fut.done():  # its caller stopped waiting
                if orphan is not None and not isinstance(reply, Exception):
                    self._start(orphan(reply))
                continue
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    async def _run(self, calls: list[tuple[str, tuple[bytes, ...], list[Any]]],
                   command: str = "EVALSHA") -> list[Any]:
        if len(calls) == 1:  # no pipeline for one
            script, keys, argv = calls[0]
            try:
                return [await self.client.execute_command(command, script, len(keys), *keys,
                                                          *argv)]
            except NoScriptError as ex:
                return [ex]
        pipe = self.client.pipeline(transaction=False)
        for script, keys, argv in calls:
            pipe.execute_command(command, script, len(keys), *keys, *argv)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
