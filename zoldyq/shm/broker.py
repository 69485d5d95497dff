"""The local API: attach to a namespace, get queue handles, put and get.

A ``Broker`` is this process's view of one namespace; ``Queue`` handles are
cheap and resolve their shared queue lazily (creating it on first put). The
shared queue behind a name is cached per process and re-resolved when it is
deleted, so a queue deleted and re-created elsewhere is never confused with
the old one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any, TypeVar

import orjson

from zoldyq.api import Receipt
from zoldyq.errors import (
    ClosedError,
    ConfigError,
    InvalidPayload,
    MessageTooLarge,
    QueueNotFound,
)
from zoldyq.settings import BY_NAME, Settings
from zoldyq.shm import names, segment
from zoldyq.shm.aio import AsyncBell
from zoldyq.shm.counters import Counters
from zoldyq.shm.layout import KIND_BYTES, KIND_JSON
from zoldyq.shm.queue import SharedQueue
from zoldyq.shm.registry import Caps, Entry, Registry
from zoldyq.shm.ring import min_ring_size, record_bytes

SWEEP_AGAIN = 1.0  # seconds before a retired handle still in use is looked at again
T = TypeVar("T")
_dumps = orjson.dumps
_loads = orjson.loads
_perf_ns = time.perf_counter_ns


class Message(tuple[int, bytes, int, str]):
    """One dequeued message: ``payload`` is the JSON value, or ``bytes`` for a raw message.

    A tuple (kind, data, enqueued_at, queue_name) built straight from the ring's
    records in C, because a batch of a thousand messages should not cost a
    thousand Python ``__init__`` calls; ``payload`` is decoded on first access.
    """

    kind: int = property(itemgetter(0))  # type: ignore[assignment]
    data: bytes = property(itemgetter(1))  # type: ignore[assignment]
    enqueued_at: int = property(itemgetter(2))  # type: ignore[assignment]
    queue_name: str = property(itemgetter(3))  # type: ignore[assignment]

    @property
    def is_raw(self) -> bool:
        return self[0] == KIND_BYTES

    @functools.cached_property
    def payload(self) -> Any:
        return self[1] if self[0] == KIND_BYTES else _loads(self[1])

    def __repr__(self) -> str:
        return f"Message({self.queue_name!r}, {self.payload!r}, enqueued_at={self.enqueued_at})"


_message = functools.partial(tuple.__new__, Message)


_receipt = functools.partial(tuple.__new__, Receipt)  # NamedTuple's own __new__ is slow


def encode_json(payload: Any) -> bytes:
    try:
        return _dumps(payload)
    except TypeError as ex:
        raise InvalidPayload(str(ex)) from None


class Queue:
    """A named queue in a namespace. Thread-safe; share one per name or make many."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = names.check_queue_name(name)
        self._sq: SharedQueue | None = None  # cached; re-resolved when deleted

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, namespace={self.broker.namespace!r})"

    # -- put -------------------------------------------------------------------

    def put(self, payload: Any) -> Receipt:
        """Enqueue a JSON value. Raises QueueFull, MessageTooLarge, InvalidPayload."""
        try:
            data = _dumps(payload)
        except TypeError as ex:
            raise InvalidPayload(str(ex)) from None
        return self._put_one(KIND_JSON, data)

    def put_bytes(self, data: bytes) -> Receipt:
        """Enqueue raw bytes (any bytes-like), returned as ``bytes`` by get."""
        return self._put_one(KIND_BYTES, data)

    def _put_one(self, kind: int, data: bytes) -> Receipt:
        """``put_records`` for one record, minus the loops: the local API's hot path."""
        t0 = _perf_ns()
        sq = self._sq or self._resolve(create=True)
        if len(data) > sq.max_message_bytes:
            raise MessageTooLarge(len(data), sq.max_message_bytes, self.name)
        try:
            return _receipt(sq.put(((kind, data),), t0))
        except ClosedError:
            self._forget(sq)
            return self.put_records([(kind, data)])

    def put_many(self, payloads: Iterable[Any]) -> Receipt:
        """Enqueue JSON values in one lock round trip: all of them or none."""
        return self.put_records([(KIND_JSON, encode_json(p)) for p in payloads])

    def put_records(self, records: list[tuple[int, bytes]]) -> Receipt:
        """Enqueue pre-encoded (kind, data) records, all or none.

        For transports that already hold valid JSON bytes: nothing is re-encoded.
        """
        t0 = _perf_ns()
        for attempt in (0, 1):
            sq = self._sq or self._resolve(create=True)
            limit = sq.max_message_bytes
            for _, data in records:
                if len(data) > limit:
                    raise MessageTooLarge(len(data), limit, self.name)
            if not records:
                if sq.deleted and not attempt:  # a handle kept past a delete: look again
                    self._forget(sq)
                    continue
                return _receipt((sq.ring.count(), time.time_ns() // 1000))
            try:
                return _receipt(sq.put(records, t0))
            except ClosedError:
                self._forget(sq)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _resolve(self, create: bool) -> SharedQueue:
        self._sq = sq = self.broker._shared(self.name, create)
        return sq

    def _forget(self, sq: SharedQueue) -> None:
        self._sq = None
        self.broker._forget(self.name, sq)

    # -- get -------------------------------------------------------------------

    def get(self, timeout: float = 0.0) -> Message | None:
        """Dequeue one message, waiting up to ``timeout`` seconds; None if none came."""
        got = self.get_many(1, timeout)
        return got[0] if got else None

    def get_many(self, max: int = 100, timeout: float = 0.0) -> list[Message]:
        """Dequeue up to ``max`` messages in one lock round trip, waiting for the first."""
        if max < 1:
            return []
        sq = self._sq or self._resolve(create=False)
        try:
            records = sq.get(max, timeout, self.name)
        except ClosedError:
            records = self._again(sq, lambda fresh: fresh.get(max, timeout, self.name))
        return list(map(_message, records))

    def peek(self, max: int | None = None) -> list[Message]:
        """The first ``max`` messages (all by default) without removing them."""
        sq = self._sq or self._resolve(create=False)
        n = len(self) if max is None else max
        try:
            records = sq.peek(n, self.name)
        except ClosedError:
            records = self._again(sq, lambda fresh: fresh.peek(n, self.name))
        return list(map(_message, records))

    def _again(self, stale: SharedQueue, op: Callable[[SharedQueue], T]) -> T:
        """``stale`` was deleted: run ``op`` once on the queue that has the name now."""
        self._forget(stale)
        sq = self._resolve(create=False)  # QueueNotFound if there is none
        try:
            return op(sq)
        except ClosedError:
            self._forget(sq)
            raise QueueNotFound(self.name) from None

    def stream(self, timeout: float | None = None) -> Iterator[Message]:
        """Yield messages as they arrive; ends after ``timeout`` idle seconds or on interrupt."""
        idle_until = None if timeout is None else time.monotonic() + timeout
        while not self.broker.interrupted:
            wait = 1.0 if idle_until is None else idle_until - time.monotonic()
            if wait <= 0:
                return
            for msg in self.get_many(100, min(wait, 1.0)):
                if idle_until is not None:
                    idle_until = time.monotonic() + timeout  # type: ignore[operator]
                yield msg

    async def aget(self, timeout: float = 0.0) -> Message | None:
        got = await self.aget_many(1, timeout)
        return got[0] if got else None

    async def aget_many(self, max: int = 100, timeout: float = 0.0) -> list[Message]:
        """Like get_many, for asyncio: never blocks the event loop, parks no thread per call."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.get_many(max, 0)
            remaining = deadline - time.monotonic()
            if got or self.broker.interrupted:
                return got
            sq = self._sq or self._resolve(create=False)
            if remaining <= 0:
                if timeout > 0:
                    sq.note_timeout()
                return got
            await self.broker._async_bell(sq).wait(remaining)

    async def astream(self) -> AsyncIterator[Message]:
        while not self.broker.interrupted:
            for msg in await self.aget_many(100, 1.0):
                yield msg

    # -- management ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        sq = self.broker._shared(self.name, create=False)
        return {"name": self.name, **sq.stats()}

    def __len__(self) -> int:
        return self.broker._shared(self.name, create=False).ring.count()

    def clear(self) -> int:
        """Drop every message now in the queue; returns how many."""
        sq = self._sq or self._resolve(create=False)
        try:
            return sq.clear()
        except ClosedError:
            return self._again(sq, SharedQueue.clear)

    def delete(self) -> None:
        self.broker.delete(self.name)


class Broker:
    """This process's handle on namespace ``namespace`` (see ``attach``/``create``)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = names.check_namespace(namespace)
        self.registry = Registry(namespace)
        self._queues: dict[str, SharedQueue] = {}
        self._retired: list[SharedQueue] = []  # deleted, closed once no thread uses them
        self._sweep_soon = False
        self._bells: dict[int, AsyncBell] = {}
        self._lock = threading.Lock()
        self.interrupted = False
        self._closed = False

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Broker({self.namespace!r})"

    @property
    def defaults(self) -> Caps:
        return self.registry.defaults

    @property
    def max_queues(self) -> int:
        return self.registry.max_queues

    def queue(self, name: str) -> Queue:
        """A handle on queue ``name``; it is created on first put."""
        return Queue(self, name)

    def create_queue(
        self,
        name: str,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        max_message_bytes: int | None = None,
        exist_ok: bool = False,
    ) -> Queue:
        """Create ``name`` with its own caps and return its handle.

        Raises QueueExists when it exists ("with other limits" when its caps
        differ); with ``exist_ok`` an existing queue with the same caps (or
        none asked for) is returned.
        """
        names.check_queue_name(name)
        d = self.registry.defaults
        asked = (max_messages, max_bytes, max_message_bytes)
        caps = None
        if any(v is not None for v in asked):
            mmb = max_message_bytes or d.max_message_bytes
            caps = Caps(
                max_messages or d.max_messages,
                max_bytes or max(d.max_bytes, min_ring_size(mmb)),
                mmb,
            )
        self.registry.create_queue(name, caps, exist_ok)
        return Queue(self, name)

    def delete(self, name: str) -> None:
        """Delete queue ``name`` and its messages, in every process."""
        names.check_queue_name(name)
        self.registry.delete_queue(name)
        with self._lock:
            sq = self._queues.pop(name, None)
        if sq is not None:
            self._retire(sq)

    def queues(self) -> list[str]:
        return [e.name for e in self.registry.entries()]

    def entries(self) -> list[Entry]:
        return self.registry.entries()

    def exists(self, name: str) -> bool:
        return self.registry.lookup(names.check_queue_name(name)) is not None

    # -- what operations read (api.Broker) -----------------------------------------

    @property
    def created_at(self) -> int:
        """When the namespace was created, µs since the epoch."""
        return self.registry.created_at

    @property
    def destroyed(self) -> bool:
        return self.registry.destroyed

    def counters(self, create: bool = True) -> Counters:
        """The namespace's shared process-level figures; FileNotFoundError if absent."""
        return Counters(self.namespace, create=create)

    def free_bytes(self) -> int | None:
        """Bytes free where the queues live (/dev/shm)."""
        return segment.shm_free_bytes()

    def bytes_needed(self, sizes: Sequence[int], *, appended: bool) -> int:
        """Ring bytes messages of ``sizes`` take against max_bytes; ``appended`` after
        queued ones, when the batch may have to skip the ring's end once."""
        slack = record_bytes(max(sizes, default=0)) if appended else 0
        return slack + sum(record_bytes(n) for n in sizes)

    def locks(self) -> Iterator[tuple[str, contextlib.AbstractContextManager[object]]]:
        """Every lock of the namespace, named for a person: what a health probe takes."""
        yield "the registry lock", self.registry.lock
        for entry in self.entries():
            try:
                sq = self._shared(entry.name, create=False)
            except QueueNotFound:
                continue
            yield f"the put lock of queue '{entry.name}'", sq.put_lock
            yield f"the get lock of queue '{entry.name}'", sq.get_lock

    def interrupt(self) -> None:
        """Wake every waiter in this process now; later waits return at once (shutdown)."""
        self.interrupted = True
        with self._lock:
            queues = list(self._queues.values())
            bells = list(self._bells.values())
        for bell in bells:
            bell.stop()
        for sq in queues:
            sq.interrupt()

    def close(self) -> None:
        if self._closed:
            return
        self.interrupt()
        self._closed = True
        with self._lock:
            queues = list(self._queues.values()) + self._retired
            self._queues.clear()
            self._retired.clear()
        for sq in queues:
            sq.close()
        self.registry.close()

    # -- internals -------------------------------------------------------------

    def _shared(self, name: str, create: bool) -> SharedQueue:
        sq = self._queues.get(name)
        if sq is not None and not sq.deleted:
            return sq
        if self._closed:
            raise ClosedError(f"broker for namespace '{self.namespace}'")
        if self._retired or sq is not None:
            self._sweep()
        while True:
            entry = self.registry.lookup(name)
            if entry is None:
                if not create:
                    raise QueueNotFound(name)
                entry, _ = self.registry.create_queue(name, None, exist_ok=True)
            try:
                fresh = SharedQueue(self.namespace, entry.slot, entry.gen, name)
            except segment.Gone:
                continue  # deleted between lookup and open: look again
            if self.interrupted:
                fresh.interrupted = True
            with self._lock:
                old = self._queues.get(name)
                if (old is not None and (old.slot, old.gen) == (fresh.slot, fresh.gen)
                        and not old.deleted):
                    fresh.close()
                    return old
                self._queues[name] = fresh
            if old is not None:
                self._retire(old)
            return fresh

    def _forget(self, name: str, sq: SharedQueue) -> None:
        with self._lock:
            if self._queues.get(name) is sq:
                del self._queues[name]
            else:
                return
        self._retire(sq)

    def _retire(self, sq: SharedQueue) -> None:
        """Close a deleted queue's handle as soon as no thread of ours is inside it."""
        with self._lock:
            self._retired.append(sq)
        self._sweep()

    def _sweep(self) -> None:
        """Close every retired handle no thread uses any more, after moving deleted ones
        out of the cache, so descriptors and mappings follow the live queues.

        A handle still in use (a thread inside its lock, a waiter parked on its
        bell, an asyncio bell thread) is swept again a second later. A thread
        that picks a closed handle up gets ClosedError and re-resolves the name.
        """
        with self._lock:
            for name, sq in list(self._queues.items()):
                if sq.deleted:
                    del self._queues[name]
                    self._retired.append(sq)
            done: list[SharedQueue] = []
            busy: list[SharedQueue] = []
            for sq in self._retired:
                bell = self._bells.get(id(sq))
                if bell is not None and bell.sq is sq:
                    bell.retire()
                    if bell.running:
                        busy.append(sq)
                        continue
                    del self._bells[id(sq)]
                (busy if sq.busy else done).append(sq)
            self._retired = busy
            again = bool(busy) and not self._sweep_soon and not self._closed
            self._sweep_soon = self._sweep_soon or again
        for sq in done:
            sq.close()
        if again:
            timer = threading.Timer(SWEEP_AGAIN, self._swept_later)
            timer.daemon = True
            timer.start()

    def _swept_later(self) -> None:
        with self._lock:
            self._sweep_soon = False
        self._sweep()

    def _async_bell(self, sq: SharedQueue) -> AsyncBell:
        with self._lock:
            bell = self._bells.get(id(sq))
            if bell is None or bell.sq is not sq:
                bell = self._bells[id(sq)] = AsyncBell(sq)
            return bell


_DEFAULTS = Settings()  # the declared defaults, the one place they are written


def _namespace(namespace: str | None) -> str:
    if namespace is None:
        return os.environ.get(BY_NAME["namespace"].env) or _DEFAULTS.namespace
    return names.check_namespace(namespace)


def attach(namespace: str | None = None) -> Broker:
    """Attach to an existing namespace (default: $ZOLDYQ_NAMESPACE or 'zoldyq')."""
    return Broker(_namespace(namespace))


def create(
    namespace: str | None = None,
    *,
    max_queues: int | None = None,
    max_messages: int | None = None,
    max_bytes: int | None = None,
    max_message_bytes: int | None = None,
    exist_ok: bool = True,
) -> Broker:
    """Create a namespace (or attach to it if it exists and ``exist_ok``) and attach.

    Caps left out take the settings' declared defaults.
    """
    d = _DEFAULTS
    ns = _namespace(namespace)
    caps = Caps(max_messages or d.default_queue_capacity, max_bytes or d.default_queue_max_bytes,
                max_message_bytes or d.max_message_bytes)
    created = Registry.create(ns, max_queues or d.max_queues, caps)
    if not created and not exist_ok:
        raise ConfigError(f"namespace '{ns}' already exists")
    return Broker(ns)


def serve(
    namespace: str | None = None,
    *,
    max_queues: int,
    max_messages: int,
    max_bytes: int,
    max_message_bytes: int,
) -> tuple[Broker, bool]:
    """For the server that owns the namespace: create it, or attach to the one a crashed
    server left (its queues and messages kept) and make ``max_*`` the defaults of queues
    created from now on. Returns (broker, created); ``max_queues`` applies only when
    created (it sizes the registry)."""
    ns = _namespace(namespace)
    caps = Caps(max_messages, max_bytes, max_message_bytes)
    created = Registry.create(ns, max_queues, caps)
    broker = Broker(ns)
    if not created:
        try:
            broker.registry.set_defaults(caps)
        except BaseException:
            broker.close()
            raise
    return broker, created


def destroy(namespace: str | None = None) -> None:
    """Delete every queue and object of a namespace; attached processes see it closed."""
    Registry.destroy(_namespace(namespace))
