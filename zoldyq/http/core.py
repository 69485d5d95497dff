"""The HTTP API as plain functions: a ``Call`` in, a ``Reply`` (or a ``Wait``) out.

``skeleton`` runs a handler from ``routes.ROUTES`` for both app shells; nothing
here knows which server runs it. A plain handler answers at once. A waiting
handler (dequeue) answers a ``Wait``: what to wait for and how to turn the
messages into a Reply; each shell waits its own way (a coroutine in asgi, a
parked thread in wsgi).

A JSON payload is stored as the bytes the client sent (``api.json_field``: a
number such as 123456789012345678901234567890 is kept, not rounded to a
float), and dequeue splices ``msg.data`` into the response: a payload is
never decoded and re-encoded on the way through.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import orjson

from zoldyq import api, errors
from zoldyq.broker import json_records, put_json_items
from zoldyq.errors import RequestError
from zoldyq.settings import Settings

JSON = "application/json"
OCTETS = "application/octet-stream"
_loads = orjson.loads
_dumps = orjson.dumps


class Reply(NamedTuple):
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: dict[str, str] | None = None


class Call(NamedTuple):
    """What a handler may read of a request (path parameters come as keywords)."""

    content_type: str | None = None
    body: bytes = b""
    query: Mapping[str, str] = {}


class Wait(NamedTuple):
    """A waiting handler's answer: take up to ``max`` from ``queue`` within ``timeout``
    (leased for ``lease`` seconds when given)."""

    queue: api.Queue
    max: int
    timeout: float
    reply: Callable[[Sequence[api.Message]], Reply]
    lease: float | None = None

    def take(self, timeout: float) -> Sequence[api.Message]:
        return self.queue.get_many(self.max, timeout, self.lease)

    async def atake(self, timeout: float) -> Sequence[api.Message]:
        return await self.queue.aget_many(self.max, timeout, self.lease)

    def give_back(self, msgs: Sequence[api.Message]) -> None:
        """The client left before the messages were written to it: back at the head."""
        if not msgs:
            return
        if self.lease is None:
            self.queue.requeue(msgs)
        else:
            self.queue.ack_many([])  # settle what is due first
            for m in msgs:
                with contextlib.suppress(errors.LeaseExpired):
                    m.nack()


NO_CONTENT = Reply(204)


def write(resp: Any, reply: Reply) -> None:
    """Put a Reply on a Falcon response (WSGI or ASGI: same attributes)."""
    resp.status = reply.status
    if reply.status != 204:
        resp.data = reply.body
        if reply.content_type != JSON:  # JSON is the apps' default media type already
            resp.content_type = reply.content_type
    if reply.headers:
        resp.set_headers(reply.headers)


class Ctx:
    """What every handler of one app needs: settings, the attached broker, queue handles."""

    MAX_CACHED = 4096

    def __init__(self, settings: Settings, broker: api.Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.max_batch = settings.max_batch
        self.max_timeout = settings.dequeue_max_timeout
        self.token = settings.token.encode() if settings.token else None
        self.max_body = settings.max_body_bytes
        self.origins = api.parse_origins(settings.cors_origins)
        self.own_ports = frozenset({settings.port, settings.ws_port})
        self.ui_read_only = settings.ui == "read-only"
        self._queues: dict[str, api.Queue] = {}
        self._lock = threading.Lock()

    def queue(self, name: str) -> api.Queue:
        """A cached handle; the name is validated once (InvalidName -> 400).

        A handle follows its name: when the queue is deleted and re-created, by
        any process, its next operation finds the new one.
        """
        q = self._queues.get(name)
        if q is None:
            q = self.broker.queue(name)
            with self._lock:
                if len(self._queues) >= self.MAX_CACHED:
                    self._queues.clear()
                self._queues[name] = q
        return q


# -- auth, bodies and parameters ---------------------------------------------------


def check_origin(ctx: Ctx, origin: str | None, host: str | None) -> None:
    """Raises 403 ``forbidden_origin`` for a browser page the policy does not allow."""
    if origin is not None and not api.origin_allowed(origin, host, ctx.own_ports, ctx.origins):
        raise RequestError(
            403, "forbidden_origin", f"requests from pages at {_short(origin, 80)} are not "
            "allowed (the server allows its own origin and those in ZOLDYQ_CORS_ORIGINS)"
        )


def check_auth(ctx: Ctx, header: str | None) -> None:
    """Constant-time bearer-token check; raises 401 ``unauthorized``."""
    if ctx.token is None:
        return
    given = header[7:].strip().encode() if header and header[:7].lower() == "bearer " else b""
    if not hmac.compare_digest(given, ctx.token):
        raise RequestError(
            401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer <token>'"
        )



def _json_body(body: bytes) -> Any:
    if not body:
        raise RequestError(400, "bad_json", "request body is empty: send a JSON object")
    try:
        return _loads(body)
    except orjson.JSONDecodeError as ex:
        raise RequestError(400, "bad_json", f"request body is not valid JSON: {ex}") from None


def _field(body: bytes, key: str, what: str) -> Any:
    doc = _json_body(body)
    if not isinstance(doc, dict) or key not in doc:
        raise RequestError(
            400, f"missing_{key}", f'request body must be a JSON object with a "{key}" field '
            f"({what})"
        )
    return doc[key]


def parse_timeout(raw: str | None, limit: float) -> float:
    """The ``timeout`` query parameter: seconds, 0..limit; absent means 0."""
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= limit:  # also rejects nan
        raise RequestError(
            400, "bad_timeout", f"timeout must be a number of seconds from 0 to {limit:g}, "
            f"got {raw[:40]!r}", max_timeout=limit,
        )
    return value


MAX_LEASE = 43_200.0  # seconds: 12 hours
MAX_DELAY = 366 * 86_400.0  # seconds: a year


def parse_seconds(raw: object, what: str, limit: float, code: str,
                  positive: bool = False, text: bool = False) -> float:
    """A number of seconds in [0, limit], or (0, limit] if ``positive``: a JSON number
    from a body, or (``text``) a query string's digits. A body's "5" is refused: its
    schema says number, and a client that sends a string has a bug to hear about."""
    value = math.nan
    if ((text and isinstance(raw, str))
            or (not text and isinstance(raw, int | float) and not isinstance(raw, bool))):
        with contextlib.suppress(ValueError):
            value = float(raw)
    if not 0 <= value <= limit or (positive and value == 0):  # also rejects nan
        raise RequestError(400, code, f"{what} must be a number of seconds "
                           f"{'above' if positive else 'from'} 0 to {limit:g}, got {_short(raw)}")
    return value




def parse_delivery(source: Mapping[str, Any], text: bool = False) -> int | None:
    """``delay`` (seconds) and/or ``deliver_at`` (µs since the epoch): when a put becomes
    visible (the later of the two); None for now. JSON numbers from a body, or
    (``text``) a query string's digits, as ``parse_seconds``."""
    now = time.time_ns() // 1000
    due = 0
    if "delay" in source:
        due = now + int(parse_seconds(source["delay"], "delay", MAX_DELAY, "bad_delay",
                                      text=text) * 1e6)
    if "deliver_at" in source:
        at = source["deliver_at"]
        if isinstance(at, float) and at.is_integer():  # JSON Schema's integers include 5.0
            at = int(at)
        try:
            value = int(at) if (isinstance(at, str) if text else isinstance(at, int)
                                and not isinstance(at, bool)) else -1
        except ValueError:
            value = -1
        if not 0 <= value <= api.MAX_DELIVER_AT:
            raise RequestError(400, "bad_delay", "deliver_at must be an integer of µs since "
                               f"the epoch, got {_short(at)}")
        due = max(due, value)
    return due if due > now else None


