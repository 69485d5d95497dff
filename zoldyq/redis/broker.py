"""The Redis engine's Broker and Queue: the same interface as ``zoldyq.shm``.

Every operation on a queue is one Lua script on that queue's keys (see
``lua/``), so front ends on any number of hosts never race each other. The
sync client serves the local API and the threaded transports; ``aget_many``
and ``aput_records`` use the asyncio client (one per event loop, its scripts
batched per loop turn by ``batch.Batches``) so an event loop never blocks.

Moving a message between queues (dead letters, redrive) cannot be one script
on a Cluster, where the two queues live on different slots. It goes in three
steps, each atomic: the source parks it in its outbox, the destination takes
it in (idempotently, remembering the id for an hour), the source drops it
from the outbox. A process killed between steps leaves it in the outbox and
whoever touches the queue next finishes the move; it is never lost and never
taken in twice.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import orjson
from redis.exceptions import NoScriptError

from zoldyq.api import (
    DEFAULT_NAMESPACE,
    HIST_BOUNDS,
    KIND_BYTES,
    KIND_JSON,
    Caps,
    LeaseBlock,
    Receipt,
    check_namespace,
    check_queue_name,
)
from zoldyq.errors import (
    BackendUnavailable,
    ClosedError,
    InvalidPayload,
    LeaseExpired,
    MessageTooLarge,
    QueueExists,
    QueueFull,
    QueueNotFound,
    TooManyQueues,
)
from zoldyq.redis import client as rclient
from zoldyq.redis import keys, state
from zoldyq.redis.batch import Batches, Orphan
from zoldyq.redis.bell import Bell
from zoldyq.redis.records import Message
from zoldyq.redis.scripts import SHAS, SOURCES

_perf_ns = time.perf_counter_ns
HIST_FIELDS = len(HIST_BOUNDS) + 1  # buckets, the last one +Inf; then the sum in ns
HIST_SECONDS = 0.5  # latency counts ride along with a queue's scripts at most this often
HARD_MESSAGE_LIMIT = 64 << 20  # no queue takes more; each queue's own cap is in its script

# namespace scripts (KEYS: queues, meta, counters)
_NS_INIT = """
for i = 1, #ARGV, 2 do redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) end
return redis.call('HGETALL', KEYS[2])
"""
_REGISTER = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then return {1, cur} end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {-5, ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {0, ARGV[2]}
"""


def _encode(payload: Any) -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError as ex:
        raise InvalidPayload(str(ex)) from None


def _deliver_at(delay: float | None, deliver_at: int | None) -> int:
    """The µs timestamp a put becomes visible at (0: at once)."""
    if deliver_at is not None:
        return int(deliver_at)
    if delay:
        return time.time_ns() // 1000 + int(delay * 1e6)
    return 0


class Entry(NamedTuple):
    """One queue as a listing shows it (``api.QueueInfo``)."""

    name: str
    caps: Caps
    created_at: int  # µs since the epoch


