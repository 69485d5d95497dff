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
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from zoldyq import api
from zoldyq.api import CheckedRecords, Receipt, check_json
from zoldyq.errors import (
    ClosedError,
    ConfigError,
    InvalidPayload,
    LeaseExpired,
    MessageTooLarge,
    QueueDeleted,
    QueueFull,
    QueueNotFound,
)
from zoldyq.settings import BY_NAME, Settings
from zoldyq.shm import names, segment, speedups
from zoldyq.shm.counters import Counters
from zoldyq.shm.layout import KIND_BYTES, KIND_JSON, SW_DEAD
from zoldyq.shm.queue import SharedQueue
from zoldyq.shm.registry import Caps, Entry, Registry
from zoldyq.shm.ring import Record, min_ring_size, record_bytes
from zoldyq.shm.side import DEAD, DELAYED, REDRIVE
from zoldyq.shm.side import READY as READY_STATE

if TYPE_CHECKING:  # asyncio costs every process ~2 MB; only asyncio users import it
    from zoldyq.shm.aio import AsyncBell

SWEEP_AGAIN = 1.0  # seconds before a retired handle still in use is looked at again
T = TypeVar("T")
_dumps = orjson.dumps
_loads = orjson.loads
_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns  # one clock for the engine (tests replace it)
MAX_SECONDS = 366 * 86400  # the longest lease or delay accepted: a year
# a read-only attribute that is item i of the message: in C, half the cost of a property
_item: Callable[[int], Any] = (
    speedups.fast.item if speedups.ENABLED else lambda i: property(itemgetter(i)))


class Message(tuple[Any, ...]):
    """One dequeued message: ``payload`` is the JSON value, or ``bytes`` for a raw message.

    A tuple (kind, data, enqueued_at, queue_name[, lease_id, delivery_count,
    lease_expires_at, queue]) built straight from the engine's records in C,
    because a batch of a thousand messages should not cost a thousand Python
    ``__init__`` calls; ``payload`` is decoded on first access. A plain get
    gives the short form: no lease, first delivery.
    """

    kind: int = _item(0)
    data: bytes = _item(1)
    enqueued_at: int = _item(2)
    queue_name: str = _item(3)

    @property
    def lease_id(self) -> str | None:
        return self[4] if len(self) > 4 else None

    @property
    def delivery_count(self) -> int:
        return self[5] if len(self) > 4 else 1

    @property
    def lease_expires_at(self) -> int | None:
        return self[6] if len(self) > 4 else None

    @property
    def is_raw(self) -> bool:
        kind: int = self[0]
        return kind == KIND_BYTES

    @functools.cached_property
    def payload(self) -> Any:
        return self[1] if self[0] == KIND_BYTES else _loads(self[1])

    def _lease(self) -> tuple[Queue, str]:
        if len(self) < 8 or self[4] is None:
            raise LeaseExpired(self[3], "")
        return self[7], self[4]

    def ack(self) -> None:
        """Remove the leased message for good; LeaseExpired if the lease is not held."""
        q, lease_id = self._lease()
        q.ack(lease_id)

    def nack(self, delay: float = 0.0) -> str | None:
        """Give it back now (or after ``delay`` s); the DLQ's name if it was dead-lettered."""
        q, lease_id = self._lease()
        return q.nack(lease_id, delay)

    def extend(self, seconds: float) -> int:
        """Hold the lease ``seconds`` from now; returns the new lease_expires_at (µs)."""
        q, lease_id = self._lease()
        return q.extend(lease_id, seconds)

    def __repr__(self) -> str:
        lease = f", lease_id={self.lease_id!r}" if self.lease_id else ""
        return (f"Message({self.queue_name!r}, {self.payload!r}, "
                f"enqueued_at={self.enqueued_at}{lease})")


