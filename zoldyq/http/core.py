"""The HTTP API as plain functions: a ``Call`` in, a ``Reply`` (or a ``Wait``) out.

``skeleton`` runs a handler from ``routes.ROUTES`` for both app shells; nothing
here knows which server runs it. A plain handler answers at once. A waiting
handler (dequeue) answers a ``Wait``: what to wait for and how to turn the
messages into a Reply; each shell waits its own way (a coroutine in asgi, a
parked thread in wsgi).

Stored JSON payloads are already JSON bytes: dequeue splices ``msg.data``
into the response instead of decoding and re-encoding it.
"""

from __future__ import annotations

import base64
import hmac
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from zoldyq import api, errors
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
    """A waiting handler's answer: take up to ``max`` from ``queue`` within ``timeout``."""

    queue: api.Queue
    max: int
    timeout: float
    reply: Callable[[Sequence[api.Message]], Reply]


NO_CONTENT = Reply(204)


def write(resp: Any, reply: Reply) -> None:
    """Put a Reply on a Falcon response (WSGI or ASGI: same attributes)."""
    resp.status = reply.status
    if reply.status != 204:
        resp.data = reply.body
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


def enqueue(ctx: Ctx, call: Call, name: str) -> Reply:
    q = ctx.queue(name)
    if call.content_type is not None and call.content_type.startswith(OCTETS):
        r = q.put_bytes(call.body)
    else:
        r = q.put(_field(call.body, "payload", "any JSON value"))
    return Reply(200, b'{"queued":true,"queue_name":%s,"queue_size":%d,"enqueued_at":%d}'
                 % (_qname(name), r.queue_size, r.enqueued_at))


def enqueue_batch(ctx: Ctx, call: Call, name: str) -> Reply:
    q = ctx.queue(name)
    payloads = _field(call.body, "payloads", "a list of JSON values")
    if not isinstance(payloads, list):
        raise RequestError(400, "bad_payloads", '"payloads" must be a JSON list')
    if len(payloads) > ctx.max_batch:
        raise RequestError(
            400, "batch_too_large",
            f"a batch holds at most {ctx.max_batch} messages, got {len(payloads)}",
            max_batch=ctx.max_batch,
        )
    r = q.put_many(payloads)
    return Reply(200, b'{"queued":true,"queue_name":%s,"count":%d,"queue_size":%d,'
                 b'"enqueued_at":%d}' % (_qname(name), len(payloads), r.queue_size,
                                         r.enqueued_at))


def dequeue(ctx: Ctx, call: Call, name: str) -> Wait:
    """One message, or a batch with ``max``, waiting up to ``timeout`` seconds."""
    q = ctx.queue(name)
    timeout = parse_timeout(call.query.get("timeout"), ctx.max_timeout)
    max_ = call.query.get("max")
    if max_ is None:
        return Wait(q, 1, timeout, lambda msgs: dequeue_reply(q, msgs, False))
    n = parse_max(max_, ctx.max_batch)
    return Wait(q, n, timeout, lambda msgs: dequeue_reply(q, msgs, True))


def _size(q: api.Queue) -> int:
    try:
        return len(q)
    except errors.ZoldyQError:  # deleted meanwhile
        return 0


def dequeue_reply(q: api.Queue, msgs: Sequence[api.Message], batch: bool) -> Reply:
    if not msgs:
        return NO_CONTENT
    name = _qname(q.name)
    size = _size(q)
    if batch:
        items = [
            b'{"payload":"%s","encoding":"base64","enqueued_at":%d}'
            % (base64.b64encode(m.data), m.enqueued_at) if m.is_raw
            else b'{"payload":%s,"enqueued_at":%d}' % (m.data, m.enqueued_at)
            for m in msgs
        ]
        return Reply(200, b'{"messages":[%s],"count":%d,"queue_name":%s,"queue_size":%d}'
                     % (b",".join(items), len(items), name, size))
    m = msgs[0]
    if m.is_raw:
        return Reply(200, m.data, OCTETS, {
            "X-Zoldyq-Queue-Name": q.name,
            "X-Zoldyq-Enqueued-At": str(m.enqueued_at),
            "X-Zoldyq-Queue-Size": str(size),
        })
    return Reply(200, b'{"payload":%s,"queue_name":%s,"enqueued_at":%d,"queue_size":%d}'
                 % (m.data, name, m.enqueued_at, size))


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


CAPS = ("max_messages", "max_bytes", "max_message_bytes")


def put_queue(ctx: Ctx, call: Call, name: str) -> Reply:
    """Create with optional caps; 201 if created, 200 if it exists with the same caps."""
    caps: dict[str, Any] = {}  # max_* keyword arguments of create_queue
    if call.body.strip():
        doc = _json_body(call.body)
        if not isinstance(doc, dict):
            raise RequestError(400, "bad_caps", "request body must be a JSON object of caps")
        for key, value in doc.items():
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