class Queue(LeaseBlock):
    """A named queue; thread-safe, cheap to make (one per request is fine)."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = check_queue_name(name)

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, namespace={self.broker.namespace!r}, engine='redis')"

    # -- put -------------------------------------------------------------------

    def put(
        self, payload: Any, *, delay: float | None = None, deliver_at: int | None = None
    ) -> Receipt:
        """Enqueue a JSON value. Raises QueueFull, MessageTooLarge, InvalidPayload."""
        return self.put_records([(KIND_JSON, _encode(payload))], deliver_at=_deliver_at(
            delay, deliver_at))

    def put_bytes(
        self, data: bytes, *, delay: float | None = None, deliver_at: int | None = None
    ) -> Receipt:
        return self.put_records([(KIND_BYTES, bytes(data))], deliver_at=_deliver_at(
            delay, deliver_at))

    def put_many(
        self, payloads: Iterable[Any], *, delay: float | None = None,
        deliver_at: int | None = None,
    ) -> Receipt:
        """Enqueue JSON values in one script: all of them or none."""
        return self.put_records([(KIND_JSON, _encode(p)) for p in payloads],
                                deliver_at=_deliver_at(delay, deliver_at))

    def put_records(
        self, records: list[tuple[int, bytes]], *, deliver_at: int | None = None
    ) -> Receipt:
        """Enqueue pre-encoded (kind, data) records, all or none."""
        t0 = _perf_ns()
        if not records:
            return Receipt(len(self), time.time_ns() // 1000)
        reply = self.broker._run(self.name, "put", self._put_args(records, deliver_at),
                                 create=True)
        return self._receipt(reply, t0)

    async def aput_records(
        self, records: list[tuple[int, bytes]], *, deliver_at: int | None = None
    ) -> Receipt:
        """``put_records`` on the asyncio client (the ASGI shell awaits it)."""
        t0 = _perf_ns()
        if not records:
            return Receipt(await asyncio.to_thread(len, self), time.time_ns() // 1000)
        reply = await self.broker._arun(self.name, "put", self._put_args(records, deliver_at),
                                        create=True)
        return self._receipt(reply, t0)

    def _put_args(self, records: list[tuple[int, bytes]], deliver_at: int | None) -> list[Any]:
        datas = [data for _, data in records]
        biggest = max(map(len, datas))
        if biggest > HARD_MESSAGE_LIMIT:
            raise MessageTooLarge(biggest, self.broker.defaults.max_message_bytes, self.name)
        return [deliver_at or b"0", bytes([kind for kind, _ in records]), *datas]

    def _receipt(self, reply: list[Any], t0: int) -> Receipt:
        status = reply[0]
        if status == -2:
            raise MessageTooLarge(int(reply[2]), int(reply[3]), self.name)
        if status == -3:
            size, maxm, maxb, add = (int(v) for v in reply[2:6])
            raise QueueFull(self.name, maxm, size, maxb, add if size < maxm else 0)
        self.broker._note(self.name, "e", t0)
        return Receipt(int(reply[2]), int(reply[3]), int(reply[4]) or None)

    # -- get -------------------------------------------------------------------

    def get(self, timeout: float = 0.0, lease: float | None = None) -> Message | None:
        got = self.get_many(1, timeout, lease)
        return got[0] if got else None

    def _get_args(self, max: int, lease: float | None, register: bool) -> list[Any]:
        return [max, int(lease * 1e6) if lease else 0, 1 if register else 0]

    def _parse_get(self, reply: list[Any]) -> tuple[list[Message], float]:
        if reply[0] == -1:
            raise QueueNotFound(self.name)
        due, exp = int(reply[3]), int(reply[4]) or None
        items = reply[5:]
        if exp is None:
            msgs = [Message(self, rec, None, None) for rec in items]
        else:
            msgs = [Message(self, items[i], items[i + 1].decode(), exp)
                    for i in range(0, len(items), 2)]
        if msgs:
            msgs[-1].queue_size = int(reply[2])
        return msgs, due / 1e6

    def get_many(
        self, max: int = 100, timeout: float = 0.0, lease: float | None = None
    ) -> list[Message]:
        """Dequeue up to ``max`` messages in one script, waiting up to ``timeout`` for the first."""
        if max < 1:
            return []
        t0 = _perf_ns()
        broker = self.broker
        got, due = self._parse_get(broker._run(self.name, "get", self._get_args(max, lease, False)))
        if not got and timeout > 0 and not broker.interrupted:
            got = self._wait(max, timeout, lease, due)
        if got:
            broker._note(self.name, "d", t0)
        return got

    def _wait(self, max: int, timeout: float, lease: float | None, due: float) -> list[Message]:
        broker = self.broker
        deadline = time.monotonic() + timeout
        bell = broker._bell()
        registered = timed_out = False
        got: list[Message] = []
        try:
            with bell.waiter(self.name) as event:
                while not broker.interrupted:
                    event.clear()
                    register = not registered and bell.subscribed.is_set()
                    reply = broker._run(self.name, "get", self._get_args(max, lease, register))
                    got, due = self._parse_get(reply)
                    if got:
                        break
                    registered = registered or register
                    left = deadline - time.monotonic()
                    if left <= 0:
                        timed_out = True
                        break
                    event.wait(_slice(left, due, registered))
        finally:
            if registered:
                broker._run(self.name, "unwait", [1 if timed_out else 0])
        return got

    async def aget(self, timeout: float = 0.0, lease: float | None = None) -> Message | None:
        got = await self.aget_many(1, timeout, lease)
        return got[0] if got else None

    async def aget_many(
        self, max: int = 100, timeout: float = 0.0, lease: float | None = None
    ) -> list[Message]:
        """Like get_many on the asyncio client: the loop never blocks, no thread is parked."""
        if max < 1:
            return []
        t0 = _perf_ns()
        broker = self.broker
        if timeout <= 0:  # one look, nothing to wait for
            got, _ = self._parse_get(await broker._arun(
                self.name, "get", self._get_args(max, lease, False),
                orphan=self._orphan(False)))
            if got:
                broker._note(self.name, "d", t0)
            return got
        deadline = time.monotonic() + timeout
        bell = broker._bell(wait=False)
        registered = timed_out = False
        try:
            with bell.async_waiter(self.name) as event:
                while True:
                    event.clear()
                    register = not registered and bell.subscribed.is_set()
                    reply = await broker._arun(
                        self.name, "get", self._get_args(max, lease, register),
                        orphan=self._orphan(register))
                    got, due = self._parse_get(reply)
                    registered = registered or (register and not got)
                    left = deadline - time.monotonic()
                    if got or broker.interrupted:
                        break
                    if left <= 0:
                        timed_out = True
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), _slice(left, due, registered))
        finally:
            if registered:
                await broker._arun(self.name, "unwait", [1 if timed_out else 0])
        if got:
            broker._note(self.name, "d", t0)
        return got

    def _orphan(self, registering: bool) -> Callable[[Any], Coroutine[Any, Any, Any] | None]:
        """How to undo a get whose caller was cancelled while it ran: plainly taken
        messages go back at the head (leased ones come back when the leases run out), and
        a waiter it counted (``registering`` and it found nothing) stops waiting."""

        def undo(reply: list[Any]) -> Coroutine[Any, Any, Any] | None:
            if reply[0] != 0:
                return None
            if reply[5:]:
                if int(reply[4]):
                    return None
                return self.broker._arun(self.name, "requeue", reply[5:])
            return self.broker._arun(self.name, "unwait", [0]) if registering else None

        return undo

    async def astream(self, lease: float | None = None) -> AsyncIterator[Message]:
        while not self.broker.interrupted:
            for msg in await self.aget_many(100, 1.0, lease):
                yield msg

    def stream(self, timeout: float | None = None, lease: float | None = None) -> Iterator[Message]:
        """Yield messages as they arrive; ends after ``timeout`` idle seconds or on interrupt."""
        idle_until = None if timeout is None else time.monotonic() + timeout
        while not self.broker.interrupted:
            wait = 1.0 if idle_until is None else idle_until - time.monotonic()
            if wait <= 0:
                return
            for msg in self.get_many(100, min(wait, 1.0), lease):
                if timeout is not None:
                    idle_until = time.monotonic() + timeout
                yield msg

    def peek(self, max: int | None = None) -> list[Message]:
        """The first ``max`` ready messages (all by default) without removing them."""
        reply = self.broker._run(self.name, "peek", [-1 if max is None else max])
        if reply[0] == -1:
            raise QueueNotFound(self.name)
        return [Message(self, rec, None, None) for rec in reply[2:]]

    # -- leases ----------------------------------------------------------------

    def ack(self, lease_id: str) -> None:
        """Settle a leased message for good; raises LeaseExpired if the lease is not held."""
        if self.ack_many([lease_id]):
            raise LeaseExpired(self.name, str(lease_id))

    def ack_many(self, lease_ids: Sequence[str]) -> list[str]:
        """Ack each; returns the ids that were not held."""
        ids = [str(i) for i in lease_ids]
        if not ids:
            return []
        reply = self.broker._run(self.name, "ack", ids)
        if reply[0] == -1:
            raise QueueNotFound(self.name)
        return [i.decode() for i in reply[3:]]

    def nack(self, lease_id: str, delay: float = 0.0) -> str | None:
        """Give a leased message back (at the head, or after ``delay`` s); returns the
        dead-letter queue's name when it went there instead."""
        reply = self.broker._run(self.name, "nack", [str(lease_id), int(max(0.0, delay) * 1e6)])
        self._settled(reply, lease_id)
        return reply[3].decode() if reply[2] else None

    def extend(self, lease_id: str, seconds: float) -> int:
        """Move a lease's deadline to ``seconds`` from now; returns it (µs since the epoch)."""
        reply = self.broker._run(self.name, "extend", [str(lease_id), int(seconds * 1e6)])
        self._settled(reply, lease_id)
        return int(reply[2])

    def _settled(self, reply: list[Any], lease_id: str) -> None:
        if reply[0] == -1:
            raise QueueNotFound(self.name)
        if reply[0] == -4:
            raise LeaseExpired(self.name, str(lease_id))

    def requeue(self, messages: Sequence[Message]) -> None:
        """Put plain-taken messages back at the head, in order (an abandoned long-poll)."""
        if messages:
            self.broker._run(self.name, "requeue", [m.record for m in messages])

    def redrive(self) -> int:
        """On a dead-letter queue: move its messages back to their queues; returns how many."""
        total = 0
        for _ in range(max(1, len(self) // 100 + 1)):
            reply = self.broker._run(self.name, "redrive", [100])
            if reply[0] == -1:
                raise QueueNotFound(self.name)
            total += int(reply[2])
            if not int(reply[2]):
                break
        return total

    # -- management ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        reply = self.broker._run(self.name, "stats", [])
        if reply[0] == -1:
            raise QueueNotFound(self.name)
        n = {k: int(v) for k, v in _pairs(reply[2]).items()}
        meta = {k: v.decode() for k, v in _pairs(reply[3]).items()}
        n.update(state.parse(reply[4]))
        ready, delayed, inflight, oldest, now = (int(v) for v in reply[5:10])
        return {
            "name": self.name,
            "size": n["size"],
            "ready": ready,
            "capacity": int(meta["max_messages"]),
            "bytes": n["bytes"],
            "max_bytes": int(meta["max_bytes"]),
            "max_message_bytes": int(meta["max_message_bytes"]),
            "max_deliveries": int(meta.get("max_deliveries") or 0) or None,
            "dead_letter_queue": meta.get("dlq") or None,
            "enqueued_total": n.get("enqueued_total", 0),
            "dequeued_total": n.get("dequeued_total", 0),
            "cleared_total": n.get("cleared_total", 0),
            "queue_full_total": n.get("queue_full_total", 0),
            "dequeue_timeout_total": n.get("dequeue_timeout_total", 0),
            "bytes_in_total": n.get("bytes_in_total", 0),
            "bytes_out_total": n.get("bytes_out_total", 0),
            "waiters": max(0, n.get("waiters", 0)),
            "reserved_bytes": n["bytes"],
            "created_at": int(meta["created_at"]),
            "inflight": inflight,
            "delayed": delayed,
            "acked_total": n.get("acked_total", 0),
            "redelivered_total": n.get("redelivered_total", 0),
            "dead_lettered_total": n.get("dead_lettered_total", 0),
            "oldest_age_seconds": max(0.0, (now - oldest) / 1e6) if oldest else 0.0,
            "enqueue_histogram": _hist(n, "e"),
            "dequeue_histogram": _hist(n, "d"),
        }

    def __len__(self) -> int:
        return int(self.stats()["size"])

    def clear(self) -> int:
        """Drop every message now in the queue (ready, delayed, leased); returns how many."""
        reply = self.broker._run(self.name, "clear", [])
        if reply[0] == -1:
            raise QueueNotFound(self.name)
        return int(reply[2])

    def delete(self) -> None:
        self.broker.delete(self.name)


def _slice(left: float, due: float, registered: bool) -> float:
    """How long a waiter sleeps: until the deadline, or the next due message or lease;
    in short slices while the wake-up subscription is not up yet."""
    wait = left if registered else min(left, 0.05)
    if due >= 0:
        wait = min(wait, due + 0.001)
    return max(wait, 0.0)


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def _hist(n: dict[str, int], kind: str) -> list[int]:
    return [n.get(f"{kind}{i}", 0) for i in range(HIST_FIELDS)] + [n.get(f"{kind}s", 0)]


class Broker:
    """This process's handle on one namespace in one Redis (or Redis Cluster)."""

    engine = "redis"
    remote = True  # every call is a network round trip (the ASGI shell awaits them)

    def __init__(
        self, url: str, namespace: str | None = None, *, max_queues: int = 100,
        max_messages: int = 100_000, max_bytes: int = 32 << 20,
        max_message_bytes: int = 128 << 10, password_file: str | None = None,
    ) -> None:
        self.url = url
        self.password_file = password_file
        self.safe_url = rclient.safe_url(url)
        self.namespace = check_namespace(namespace or DEFAULT_NAMESPACE)
        self.interrupted = False
        self.clock: Callable[[], int] | None = None  # tests: a fake µs clock
        self._client = rclient.sync_client(url, password_file)
        self._ns_init = self._client.register_script(_NS_INIT)
        self._register = self._client.register_script(_REGISTER)
        self._nskeys = keys.registry(self.namespace)
        self._channel = keys.channel(self.namespace)
        self._asked = {
            "max_queues": max_queues, "max_messages": max_messages, "max_bytes": max_bytes,
            "max_message_bytes": max_message_bytes,
        }
        self._meta: dict[str, int] | None = None
        self._lock = threading.Lock()
        self._hist: dict[str, dict[str, list[int]]] = {}  # queue -> kind -> counts, sum
        self._hist_sent: dict[str, float] = {}
        self._bell_thread: Bell | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._acalls: rclient.Calls | None = None
        self._abatches: Batches | None = None
        self._closed = False
        with contextlib.suppress(BackendUnavailable):
            self._load_meta()  # a front end may start before Redis: it loads on first use

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Broker({self.namespace!r}, {self.safe_url!r})"

    # -- namespace -------------------------------------------------------------

    def _load_meta(self) -> dict[str, int]:
        meta = self._meta
        if meta is None:
            args: list[Any] = []
            for k, v in {**self._asked, "created_at": time.time_ns() // 1000}.items():
                args += (k, v)
            with rclient.mapped(self.url):
                flat = self._ns_init(self._nskeys, args)
            meta = self._meta = {k: int(v) for k, v in _pairs(flat).items()}
        return meta

    @property
    def defaults(self) -> Caps:
        try:
            m: dict[str, int] = self._load_meta()
        except BackendUnavailable:
            m = self._asked
        return Caps(m["max_messages"], m["max_bytes"], m["max_message_bytes"])

    @property
    def max_queues(self) -> int:
        try:
            return self._load_meta()["max_queues"]
        except BackendUnavailable:
            return self._asked["max_queues"]

    @property
    def created_at(self) -> int:
        return self._load_meta()["created_at"]

    def queue(self, name: str) -> Queue:
        return Queue(self, name)

    def create_queue(
        self, name: str, *, max_messages: int | None = None, max_bytes: int | None = None,
        max_message_bytes: int | None = None, max_deliveries: int | None = None,
        dead_letter_queue: str | None = None, exist_ok: bool = False,
    ) -> Queue:
        """Create ``name`` with its own caps. Raises QueueExists when it exists (unless
        ``exist_ok`` and its caps are the ones asked for), TooManyQueues when full."""
        check_queue_name(name)
        asked = {
            "max_messages": max_messages, "max_bytes": max_bytes,
            "max_message_bytes": max_message_bytes, "max_deliveries": max_deliveries,
            "dlq": dead_letter_queue,
        }
        if max_deliveries and not dead_letter_queue:
            asked["dlq"] = f"{name}.dlq"
        if asked["dlq"]:
            check_queue_name(asked["dlq"])
        created, spec = self._create(name, asked)
        if not created:
            differs = any(v is not None and str(spec.get(k)) != str(v) for k, v in asked.items())
            if differs or not exist_ok:
                raise QueueExists(name, other_limits=differs)
        return Queue(self, name)

    def _create(self, name: str, asked: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        d = self.defaults
        mmb = asked.get("max_message_bytes") or d.max_message_bytes
        spec = {
            "name": name,
            "max_messages": asked.get("max_messages") or d.max_messages,
            "max_bytes": asked.get("max_bytes") or max(d.max_bytes, 2 * (mmb + 64)),
            "max_message_bytes": mmb,
            "max_deliveries": asked.get("max_deliveries") or 0,
            "dlq": asked.get("dlq") or "",
            "created_at": time.time_ns() // 1000,
        }
        with rclient.mapped(self.url):
            status, cur = self._register(
                self._nskeys, [name, orjson.dumps(spec), self.max_queues])
        if status == -5:
            raise TooManyQueues(self.max_queues)
        spec = orjson.loads(cur)
        args: list[Any] = ["bell", self._channel]
        for k, v in spec.items():
            args += (k, v)
        self._run(name, "init", args)
        return status == 0, spec

    def delete(self, name: str) -> None:
        """Delete queue ``name`` and its messages; its waiters everywhere see it gone."""
        check_queue_name(name)
        with rclient.mapped(self.url):
            removed = self._client.hdel(self._nskeys[0], name)
            self._client.delete(*keys.queue(self.namespace, name))
            self._client.publish(self._channel, name)
        if not removed:
            raise QueueNotFound(name)

    def queues(self) -> list[str]:
        with rclient.mapped(self.url):
            names = self._client.hkeys(self._nskeys[0])
        return sorted(n.decode() for n in names)

    def entries(self) -> list[Entry]:
        with rclient.mapped(self.url):
            table = self._client.hgetall(self._nskeys[0])
        out = []
        for name, raw in sorted(table.items()):
            s = orjson.loads(raw)
            caps = Caps(s["max_messages"], s["max_bytes"], s["max_message_bytes"])
            out.append(Entry(name.decode(), caps, s["created_at"]))
        return out

    def exists(self, name: str) -> bool:
        with rclient.mapped(self.url):
            return bool(self._client.hexists(self._nskeys[0], check_queue_name(name)))

    def ping(self) -> float:
        """Round-trip time to Redis in seconds; raises BackendUnavailable."""
        t0 = time.perf_counter()
        with rclient.mapped(self.url):
            self._client.ping()
        return time.perf_counter() - t0

    def counters(self, create: bool = True) -> Counters:
        return Counters(self)

    @property
    def destroyed(self) -> bool:
        """Never: on Redis a namespace is re-made by the next front end that uses it."""
        return False

    def free_bytes(self) -> int | None:
        return None  # Redis's memory is its own to report (INFO memory)

    def locks(self) -> Iterator[tuple[str, contextlib.AbstractContextManager[object]]]:
        return iter(())  # every operation is one script: there is no lock to get stuck

    def interrupt(self) -> None:
        """Wake every waiter of this process now; later waits return at once (shutdown)."""
        self.interrupted = True
        if self._bell_thread is not None:
            self._bell_thread._wake_all()

    def close(self) -> None:
        if self._closed:
            return
        self.interrupt()
        self._closed = True
        if self._bell_thread is not None:
            self._bell_thread.stop()
        with contextlib.suppress(*rclient.ERRORS):
            self._client.close()

    # -- internals -------------------------------------------------------------

    def _args(self, name: str, script: str, args: list[Any]) -> list[Any]:
        """ARGV: the clock, the latency counts due to ride along, then ``args``. Counts
        ride at most every HIST_SECONDS per queue (each is a command in the script),
        and always with ``stats``, so this process's own reads see all of them."""
        hist: str | bytes = b""
        if name in self._hist:
            now = time.monotonic()
            with self._lock:
                if script == "stats" or now - self._hist_sent.get(name, 0.0) > HIST_SECONDS:
                    pending = self._hist.pop(name, None)
                    if pending:
                        hist = ",".join(
                            f"{kind}{'s' if i == HIST_FIELDS else i}:{n}"
                            for kind, counts in pending.items()
                            for i, n in enumerate(counts) if n)
                        self._hist_sent[name] = now
        return [self.clock() if self.clock else b"0", hist, *args]

    def _run(self, name: str, script: str, args: list[Any], create: bool = False) -> Any:
        """Run a queue script; ``create``: make the queue first if it does not exist."""
        if self._closed:
            raise ClosedError(f"broker for namespace '{self.namespace}'")
        reply = self._eval(name, script, self._args(name, script, args))
        if reply[0] == -1 and script != "init" and (create or self._registered(name)):
            self._create(name, {})  # registered but its keys not made yet (or any more): make
            reply = self._eval(name, script, self._args(name, script, args))
        if reply[1]:
            self._flush_outbox(name)
        return reply

    def _eval(self, name: str, script: str, argv: list[Any]) -> Any:
        """One queue script on the sync client, as EVALSHA (EVAL when the server lacks it)."""
        qkeys = keys.queue(self.namespace, name)
        with rclient.mapped(self.url):
            try:
                return self._client.evalsha(SHAS[script], len(qkeys), *qkeys, *argv)
            except NoScriptError:  # a new or restarted server: EVAL sends it (and caches it)
                return self._client.eval(SOURCES[script], len(qkeys), *qkeys, *argv)

    def _registered(self, name: str) -> bool:
        with rclient.mapped(self.url):
            return bool(self._client.hexists(self._nskeys[0], name))

    async def _arun(self, name: str, script: str, args: list[Any], create: bool = False,
                    orphan: Orphan = None) -> Any:
        """``_run`` on the asyncio client; ``orphan`` gets the reply if the caller was
        cancelled while its script ran."""
        if self._closed:
            raise ClosedError(f"broker for namespace '{self.namespace}'")
        loop = asyncio.get_running_loop()
        calls, batches = self._acalls, self._abatches
        if calls is None or batches is None or self._aloop is not loop:  # one loop's client
            self._aloop, client = loop, rclient.async_client(self.url, self.password_file)
            calls = self._acalls = rclient.Calls(self.url, client)
            batches = self._abatches = Batches(client)
        reply = await calls(batches.evalsha(SHAS[script], SOURCES[script],
                                            keys.queue(self.namespace, name),
                                            self._args(name, script, args), orphan))
        if reply[0] == -1 and (create or await asyncio.to_thread(self._registered, name)):
            return await asyncio.to_thread(self._run, name, script, args, create)  # rare
        if reply[1]:
            await asyncio.to_thread(self._flush_outbox, name)
        return reply

    def _flush_outbox(self, name: str) -> None:
        """Finish moving what ``name`` parked for other queues (see the module docstring)."""
        outbox = keys.queue(self.namespace, name)[keys.OUTBOX]
        with rclient.mapped(self.url):
            parked = self._client.hgetall(outbox)
        for field, rec in sorted(parked.items(), key=lambda kv: int(kv[0].rsplit(b"|", 1)[1])):
            mode, dest, _ = field.decode().split("|", 2)  # in the source's order
            self._run(dest, "take_in", [mode, f"{name}|{field.decode()}", rec], create=True)
            self._eval(name, "sent", [b"0", b"", field])

    def _note(self, name: str, kind: str, t0: int) -> None:
        """Count one operation's latency; the counts ride along with a later script."""
        ns = _perf_ns() - t0
        bucket = bisect.bisect_left(HIST_BOUNDS, ns / 1e9)
        with self._lock:
            kinds = self._hist.get(name)
            if kinds is None:
                kinds = self._hist[name] = {}
            counts = kinds.get(kind)
            if counts is None:
                counts = kinds[kind] = [0] * (HIST_FIELDS + 1)
            counts[bucket] += 1
            counts[HIST_FIELDS] += ns

    def _bell(self, wait: bool = True) -> Bell:
        """This process's wake-up subscription (started on first use); ``wait``: give it a
        second to come up (the event loop never waits: it takes short slices meanwhile)."""
        with self._lock:
            bell = self._bell_thread
            if bell is None:
                own = rclient.sync_client(self.url, self.password_file)
                bell = self._bell_thread = Bell(own, self._channel)
                bell.start()
        if wait and not bell.subscribed.is_set():
            bell.subscribed.wait(1.0)
        return bell


class Counters:
    """Process-level figures (HTTP requests, WS connections) shared by every front end.

    ``add`` counts locally and sends at most once a second, so counting a
    request costs no round trip to Redis.
    """

    FLUSH_SECONDS = 1.0

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.key = broker._nskeys[2]
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._flushed = time.monotonic()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._pending[key] += n
            due = time.monotonic() - self._flushed > self.FLUSH_SECONDS
        if due:
            with contextlib.suppress(BackendUnavailable):
                self.flush()

    def set(self, key: str, value: int) -> None:
        with rclient.mapped(self.broker.url):
            self.broker._client.hset(self.key, key, value)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._flushed = time.monotonic()
        if not pending:
            return
        try:
            with rclient.mapped(self.broker.url):
                pipe = self.broker._client.pipeline(transaction=False)
                for k, n in pending.items():
                    pipe.hincrby(self.key, k, n)
                pipe.execute()
        except BackendUnavailable:
            with self._lock:
                self._pending.update(pending)
            raise

    def items(self) -> dict[str, int]:
        with contextlib.suppress(BackendUnavailable):
            self.flush()
        with rclient.mapped(self.broker.url):
            raw = self.broker._client.hgetall(self.key)
        return {k.decode(): int(v) for k, v in raw.items()}

    def close(self) -> None:
        with contextlib.suppress(BackendUnavailable):
            self.flush()


def connect(
    url: str, namespace: str | None = None, *, password_file: str | None = None,
    **defaults: int,
) -> Broker:
    """The Redis engine's Broker for ``namespace`` on the Redis at ``url``.

    ``defaults`` (max_queues, max_messages, max_bytes, max_message_bytes) are
    stored for the namespace if it is new; an existing namespace keeps its own.
    """
    return Broker(url, namespace, password_file=password_file, **defaults)


def destroy(url: str, namespace: str | None = None, *, password_file: str | None = None) -> None:
    """Delete every key of the namespace: its queues, messages, counters, defaults."""
    ns = check_namespace(namespace or DEFAULT_NAMESPACE)
    c = rclient.sync_client(url, password_file)
    try:
        with rclient.mapped(url):
            for name in c.hkeys(keys.registry(ns)[0]):
                c.delete(*keys.queue(ns, name.decode()))
            c.delete(*keys.registry(ns))
            for key in c.scan_iter(match=keys.pattern(ns), count=1000):
                c.delete(key)
    finally:
        with contextlib.suppress(*rclient.ERRORS):
            c.close()