def parse_max(raw: str, limit: int) -> int:
    """The ``max`` query parameter of a batch dequeue: 1..limit."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= limit:
        raise RequestError(
            400, "bad_max", f"max must be an integer from 1 to {limit}, got {raw[:40]!r}",
            max_batch=limit,
        )
    return value


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages never echo unbounded input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _qname(name: str) -> bytes:
    return b'"' + name.encode() + b'"'  # validated names need no JSON escaping


# -- messages ----------------------------------------------------------------------


def is_raw(content_type: str | None) -> bool:
    """Whether the body is raw bytes: ``application/octet-stream``, in any case."""
    return content_type is not None and content_type != JSON and \
        content_type.partition(";")[0].strip().lower() == OCTETS  # JSON: most requests


def _raw_field(body: bytes, key: str, what: str) -> tuple[dict[str, Any], bytes]:
    """The JSON object ``body`` and the exact bytes of its member ``key``."""
    if not body:
        raise RequestError(400, "bad_json", "request body is empty: send a JSON object")
    try:
        doc, raw = api.json_field(body, key)
    except orjson.JSONDecodeError as ex:
        raise RequestError(400, "bad_json", f"request body is not valid JSON: {ex}") from None
    except errors.InvalidPayload as ex:
        raise RequestError(400, "bad_json", f"request body cannot be stored: {ex}") from None
    if raw is None:
        raise RequestError(
            400, f"missing_{key}", f'request body must be a JSON object with a "{key}" field '
            f"({what})"
        )
    return doc, raw


def _deliver_at(at: int | None) -> bytes:
    return b',"deliver_at":%d}' % at if at is not None else b"}"


class Put(NamedTuple):
    """An enqueue parsed but not stored yet: ``run`` stores it and answers. The ASGI
    shell awaits ``arun`` instead on an engine behind a network round trip."""

    queue: api.Queue
    records: list[tuple[int, bytes]]
    deliver_at: int | None
    reply: Callable[[api.Receipt], Reply]

    def run(self) -> Reply:
        recs, at = self.records, self.deliver_at
        if at is None and len(recs) == 1 and recs[0][0] == api.KIND_BYTES:
            return self.reply(self.queue.put_bytes(recs[0][1]))  # shm's one-record fast path
        return self.reply(self.queue.put_records(recs, deliver_at=at))

    async def arun(self) -> Reply:
        q = cast(api.RemoteQueue, self.queue)
        return self.reply(await q.aput_records(self.records, deliver_at=self.deliver_at))


def enqueue(ctx: Ctx, call: Call, name: str) -> Reply:
    return enqueue_put(ctx, call, name).run()


def enqueue_put(ctx: Ctx, call: Call, name: str) -> Put:
    q = ctx.queue(name)
    if is_raw(call.content_type):
        at = parse_delivery(call.query, text=True) if call.query else None
        records: list[tuple[int, bytes]] = [(api.KIND_BYTES, call.body)]
    else:
        doc, raw = _raw_field(call.body, "payload", "any JSON value")
        at = parse_delivery(doc) if len(doc) > 1 else None
        records = api.CheckedRecords([(api.KIND_JSON, raw)])

    def reply(r: api.Receipt) -> Reply:
        return Reply(200, b'{"queued":true,"queue_name":%s,"queue_size":%d,"enqueued_at":%d%s'
                     % (_qname(name), r.queue_size, r.enqueued_at, _deliver_at(r.deliver_at)))

    return Put(q, records, at, reply)


def enqueue_batch(ctx: Ctx, call: Call, name: str) -> Reply:
    return enqueue_batch_put(ctx, call, name).run()


class BatchPut(NamedTuple):
    """A batch enqueue parsed but not stored yet, as ``Put``: its payloads stay the array's
    bytes until stored (``broker.put_json_items``), never one object each on shm."""

    queue: api.Queue
    array: bytes
    parsed: list[Any]
    deliver_at: int | None
    reply: Callable[[api.Receipt], Reply]

    def run(self) -> Reply:
        return self.reply(put_json_items(self.queue, self.array, self.parsed, self.deliver_at))

    async def arun(self) -> Reply:
        q = cast(api.RemoteQueue, self.queue)
        records = json_records(self.array, self.parsed, api.KIND_JSON)
        return self.reply(await q.aput_records(records, deliver_at=self.deliver_at))


def enqueue_batch_put(ctx: Ctx, call: Call, name: str) -> BatchPut:
    q = ctx.queue(name)
    doc, raw = _raw_field(call.body, "payloads", "a list of JSON values")
    parsed = doc["payloads"]
    if not isinstance(parsed, list):
        raise RequestError(400, "bad_payloads", '"payloads" must be a JSON list')
    if len(parsed) > ctx.max_batch:
        raise RequestError(
            400, "batch_too_large",
            f"a batch holds at most {ctx.max_batch} messages, got {len(parsed)}",
            max_batch=ctx.max_batch,
        )
    at = parse_delivery(doc) if len(doc) > 1 else None

    def reply(r: api.Receipt) -> Reply:
        return Reply(200, b'{"queued":true,"queue_name":%s,"count":%d,"queue_size":%d,'
                     b'"enqueued_at":%d%s' % (_qname(name), len(parsed), r.queue_size,
                                              r.enqueued_at, _deliver_at(r.deliver_at)))

    return BatchPut(q, raw, parsed, at, reply)


def dequeue(ctx: Ctx, call: Call, name: str) -> Wait:
    """One message, or a batch with ``max``, waiting up to ``timeout`` seconds;
    leased for ``lease`` seconds when asked."""
    q = ctx.queue(name)
    query = call.query
    timeout = parse_timeout(query.get("timeout"), ctx.max_timeout)
    raw_lease = query.get("lease")
    lease = None if raw_lease is None else parse_seconds(
        raw_lease, "lease", MAX_LEASE, "bad_lease", positive=True, text=True)
    max_ = query.get("max")
    if max_ is None:
        return Wait(q, 1, timeout, lambda msgs: dequeue_reply(q, msgs, False), lease)
    n = parse_max(max_, ctx.max_batch)
    leased = lease is not None
    return Wait(q, n, timeout, lambda msgs: dequeue_reply(q, msgs, True, leased), lease)


def _lease_fields(m: api.Message) -> bytes:
    if m.lease_id is None:
        return b""
    return b',"lease_id":"%s","delivery_count":%d,"lease_expires_at":%d' % (
        m.lease_id.encode(), m.delivery_count, m.lease_expires_at or 0)


_ITEM = b'{"payload":%s,"enqueued_at":%d}'
_LEASED_ITEM = (b'{"payload":%s,"enqueued_at":%d,"lease_id":"%s","delivery_count":%d,'
                b'"lease_expires_at":%d}')


def _raw_item(m: api.Message) -> bytes:
    return b'{"payload":"%s","encoding":"base64","enqueued_at":%d%s}' % (
        base64.b64encode(m.data), m.enqueued_at, _lease_fields(m))


def _size(q: api.Queue) -> int:
    try:
        return len(q)
    except errors.ZoldyQError:  # deleted meanwhile
        return 0


def dequeue_reply(q: api.Queue, msgs: Sequence[api.Message], batch: bool,
                  leased: bool = False) -> Reply:
    """The answer to a dequeue; ``leased``: the messages of a leased get (all of them)."""
    if not msgs:
        return NO_CONTENT
    name = _qname(q.name)
    size = getattr(msgs[-1], "queue_size", None)  # as the engine saw it (redis: no extra trip)
    if size is None:
        size = _size(q)
    if batch:  # the cost of a batch is per message: one formatting step each
        raw = api.KIND_BYTES
        items = [
            _LEASED_ITEM % (m.data, m.enqueued_at, m.lease_id.encode(),  # type: ignore[union-attr]
                            m.delivery_count, m.lease_expires_at) if m.kind != raw
            else _raw_item(m) for m in msgs
        ] if leased else [
            _ITEM % (m.data, m.enqueued_at) if m.kind != raw else _raw_item(m) for m in msgs]
        return Reply(200, b'{"messages":[%s],"count":%d,"queue_name":%s,"queue_size":%d}'
                     % (b",".join(items), len(items), name, size))
    m = msgs[0]
    if m.is_raw:
        headers = {
            "X-Zoldyq-Queue-Name": q.name,
            "X-Zoldyq-Enqueued-At": str(m.enqueued_at),
            "X-Zoldyq-Queue-Size": str(size),
        }
        if m.lease_id is not None:
            headers["X-Zoldyq-Lease-Id"] = m.lease_id
            headers["X-Zoldyq-Delivery-Count"] = str(m.delivery_count)
            headers["X-Zoldyq-Lease-Expires-At"] = str(m.lease_expires_at)
        return Reply(200, m.data, OCTETS, headers)
    return Reply(200, b'{"payload":%s,"queue_name":%s,"enqueued_at":%d,"queue_size":%d%s}'
                 % (m.data, name, m.enqueued_at, size, _lease_fields(m)))


# -- leases ------------------------------------------------------------------------


def _lease_id(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise RequestError(400, "bad_lease", f"lease_id must be a lease id string, got "
                           f"{_short(value)}")
    return value


def ack(ctx: Ctx, call: Call, name: str) -> Reply:
    """``{"lease_id"}`` -> acked or 409; ``{"lease_ids": [...]}`` -> which were not held.

    Both at once is refused: which one the sender meant is a guess."""
    q = ctx.queue(name)
    doc = _json_body(call.body)
    if isinstance(doc, dict) and "lease_ids" in doc:
        if "lease_id" in doc:
            raise RequestError(400, "bad_lease", 'send "lease_id" or "lease_ids", not both')
        ids = doc["lease_ids"]
        if not isinstance(ids, list):
            raise RequestError(400, "bad_lease", '"lease_ids" must be a list of lease ids')
        if not (set(map(type, ids)) <= {str} and all(0 < n <= 64 for n in map(len, ids))):
            for i in ids:  # a batch is hundreds of ids: checked whole first, one by one to fail
                _lease_id(i)
        not_held = q.ack_many(ids)
        return Reply(200, _dumps({"acked": len(ids) - len(not_held), "not_held": not_held,
                                  "queue_name": name}))
    q.ack(_lease_id(_field(call.body, "lease_id", "the id a leased dequeue returned")))
    return Reply(200, b'{"acked":1,"queue_name":%s}' % _qname(name))


def nack(ctx: Ctx, call: Call, name: str) -> Reply:
    lease_id = _lease_id(_field(call.body, "lease_id", "the id a leased dequeue returned"))
    doc = _json_body(call.body)
    delay = parse_seconds(doc.get("delay", 0), "delay", MAX_DELAY, "bad_delay")
    dlq = ctx.queue(name).nack(lease_id, delay)
    out: dict[str, Any] = {"nacked": 1, "queue_name": name}
    if dlq is not None:
        out.update(dead_lettered=True, dead_letter_queue=dlq)
    return Reply(200, _dumps(out))


def extend(ctx: Ctx, call: Call, name: str) -> Reply:
    lease_id = _lease_id(_field(call.body, "lease_id", "the id a leased dequeue returned"))
    doc = _json_body(call.body)
    if "lease" not in doc:
        raise RequestError(400, "bad_lease", 'request body needs "lease": seconds from now')
    seconds = parse_seconds(doc["lease"], "lease", MAX_LEASE, "bad_lease", positive=True)
    at = ctx.queue(name).extend(lease_id, seconds)
    return Reply(200, b'{"lease_expires_at":%d,"queue_name":%s}' % (at, _qname(name)))


def redrive(ctx: Ctx, call: Call, name: str) -> Reply:
    n = ctx.queue(name).redrive()
    return Reply(200, b'{"redriven":%d,"queue_name":%s}' % (n, _qname(name)))


PEEK_DEFAULT = 10


def peek(ctx: Ctx, call: Call, name: str) -> Reply:
    """The first ``max`` messages (default 10), left in place; the shape of a batch dequeue."""
    max_ = call.query.get("max")
    n = PEEK_DEFAULT if max_ is None else parse_max(max_, ctx.max_batch)
    q = ctx.queue(name)
    msgs = q.peek(n)
    items = [
        b'{"payload":"%s","encoding":"base64","enqueued_at":%d,"size":%d}'
        % (base64.b64encode(m.data), m.enqueued_at, len(m.data)) if m.is_raw
        else b'{"payload":%s,"enqueued_at":%d,"size":%d}' % (m.data, m.enqueued_at, len(m.data))
        for m in msgs
    ]
    return Reply(200, b'{"messages":[%s],"count":%d,"queue_name":%s,"queue_size":%d}'
                 % (b",".join(items), len(items), _qname(name), _size(q)))


# -- queue management ------------------------------------------------------------


def queue_info(q: api.Queue) -> dict[str, Any]:
    s = q.stats()
    for key in ("enqueue_histogram", "dequeue_histogram", "reserved_bytes"):
        s.pop(key, None)
    s["utilization"] = s["size"] / s["capacity"] if s["capacity"] else 0.0
    return s


def list_queues(ctx: Ctx, call: Call) -> Reply:
    out = []
    for name in ctx.broker.queues():
        try:
            out.append(queue_info(ctx.queue(name)))
        except errors.QueueNotFound:
            continue  # deleted meanwhile
    return Reply(200, _dumps({"queues": out, "count": len(out)}))


def get_queue(ctx: Ctx, call: Call, name: str) -> Reply:
    return Reply(200, _dumps(queue_info(ctx.queue(name))))


CAPS = ("max_messages", "max_bytes", "max_message_bytes", "max_deliveries")


def put_queue(ctx: Ctx, call: Call, name: str) -> Reply:
    """Create with optional caps; 201 if created, 200 if it exists with the same caps."""
    caps: dict[str, Any] = {}
    if call.body:  # no body is no caps; a body of only whitespace is not JSON (400)
        doc = _json_body(call.body)
        if not isinstance(doc, dict):
            raise RequestError(400, "bad_caps", "request body must be a JSON object of caps")
        for key, value in doc.items():
            if key == "dead_letter_queue":
                if not isinstance(value, str):
                    raise RequestError(400, "bad_caps", "dead_letter_queue must be a queue name")
                caps[key] = api.check_queue_name(value)
                continue
            if key not in CAPS or not isinstance(value, int) or isinstance(value, bool) \
                    or value < 1:
                raise RequestError(
                    400, "bad_caps",
                    f"unknown cap or bad value {_short(key)}: {_short(value)} (caps are positive "
                    f"integers: {', '.join(CAPS)})",
                )
            caps[key] = value
    try:
        q = ctx.broker.create_queue(name, **caps)
        created = True
    except errors.QueueExists as ex:
        if ex.other_limits:
            raise
        q, created = ctx.queue(name), False
    return Reply(201 if created else 200, _dumps({"created": created, **queue_info(q)}))


def delete_queue(ctx: Ctx, call: Call, name: str) -> Reply:
    ctx.broker.delete(name)
    return Reply(200, b'{"deleted":true,"queue_name":%s}' % _qname(name))


def clear_queue(ctx: Ctx, call: Call, name: str) -> Reply:
    n = ctx.queue(name).clear()
    return Reply(200, b'{"cleared":%d,"queue_name":%s,"queue_size":%d}'
                 % (n, _qname(name), _size(ctx.queue(name))))