class LeasedMessage(Message):
    """A leased message, always the long form: its lease fields are plain item reads
    (an HTTP batch of leases reads them for every message)."""

    lease_id: str = _item(4)
    delivery_count: int = _item(5)
    lease_expires_at: int = _item(6)

    def ack(self) -> None:
        """Remove the leased message for good; LeaseExpired if the lease is not held.

        The common case is one C call from here, not three Python frames down (a
        lease+ack pays the Python layers twice, so they count); anything else (the
        pure path, a deadline passed, dead letters to move, the queue deleted) takes
        the queue's own ack.
        """
        q, lease_id = self[7], self[4]
        sq = q._sq
        fast = None if sq is None else sq.fast
        if fast is not None:
            try:  # None: nothing done (the full ack also moves dead letters waiting)
                acked = fast.ack_one(lease_id, _time_ns())
            except ClosedError:
                acked = None
            if acked:
                return
            if acked is not None:
                raise LeaseExpired(q.name, lease_id)
        q.ack(lease_id)


_message = functools.partial(tuple.__new__, Message)
_leased = functools.partial(tuple.__new__, LeasedMessage)


_receipt = functools.partial(tuple.__new__, Receipt)  # NamedTuple's own __new__ is slow


def encode_json(payload: Any) -> bytes:
    try:
        return _dumps(payload)
    except TypeError as ex:
        raise InvalidPayload(str(ex)) from None


def _seconds(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0 <= value <= MAX_SECONDS):
        raise ConfigError(f"{what} must be a number of seconds in 0..{MAX_SECONDS}, got {value!r}")
    return float(value)


def due_at(delay: float | None, deliver_at: int | None) -> int | None:
    """The µs a put becomes visible, or None for now."""
    _seconds(delay, "delay")
    if deliver_at is not None and (isinstance(deliver_at, bool) or not isinstance(deliver_at, int)
                                   or deliver_at < 0):
        raise ConfigError(f"deliver_at must be µs since the epoch, got {deliver_at!r}")
    now = _time_ns() // 1000
    at = deliver_at if delay is None else now + int(delay * 1e6)
    if at is None or at <= now:
        return None
    if at > api.MAX_DELIVER_AT:
        raise ConfigError(f"deliver_at {at} is past {api.MAX_DELIVER_AT} µs since the epoch")
    return at


