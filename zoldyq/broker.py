"""The broker layer: which engine serves a namespace, opened from the settings.

Transports, operations and process wiring get their ``Broker`` here, never
from an engine package, so a second engine plugs in at this one place.
``settings.backend`` picks it: ``shm`` (this host's shared memory, the
default) or a ``redis://`` URL (any number of front ends on any hosts).

It also says how an event loop calls the engine (``from_loop``): a queue's
lock can be held by a process that is alive but stopped (SIGSTOP, a
debugger), and a loop that waited for it would freeze every connection it
serves. So the loop thread never waits for a lock (``loop_thread``); a call
that finds one held elsewhere is retried in a thread that waits up to
``LOCK_WAIT`` seconds, and past that the request gets ``QueueBusy`` (503,
``Retry-After``). A queue found stuck answers 503 at once for the next
``LOCK_WAIT`` seconds, so a stuck queue holds at most one waiting thread.

``json_records`` and ``put_json_items`` are here for the same reason as ``Broker``: the
compiled module that splits a batch body into its payloads lives in the engine package.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from zoldyq import api
from zoldyq.errors import QueueBusy
from zoldyq.settings import Settings
from zoldyq.shm import broker as _shm
from zoldyq.shm import names, segment
from zoldyq.shm.broker import Broker, attach, create, destroy
from zoldyq.shm.listing import namespaces
from zoldyq.shm.lock import (
    LockBusy,
    call_never_waiting,
    never_wait_in_this_thread,
    patient,
    wait_until,
)
from zoldyq.shm.owner import Ownership, holder
from zoldyq.shm.speedups import json_records

__all__ = [
    "LOCK_WAIT", "Broker", "Claim", "LockBusy", "Ownership", "attach", "attach_namespace",
    "claim", "create", "destroy", "destroy_namespace", "from_loop", "gone_check", "holder",
    "is_shared", "json_records", "loop_thread", "namespaces", "on_the_loop", "open_namespace",
    "patient", "put_json_items", "serve_namespace", "wait_until",
]  # fmt: skip

T = TypeVar("T")
LOCK_WAIT = 1.0  # seconds a request waits, off the loop, for a lock held elsewhere
_waiters = ThreadPoolExecutor(8, thread_name_prefix="zoldyq-lock-wait")
_stuck_until: dict[str, float] = {}  # queue name -> when to try waiting for it again


def put_json_items(q: api.Queue, array: bytes, parsed: list[Any],
                   deliver_at: int | None = None) -> api.Receipt:
    """A batch body's payloads, the elements of the JSON array ``array`` (orjson parsed it
    as ``parsed``), into ``q`` as written: on shared memory with no object per payload."""
    if deliver_at is None and type(q) is _shm.Queue:
        return q.put_json_items(array, parsed)
    return q.put_records(json_records(array, parsed, api.KIND_JSON), deliver_at=deliver_at)


def is_shared(settings: Settings) -> bool:
    """True when the data outlives this server (Redis): stopping it never deletes any."""
    return settings.backend != "shm"


def _caps(settings: Settings) -> dict[str, int]:
    return {
        "max_queues": settings.max_queues,
        "max_messages": settings.default_queue_capacity,
        "max_bytes": settings.default_queue_max_bytes,
        "max_message_bytes": settings.max_message_bytes,
    }


def _redis(settings: Settings, **defaults: int) -> Any:
    from zoldyq.redis import connect

    return connect(settings.backend, settings.namespace,
                   password_file=settings.redis_password_file, **defaults)


def open_namespace(settings: Settings) -> Any:
    """The namespace with the configured caps (attached to if it exists)."""
    if is_shared(settings):
        return _redis(settings, **_caps(settings))
    return create(settings.namespace, exist_ok=True, **_caps(settings))


def attach_namespace(settings: Settings) -> Any:
    """The existing namespace (shm raises NamespaceNotFound when there is none)."""
    if is_shared(settings):
        return _redis(settings)
    return attach(settings.namespace)


def serve_namespace(settings: Settings) -> tuple[Any, bool]:
    """For the server that owns the namespace (holding its ``claim``): create it, or
    reattach and apply the configured default caps to new queues; True if created.
    On Redis a front end never creates it in that sense (it is never its to destroy)."""
    if is_shared(settings):
        return open_namespace(settings), False
    return _shm.serve(settings.namespace, **_caps(settings))


class _SharedClaim:
    """On Redis nobody owns a namespace: any number of servers front it, none destroys it."""

    adopted = False

    def release(self, unlink: bool = False) -> None:
        pass


Claim = Ownership | _SharedClaim


def claim(settings: Settings) -> Claim:
    """The server's claim on its namespace: shm's owner flock, or nothing on Redis."""
    return _SharedClaim() if is_shared(settings) else Ownership(settings.namespace)


def gone_check(broker: Any) -> Callable[[], bool]:
    """A check that the namespace ``broker`` serves was destroyed since (even if one of
    the same name was created again), still working once ``broker`` is closed: a launcher
    closes its own before forking, so that no child inherits its locks or connections."""
    registry = getattr(broker, "registry", None)
    if registry is None:
        return lambda: False  # Redis re-makes it
    path = segment.SHM_DIR + names.registry(registry.ns)
    inode: int = registry.inode

    def destroyed() -> bool:
        try:
            return os.stat(path).st_ino != inode
        except FileNotFoundError:
            return True

    return destroyed


def destroy_namespace(settings: Settings) -> None:
    """Delete every queue and message of the namespace, on whichever engine."""
    if is_shared(settings):
        from zoldyq.redis import destroy as destroy_redis

        destroy_redis(settings.backend, settings.namespace,
                      password_file=settings.redis_password_file)
    else:
        destroy(settings.namespace)


def loop_thread() -> None:
    """Call in the thread that runs the event loop: its lock acquires never wait."""
    never_wait_in_this_thread()


def on_the_loop(name: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` now, never waiting for a lock: what ``from_loop`` tries
    first, for a caller that awaits ``from_loop(..., on_loop=False)`` only on LockBusy
    (the usual call then costs no coroutine).

    Raises:
        LockBusy: a lock was held elsewhere (nothing changed): retry in the thread.
        QueueBusy: the queue was found stuck within the last ``LOCK_WAIT`` seconds.
    """
    try:
        return call_never_waiting(fn, *args)
    except LockBusy:
        if _stuck_until.get(name, 0.0) > time.monotonic():
            raise QueueBusy(name, LOCK_WAIT) from None
        raise