class Queue(api.LeaseBlock):
    """A named queue in a namespace. Thread-safe; share one per name or make many."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = names.check_queue_name(name)
        self._sq: SharedQueue | None = None  # cached; re-resolved when deleted
        self._lease_memo: tuple[object, int] = (None, 0)  # the last lease checked, in µs

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, namespace={self.broker.namespace!r})"

    # -- put -------------------------------------------------------------------

    def put(self, payload: Any, *, delay: float | None = None,
            deliver_at: int | None = None) -> Receipt:
        """Enqueue a JSON value. Raises QueueFull, MessageTooLarge, InvalidPayload."""
        try:
            data = _dumps(payload)
        except TypeError as ex:
            raise InvalidPayload(str(ex)) from None
        if delay is None and deliver_at is None:
            return self._put_one(KIND_JSON, data)
        return self._put_records([(KIND_JSON, data)], deliver_at=due_at(delay, deliver_at))

    def put_bytes(self, data: bytes, *, delay: float | None = None,
                  deliver_at: int | None = None) -> Receipt:
        """Enqueue raw bytes (any bytes-like), returned as ``bytes`` by get."""
        if delay is None and deliver_at is None:
            return self._put_one(KIND_BYTES, data)
        return self._put_records([(KIND_BYTES, bytes(data))],
                                 deliver_at=due_at(delay, deliver_at))

    def _put_one(self, kind: int, data: bytes) -> Receipt:
        """``put_records`` for one record, minus the loops: the local API's hot path."""
        t0 = _perf_ns()
        sq = self._sq or self._resolve(create=True)
        if len(data) > sq.max_message_bytes:
            raise MessageTooLarge(len(data), sq.max_message_bytes, self.name)
        try:
            fast = sq.fast
            done = fast.put_one(kind, data, t0) if fast is not None else None
            size, at = done if done is not None else sq.put(((kind, data),), t0)
        except ClosedError:
            self._forget(sq)
            return self._put_records([(kind, data)])
        return _receipt((size, at, None))

    def put_many(self, payloads: Iterable[Any], *, delay: float | None = None,
                 deliver_at: int | None = None) -> Receipt:
        """Enqueue JSON values in one lock round trip: all of them or none."""
        return self._put_records([(KIND_JSON, encode_json(p)) for p in payloads],
                                 deliver_at=due_at(delay, deliver_at))

    def put_records(self, records: list[tuple[int, bytes]], *,
                    deliver_at: int | None = None) -> Receipt:
        """Enqueue pre-encoded (kind, data) records, all or none; invisible until
        ``deliver_at`` (µs) when given.

        For transports that hold the client's JSON bytes: nothing is re-encoded,
        but every JSON record is checked to be one JSON document (InvalidPayload
        otherwise), so a consumer never gets invalid JSON, nor one record that
        reads as two messages once spliced into a batch.
        """
        sq = self._sq
        if sq is not None and deliver_at is None and (fast := sq.fast) is not None:
            # one C call makes this method's checks too; a batch with any record they would
            # look at (JSON to parse, a bad kind, too long) or a queue that needs the full
            # path (side table, deleted) comes back None with nothing done
            try:
                done = fast.put(records, _perf_ns(), sq.max_message_bytes,
                                type(records) is CheckedRecords)
            except ClosedError:
                done = None
            if done is not None:
                return _receipt((*done, None))
        if type(records) is not CheckedRecords:  # those came from api.json_field/items
            for kind, data in records:
                if kind == KIND_JSON:
                    check_json(data)
                elif kind != KIND_BYTES:
                    raise InvalidPayload(f"unknown record kind {kind!r}")
        if deliver_at is None and len(records) == 1:  # a transport's single enqueue
            return self._put_one(*records[0])
        return self._put_records(records, deliver_at=deliver_at)

    def put_json_items(self, array: bytes, parsed: list[Any]) -> Receipt:
        """``put_records`` of the elements of the JSON array ``array`` (orjson parsed it as
        ``parsed``), each stored as written: a batch body's payloads. On the C path one call
        cuts them out of the array and writes them, with no Python object per payload."""
        sq = self._sq
        if sq is not None and (fast := sq.fast) is not None:
            try:  # None, nothing done, for what put_records' checks must look at
                done = fast.put_json(array, len(parsed), _perf_ns(), sq.max_message_bytes)
            except ClosedError:
                done = None
            if done is not None:
                return _receipt((*done, None))
        return self.put_records(speedups.json_records(array, parsed, KIND_JSON))

    def _put_records(self, records: list[tuple[int, bytes]], *,
                     deliver_at: int | None = None) -> Receipt:
        """put_records for records known to be valid (encoded here)."""
        t0 = _perf_ns()
        if deliver_at is not None:
            deliver_at = due_at(None, deliver_at)
        for attempt in (0, 1):
            sq = self._live(create=True)
            limit = sq.max_message_bytes
            for _, data in records:
                if len(data) > limit:
                    raise MessageTooLarge(len(data), limit, self.name)
            try:
                if not records:
                    return _receipt((sq.ready(), time.time_ns() // 1000, None))
                if deliver_at is None:
                    return _receipt((*sq.put(records, t0), None))
                return _receipt((*sq.put_delayed(records, deliver_at), deliver_at))
            except ClosedError:
                self._forget(sq)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _live(self, create: bool) -> SharedQueue:
        """The cached shared queue unless this process closed it (it was deleted), for the
        paths that read it without taking one of its locks."""
        sq = self._sq
        if sq is None or sq.closed:
            sq = self._resolve(create)
        return sq

    def _resolve(self, create: bool) -> SharedQueue:
        self._sq = sq = self.broker._shared(self.name, create)
        return sq

    def _forget(self, sq: SharedQueue) -> None:
        self._sq = None
        self.broker._forget(self.name, sq)

    def _on(self, op: Callable[[SharedQueue], T]) -> T:
        """Run ``op`` on the queue behind the name, following a re-created one once;
        then move what it found past max_deliveries to the dead-letter queue."""
        sq = self._sq or self._resolve(create=False)
        try:
            result = op(sq)
        except ClosedError:
            result = self._again(sq, op)
        self._flush_dead()
        return result

    def _flush_dead(self) -> None:
        sq = self._sq
        if sq is not None and not sq.closed and sq.words[SW_DEAD]:
            self.broker._dead_letter(self.name, sq)

    # -- get -------------------------------------------------------------------

    def get(self, timeout: float = 0.0, lease: float | None = None) -> Message | None:
        """Dequeue one message, waiting up to ``timeout`` seconds; None if none came.

        With ``lease`` (seconds) the message is hidden, not removed, until
        acked, nacked or the lease expires.
        """
        got = self.get_many(1, timeout, lease)
        return got[0] if got else None

    def get_many(self, max: int = 100, timeout: float = 0.0,
                 lease: float | None = None) -> list[Message]:
        """Dequeue up to ``max`` messages in one lock round trip, waiting for the first."""
        if max < 1:
            return []
        if lease is None:
            lease_us = 0
        else:  # a consumer asks for the same lease every time: checked once
            memo = self._lease_memo
            lease_us = memo[1] if memo[0] is lease else self._lease_us(lease)
        sq = self._sq or self._resolve(create=False)
        fast = sq.fast
        try:
            if fast is not None:
                # flat first: one C call (None back: side work, the full path); only an
                # empty answer to a get that may wait goes on to plan the wait
                got: list[Message] | None = (
                    fast.lease(max, _perf_ns(), False, False, self.name, LeasedMessage, lease_us,
                               _time_ns(), self) if lease_us else
                    fast.take(max, _perf_ns(), False, False, self.name, Message))
                if got is not None and (got or timeout <= 0 or sq.interrupted):
                    if fast.trim_due:
                        sq.trim()
                    if sq.words[SW_DEAD]:
                        self._flush_dead()
                    return got
            records = sq.get(max, timeout, self.name, lease_us)
        except ClosedError:
            records = self._get_again(sq, max, timeout, lease_us)
        if self._sq is not None and self._sq.words[SW_DEAD]:
            self._flush_dead()
        if lease_us:
            return [_leased((*r, self)) for r in records]
        return list(map(_message, records))

    def _lease_us(self, lease: float) -> int:
        """``lease`` seconds checked, in µs (1 ms at least), remembered for the next get."""
        us = max(1000, int((_seconds(lease, "lease") or 0.0) * 1e6))
        self._lease_memo = (lease, us)
        return us

    def peek(self, max: int | None = None) -> list[Message]:
        """The first ``max`` messages (all by default) without removing them."""
        return list(map(_message, self._on(
            lambda sq: sq.peek(sq.ring.max_messages if max is None else max, self.name))))

    def _get_again(self, stale: SharedQueue, max: int, timeout: float,
                   lease_us: int) -> list[Record]:
        """get_many's retry, out of line: a lambda there would make its arguments closure
        cells, built on every call (~70 ns of a ~800 ns get)."""
        return self._again(stale, lambda fresh: fresh.get(max, timeout, self.name, lease_us))

    def _again(self, stale: SharedQueue, op: Callable[[SharedQueue], T]) -> T:
        """``stale`` was deleted: run ``op`` once on the queue that has the name now."""
        self._forget(stale)
        sq = self._resolve(create=False)  # QueueNotFound if there is none
        try:
            return op(sq)
        except ClosedError:
            self._forget(sq)
            raise QueueNotFound(self.name) from None

    def stream(self, timeout: float | None = None,
               lease: float | None = None) -> Iterator[Message]:
        """Yield messages as they arrive; ends after ``timeout`` idle seconds or on interrupt."""
        idle_until = None if timeout is None else time.monotonic() + timeout
        while not self.broker.interrupted:
            wait = 1.0 if idle_until is None else idle_until - time.monotonic()
            if wait <= 0:
                return
            for msg in self.get_many(100 if lease is None else 1, min(wait, 1.0), lease):
                if idle_until is not None:
                    idle_until = time.monotonic() + timeout  # type: ignore[operator]
                yield msg

    async def aget(self, timeout: float = 0.0, lease: float | None = None) -> Message | None:
        got = await self.aget_many(1, timeout, lease)
        return got[0] if got else None

    async def aget_many(self, max: int = 100, timeout: float = 0.0,
                        lease: float | None = None) -> list[Message]:
        """Like get_many, for asyncio: never blocks the event loop, parks no thread per call."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.get_many(max, 0, lease)
            remaining = deadline - time.monotonic()
            if got or self.broker.interrupted:
                return got
            sq = self._live(create=False)
            if remaining <= 0:
                if timeout > 0:
                    sq.note_timeout()
                return got
            await self.broker._async_bell(sq).wait(remaining)

    async def astream(self, lease: float | None = None) -> AsyncIterator[Message]:
        while not self.broker.interrupted:
            for msg in await self.aget_many(100 if lease is None else 1, 1.0, lease):
                yield msg

    # -- reliable delivery -----------------------------------------------------------

    def ack(self, lease_id: str) -> None:
        """Remove a leased message for good; raises LeaseExpired if the lease is not held."""
        if self.ack_many((lease_id,)):
            raise LeaseExpired(self.name, str(lease_id))

    def ack_many(self, lease_ids: Iterable[str]) -> list[str]:
        """Ack each lease in one lock round trip; returns the ids that were not held."""
        sq = self._sq
        fast = None if sq is None else sq.fast
        if fast is not None and type(lease_ids) in (list, tuple):
            # flat: one C call (None back: a deadline passed or an odd id, the full path)
            try:
                not_held: list[str] | None = fast.ack(lease_ids, _time_ns())
            except ClosedError:
                not_held = None
            if not_held is not None:
                if sq.words[SW_DEAD]:  # type: ignore[union-attr]
                    self._flush_dead()
                return not_held
        ids = [str(i) for i in lease_ids]
        return self._on(lambda sq: sq.ack(ids))

    def nack(self, lease_id: str, delay: float = 0.0) -> str | None:
        """Give a leased message back at the head (or after ``delay`` s).

        Returns the dead-letter queue's name when the message went there
        instead (``max_deliveries`` reached); raises LeaseExpired if not held.
        """
        delay_us = int((_seconds(delay, "delay") or 0.0) * 1e6)
        state = self._on(lambda sq: sq.nack(str(lease_id), delay_us))
        if state is None:
            raise LeaseExpired(self.name, str(lease_id))
        return (self._sq.dlq_name if self._sq else f"{self.name}.dlq") if state == DEAD else None

    def extend(self, lease_id: str, seconds: float) -> int:
        """Hold a lease ``seconds`` from now; returns the new lease_expires_at (µs)."""
        us = _seconds(seconds, "lease")
        deadline = self._on(lambda sq: sq.extend(str(lease_id), us or 0.0))
        if deadline is None:
            raise LeaseExpired(self.name, str(lease_id))
        return deadline

    def requeue(self, messages: Iterable[api.Message]) -> int:
        """Put messages taken by a plain get back at the head, in their order.

        For transports whose client left before the messages were written to it.
        """
        records = [(m.kind, m.data, m.enqueued_at, max(0, getattr(m, "delivery_count", 1) - 1))
                   for m in messages]
        if not records:
            return 0
        return self._on(lambda sq: sq.requeue(records))

    def held(self) -> list[tuple[int, bytes, int, int, int | None]]:
        """(kind, data, enqueued_at, deliveries, deliver_at) of every message that is
        leased, delayed or on its way to the DLQ: what a snapshot keeps besides ``peek``."""
        out = []
        for st, kind, data, enq, deliveries, deadline, _key in self._on(
                SharedQueue.held_messages):
            if st != READY_STATE:
                out.append((kind, data, enq, deliveries, deadline if st == DELAYED else None))
        return out

    def redrive(self) -> int:
        """On a dead-letter queue: move its messages back to their queues; return how many."""
        return self.broker._redrive(self)

    # -- management ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        sq = self._sq = self.broker._shared(self.name, create=False)
        self._flush_dead()
        return {"name": self.name, **sq.stats()}

    def __len__(self) -> int:
        return self.broker._shared(self.name, create=False).ready()

    def clear(self) -> int:
        """Drop every message now in the queue (ready, returned, delayed); returns how many."""
        return self._on(SharedQueue.clear)

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
        max_deliveries: int | None = None,
        dead_letter_queue: str | None = None,
        exist_ok: bool = False,
    ) -> Queue:
        """Create ``name`` with its own caps and return its handle.

        ``max_deliveries`` (with ``dead_letter_queue``, default ``<name>.dlq``)
        moves a message that failed that many leases to the dead-letter queue.
        Raises QueueExists when it exists ("with other limits" when its
        settings differ); with ``exist_ok`` an existing queue with the same
        settings (or none asked for) is returned.
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
        dead = None
        if max_deliveries is not None or dead_letter_queue is not None:
            md = max_deliveries or 0
            if isinstance(md, bool) or not isinstance(md, int) or not 0 <= md <= 1_000_000:
                raise ConfigError(f"max_deliveries must be 0..1000000, got {max_deliveries!r}")
            dlq = "" if dead_letter_queue is None else names.check_queue_name(dead_letter_queue)
            if dlq == name:
                raise ConfigError("a queue cannot be its own dead-letter queue")
            dead = (md, dlq)
        self.registry.create_queue(name, caps, exist_ok, dead)
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
            fresh.max_deliveries = entry.max_deliveries
            fresh.dlq_name = entry.dlq
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

    def _dead_letter(self, name: str, sq: SharedQueue) -> str:
        """Move ``sq``'s DEAD messages to its dead-letter queue (created when first
        needed); return that queue's name. A full DLQ leaves them DEAD, counted."""
        dlq = sq.dlq_name
        with contextlib.suppress(QueueFull, QueueDeleted, ClosedError):
            sq.move_out(self._shared(dlq, create=True), DEAD, None, reset=False)
        return dlq

    def _redrive(self, q: Queue) -> int:
        """Move ``q``'s dead-lettered messages back to their queues (which must exist)."""
        sq = self._shared(q.name, create=False)
        live = {e.slot << 32 | e.gen: e.name for e in self.registry.entries()}
        moved = 0
        for origin in sq.mark_redrive(set(live)):
            moved += sq.move_out(self._shared(live[origin], create=False), REDRIVE, origin,
                                 reset=True)
        base = {n: o for o, n in live.items()}.get(q.name.removesuffix(".dlq"))
        if q.name.endswith(".dlq") and base is not None:  # put there directly: by its name
            while msgs := q.get_many(1000, 0, lease=60):
                sq = self._shared(q.name, create=False)
                sq.mark_leases_redrive([m.lease_id for m in msgs if m.lease_id], base)
                moved += sq.move_out(self._shared(live[base], create=False), REDRIVE, base,
                                     reset=True)
        return moved

    def _async_bell(self, sq: SharedQueue) -> AsyncBell:
        from zoldyq.shm.aio import AsyncBell

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