async def from_loop(
    name: str, fn: Callable[..., T], *args: Any, wait: float = LOCK_WAIT, on_loop: bool = True,
    patient: bool = False,
) -> T:
    """``fn(*args)`` for an event loop, which it never blocks on a lock.

    Args:
        name: the queue concerned (named by QueueBusy).
        fn: an engine call; it must be safe to run again after LockBusy (every
            data-path call is: LockBusy comes before any change).
        wait: how long the thread may wait for locks.
        on_loop: try on the loop first (False for calls that take several locks
            in a row, such as creating or deleting a queue: they always run in
            the thread).
        patient: the thread waits for its locks as long as it takes (a call that
            must not stop half-way, such as a redrive); the request still gets
            QueueBusy after ``wait``, and the call finishes in the background.

    Raises:
        QueueBusy: a lock stayed held elsewhere for ``wait`` seconds.
    """
    if on_loop:
        try:
            return on_the_loop(name, fn, *args)
        except LockBusy:
            pass
    import asyncio  # here: the CLI and the launcher, which import this layer, never need it

    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(_waiters, _waiting, name, None if patient else wait, fn, args)
    try:
        return await asyncio.wait_for(job, wait + 0.5)
    except TimeoutError:  # a change that must finish once begun: it goes on in the thread
        raise QueueBusy(name, LOCK_WAIT) from None


def _waiting(name: str, wait: float | None, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    if wait is None:
        with patient():
            return fn(*args)
    with wait_until(time.monotonic() + wait):
        try:
            result = fn(*args)
        except LockBusy:
            _stuck_until[name] = time.monotonic() + LOCK_WAIT
            raise QueueBusy(name, LOCK_WAIT) from None
    _stuck_until.pop(name, None)
    return result
