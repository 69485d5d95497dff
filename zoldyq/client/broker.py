"""A ZoldyQ server as a ``Broker``: the local engine's interface over HTTP (and WebSocket).

The same code runs against ``shm://`` or ``http://``: the same Queue and
Message attributes, the same exception classes (``wire.error`` maps each
error answer back), the same ordering. What differs is said where it does:
a message's ``data`` is its JSON re-encoded compactly (what ``put`` sends,
so equal to it unless a record was sent with other spacing), a raw message
taken from the WebSocket stream has no ``enqueued_at`` (0), and a put of
mixed raw and JSON records is sent one record at a time (not all-or-none).
"""

from __future__ import annotations

import base64
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import httpx
import orjson
from websockets.exceptions import WebSocketException

from zoldyq.api import KIND_BYTES, KIND_JSON, Caps, LeaseBlock, Receipt, check_queue_name
from zoldyq.client import stream as ws_stream
from zoldyq.client.wire import Wire
from zoldyq.errors import ConfigError, InvalidPayload, QueueExists, RequestError

_dumps = orjson.dumps
_loads = orjson.loads
_JSON = {"Content-Type": "application/json"}
DEFAULT_MAX_WAIT = 20.0  # one long-poll at most; longer waits are several (server max: 30)


class Message:
    """One message taken from a server; settle a leased one with ack/nack/extend."""

    __slots__ = ("_payload", "_queue", "data", "delivery_count", "enqueued_at", "kind",
                 "lease_expires_at", "lease_id", "queue_name", "settle")

    def __init__(self, queue: Queue, kind: int, payload: Any, data: bytes | None,
                 enqueued_at: int, doc: dict[str, Any] | None = None) -> None:
        self._queue = queue
        self.queue_name = queue.name
        self.kind = kind
        self._payload = payload
        self.data = data if data is not None else _dumps(payload)
        self.enqueued_at = enqueued_at
        doc = doc or {}
        self.lease_id: str | None = doc.get("lease_id")
        self.delivery_count: int = doc.get("delivery_count") or 1
        self.lease_expires_at: int | None = doc.get("lease_expires_at")
        # Set for a leased WebSocket stream's messages: ack/nack go on its connection
        self.settle: Callable[[bytes], None] | None = None

    @property
    def payload(self) -> Any:
        return self._payload

    @property
    def is_raw(self) -> bool:
        return self.kind == KIND_BYTES

    def ack(self) -> None:
        """Settle for good. From a leased stream it is sent on the stream's connection (which
        gives the stream its credit back) and a lease already gone is not reported."""
        if self._on_stream({"ack": self._held()}):
            return
        self._queue.ack(self._held())

    def nack(self, delay: float = 0.0) -> str | None:
        """Give it back (at the head, after ``delay``); the DLQ's name if dead-lettered (over
        HTTP; from a leased stream the frame is sent and None returned)."""
        if self._on_stream({"nack": self._held(), "delay": delay}):
            return None
        return self._queue.nack(self._held(), delay)

    def _on_stream(self, frame: dict[str, Any]) -> bool:
        if self.settle is None:
            return False
        try:
            self.settle(_dumps(frame))
        except (OSError, RuntimeError, WebSocketException):
            self.settle = None  # the stream is gone, and the server gave its leases back
            return False
        return True

    def extend(self, seconds: float) -> int:
        self.lease_expires_at = self._queue.extend(self._held(), seconds)
        return self.lease_expires_at

    def _held(self) -> str:
        if self.lease_id is None:
            raise ConfigError("this message was taken without a lease: nothing to settle")
        return self.lease_id

    def __repr__(self) -> str:
        return f"Message({self.queue_name!r}, {self.payload!r}, enqueued_at={self.enqueued_at})"


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _receipt(doc: dict[str, Any]) -> Receipt:
    return Receipt(doc["queue_size"], doc["enqueued_at"], doc.get("deliver_at"))


def _timing(delay: float | None, deliver_at: int | None) -> bytes:
    """The ``,"delay":..`` / ``,"deliver_at":..`` members of a put body."""
    out = b""
    if delay is not None:
        out += b',"delay":' + _dumps(delay)
    if deliver_at is not None:
        out += b',"deliver_at":' + _dumps(deliver_at)
    return out


def _encode(payload: Any) -> bytes:
    try:
        return _dumps(payload)
    except TypeError as ex:
        raise InvalidPayload(str(ex)) from None


class Queue(LeaseBlock):
    """A named queue on a server. Thread-safe: share it between threads and tasks."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = check_queue_name(name)
        q = urllib.parse.quote(name, safe="")
        self._enqueue = f"/queues/{q}/enqueue"
        self._batch = f"/queues/{q}/batch"
        self._dequeue = f"/queues/{q}/dequeue"
        self._path = f"/queues/{q}"
        self._wire = broker.wire

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, url={self.broker.url!r})"

    # -- put -------------------------------------------------------------------

    def put(self, payload: Any, *, delay: float | None = None,
            deliver_at: int | None = None) -> Receipt:
        """Enqueue a JSON value. Raises QueueFull (after retries), MessageTooLarge, ..."""
        if delay is None and deliver_at is None:
            body = b'{"payload":' + _encode(payload) + b"}"  # the hot path
        else:
            body = b'{"payload":' + _encode(payload) + _timing(delay, deliver_at) + b"}"
        return self._post(self._enqueue, body)

    def put_bytes(self, data: bytes, *, delay: float | None = None,
                  deliver_at: int | None = None) -> Receipt:
        """Enqueue raw bytes, returned as ``bytes`` by get."""
        params = {k: v for k, v in (("delay", delay), ("deliver_at", deliver_at)) if v is not None}
        r = self._wire.request(
            "POST", self._enqueue, queue=self.name, safe=True, content=bytes(data),
            params=params or None, headers={"Content-Type": "application/octet-stream"},
        )
        return _receipt(_loads(r.content))

    def put_many(self, payloads: Iterable[Any], *, delay: float | None = None,
                 deliver_at: int | None = None) -> Receipt:
        """Enqueue JSON values in one request: all of them or none."""
        body = (b'{"payloads":[' + b",".join(_encode(p) for p in payloads) + b"]"
                + _timing(delay, deliver_at) + b"}")
        return self._post(self._batch, body)

    def put_records(self, records: list[tuple[int, bytes]], *,
                    deliver_at: int | None = None) -> Receipt:
        """Enqueue pre-encoded (kind, data) records; JSON bytes are sent as they are."""
        if all(kind == KIND_JSON for kind, _ in records):
            body = (b'{"payloads":[' + b",".join(data for _, data in records) + b"]"
                    + _timing(None, deliver_at) + b"}")
            return self._post(self._batch, body)
        receipt = None
        for kind, data in records:
            if kind == KIND_JSON:
                receipt = self._post(
                    self._enqueue, b'{"payload":' + data + _timing(None, deliver_at) + b"}")
            else:
                receipt = self.put_bytes(data, deliver_at=deliver_at)
        assert receipt is not None
        return receipt

    def _post(self, path: str, body: bytes) -> Receipt:
        r = self._wire.request("POST", path, queue=self.name, safe=True, content=body,
                               headers=_JSON)
        return _receipt(_loads(r.content))

    # -- get -------------------------------------------------------------------

    def get(self, timeout: float = 0.0, lease: float | None = None) -> Message | None:
        """Dequeue one message, waiting up to ``timeout`` seconds; None if none came."""
        got = self.get_many(1, timeout, lease)
        return got[0] if got else None

    def get_many(self, max: int = 100, timeout: float = 0.0,
                 lease: float | None = None) -> list[Message]:
        """Dequeue up to ``max`` messages in one request, waiting for the first.

        A wait longer than one long-poll is several polls, each read with a
        timeout past the server's wait.
        """
        if max < 1:
            return []
        deadline = time.monotonic() + timeout
        while True:
            max_wait = self.broker.max_wait
            left = _left(deadline)
            wait = min(max_wait, left)
            try:
                r = self._wire.request(
                    "GET", self._dequeue, queue=self.name, wait=wait,
                    params=self._params(max, wait, lease), safe=True,
                    idempotent=lease is not None,
                )
            except RequestError as ex:
                if ex.code == "bad_timeout" and self.broker.lower_max_wait(max_wait, ex):
                    continue  # the server's limit is lower: nothing was taken
                raise
            if r.status_code != 204:
                return self._reply(r, max)
            if wait >= left or self.broker.interrupted:
                return []  # the whole wait was this poll's

    @staticmethod
    def _params(max: int, wait: float, lease: float | None) -> dict[str, Any] | None:
        """One message is asked for without ``max``: the server's plainest answer."""
        if max == 1 and not wait and lease is None:
            return None  # no query string to encode: the hot path of get()
        params: dict[str, Any] = {}
        if max != 1:
            params["max"] = max
        if wait > 0:
            params["timeout"] = f"{wait:.3f}"
        if lease is not None:
            params["lease"] = lease
        return params

    def _reply(self, r: httpx.Response, max: int) -> list[Message]:
        if max != 1:
            return self._messages(_loads(r.content))
        if r.headers.get("content-type", "").startswith("application/octet-stream"):
            h = r.headers
            lease = {"lease_id": h.get("x-zoldyq-lease-id"),
                     "delivery_count": int(h.get("x-zoldyq-delivery-count") or 1),
                     "lease_expires_at": int(h["x-zoldyq-lease-expires-at"])
                     if "x-zoldyq-lease-expires-at" in h else None}
            data = r.content
            return [Message(self, KIND_BYTES, data, data, int(h.get("x-zoldyq-enqueued-at") or 0),
                            lease)]
        doc = _loads(r.content)
        return [Message(self, KIND_JSON, doc["payload"], None, doc["enqueued_at"], doc)]

    def _messages(self, doc: dict[str, Any]) -> list[Message]:
        out = []
        for m in doc["messages"]:
            if m.get("encoding") == "base64":
                data = base64.b64decode(m["payload"])
                out.append(Message(self, KIND_BYTES, data, data, m["enqueued_at"], m))
            else:
                out.append(Message(self, KIND_JSON, m["payload"], None, m["enqueued_at"], m))
        return out

    def peek(self, max: int | None = None) -> list[Message]:
        """The first ``max`` messages (all by default) without removing them."""
        params = {} if max is None else {"max": max}
        r = self._wire.request("GET", self._path + "/peek", queue=self.name, params=params,
                               safe=True, idempotent=True)
        return self._messages(_loads(r.content))

    def stream(self, timeout: float | None = None, lease: float | None = None
               ) -> Iterator[Message]:
        """Yield messages as they arrive (over the server's WebSocket stream when it has
        one, reconnecting with backoff); ends after ``timeout`` idle seconds."""
        yield from ws_stream.sync_stream(self, timeout, lease)

    async def aget(self, timeout: float = 0.0, lease: float | None = None) -> Message | None:
        got = await self.aget_many(1, timeout, lease)
        return got[0] if got else None

    async def aget_many(self, max: int = 100, timeout: float = 0.0,
                        lease: float | None = None) -> list[Message]:
        """Like get_many, for asyncio (one pooled AsyncClient per event loop)."""
        if max < 1:
            return []
        deadline = time.monotonic() + timeout
        while True:
            max_wait = self.broker.max_wait
            left = _left(deadline)
            wait = min(max_wait, left)
            try:
                r = await self._wire.arequest(
                    "GET", self._dequeue, queue=self.name, wait=wait,
                    params=self._params(max, wait, lease), safe=True,
                    idempotent=lease is not None,
                )
            except RequestError as ex:
                if ex.code == "bad_timeout" and self.broker.lower_max_wait(max_wait, ex):
                    continue
                raise
            if r.status_code != 204:
                return self._reply(r, max)
            if wait >= left or self.broker.interrupted:
                return []  # the whole wait was this poll's

    def astream(self, lease: float | None = None) -> AsyncIterator[Message]:
        return ws_stream.async_stream(self, lease)

    # -- leases ------------------------------------------------------------------

    def ack(self, lease_id: str) -> None:
        """Remove a leased message for good; raises LeaseExpired if the lease is not held."""
        self._settle("ack", {"lease_id": lease_id})

    def ack_many(self, lease_ids: Iterable[str]) -> list[str]:
        """Ack several; returns the ids that were not held."""
        doc = self._settle("ack", {"lease_ids": list(lease_ids)})
        return list(doc.get("not_held", []))

    def nack(self, lease_id: str, delay: float = 0.0) -> str | None:
        """Give a leased message back (at the head); the DLQ's name if it was dead-lettered."""
        doc = self._settle("nack", {"lease_id": lease_id, "delay": delay})
        return doc.get("dead_letter_queue") if doc.get("dead_lettered") else None

    def extend(self, lease_id: str, seconds: float) -> int:
        """Keep a lease ``seconds`` longer from now; returns its new expiry (µs)."""
        return int(self._settle("extend", {"lease_id": lease_id, "lease": seconds})
                   ["lease_expires_at"])

    def requeue(self, messages: list[Message]) -> None:
        """Not over HTTP: the server gives back what an abandoned poll took itself."""
        raise ConfigError("requeue is a server-side operation; use leases over HTTP")

    def redrive(self) -> int:
        """On a dead-letter queue: move its messages back to their original queue."""
        doc = self._settle("redrive", {})
        return int(doc.get("redriven", doc.get("moved", 0)))

    def _settle(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self._wire.request("POST", f"{self._path}/{op}", queue=self.name,
                               content=_dumps(body),
                               headers=_JSON)
        return _loads(r.content) if r.content else {}

    # -- management ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        r = self._wire.request("GET", self._path, queue=self.name, safe=True, idempotent=True)
        doc: dict[str, Any] = _loads(r.content)
        doc.pop("utilization", None)
        return doc

    def __len__(self) -> int:
        return int(self.stats()["size"])

    def clear(self) -> int:
        """Drop every message now in the queue; returns how many."""
        r = self._wire.request("POST", self._path + "/clear", queue=self.name)
        return int(_loads(r.content)["cleared"])

    def delete(self) -> None:
        self.broker.delete(self.name)


class Broker:
    """A ZoldyQ server at ``url``; thread-safe, share one per process."""

    def __init__(self, url: str, *, namespace: str | None = None, token: str | None = None,
                 retries: int = 3, verify: bool | str = True, ws_url: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.wire = Wire(self.url, token, retries, verify, transport)
        self.token = token
        self.interrupted = False
        self.max_wait = DEFAULT_MAX_WAIT
        self._ws_url = ws_url
        self._info: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._asked_namespace = namespace
        self._namespace: str | None = None

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Broker(url={self.url!r})"

    def info(self) -> dict[str, Any]:
        """What the server says about itself (``GET /info``; {} if it predates the route)."""
        if self._info is None:
            try:
                r = self.wire.request("GET", "/info", safe=True, idempotent=True)
                self._info = _loads(r.content)
            except RequestError:
                self._info = {}
        return self._info

    @property
    def namespace(self) -> str:
        return str(self.info().get("namespace") or self._asked_namespace or "")

    @property
    def ws_url(self) -> str | None:
        """Where the server's WebSocket streams are: given, or this URL's host at the
        ``websocket_port`` the server tells (``GET /info``); None without a sidecar."""
        if self._ws_url is None:
            info = self.info()
            port = info.get("websocket_port")
            self._ws_url = ""
            if isinstance(port, int):
                parts = urllib.parse.urlsplit(self.url)
                scheme = "wss" if info.get("websocket_tls") or parts.scheme == "https" else "ws"
                host = parts.hostname or "127.0.0.1"
                host = f"[{host}]" if ":" in host else host
                self._ws_url = f"{scheme}://{host}:{port}"
        return self._ws_url or None

    @property
    def defaults(self) -> Caps:
        d = self.info().get("defaults") or {}
        return Caps(d.get("max_messages", 0), d.get("max_bytes", 0),
                    d.get("max_message_bytes", 0))

    @property
    def max_queues(self) -> int:
        return int(self.info().get("max_queues") or 0)

    def lower_max_wait(self, tried: float, refusal: RequestError) -> bool:
        """The server refused a ``tried``-second poll (nothing was taken): poll at most its
        ``max_timeout`` from now on. False when that would not change anything."""
        limit = refusal.fields().get("max_timeout")
        if not isinstance(limit, (int, float)) or not 0 < limit < tried:
            return False
        self.max_wait = min(self.max_wait, float(limit))
        return True

    def queue(self, name: str) -> Queue:
        """A handle on queue ``name``; it is created on first put."""
        return Queue(self, name)

    def create_queue(
        self, name: str, *, max_messages: int | None = None, max_bytes: int | None = None,
        max_message_bytes: int | None = None, max_deliveries: int | None = None,
        dead_letter_queue: str | None = None, exist_ok: bool = False,
    ) -> Queue:
        """Create ``name`` with its own caps; QueueExists if it exists (unless ``exist_ok``
        and its caps are the ones asked)."""
        q = Queue(self, name)
        caps = {k: v for k, v in (
            ("max_messages", max_messages), ("max_bytes", max_bytes),
            ("max_message_bytes", max_message_bytes), ("max_deliveries", max_deliveries),
            ("dead_letter_queue", dead_letter_queue),
        ) if v is not None}
        r = self.wire.request("PUT", q._path, queue=name, content=_dumps(caps),
                              headers=_JSON, idempotent=exist_ok)
        if r.status_code == 200 and not exist_ok:
            raise QueueExists(name)  # it was there already
        return q

    def delete(self, name: str) -> None:
        """Delete queue ``name`` and its messages."""
        q = Queue(self, name)
        self.wire.request("DELETE", q._path, queue=name)

    def queues(self) -> list[str]:
        r = self.wire.request("GET", "/queues", safe=True, idempotent=True)
        return [q["name"] for q in _loads(r.content)["queues"]]

    def entries(self) -> list[dict[str, Any]]:
        """Every queue's figures, as ``GET /queues`` lists them."""
        r = self.wire.request("GET", "/queues", safe=True, idempotent=True)
        return list(_loads(r.content)["queues"])

    def exists(self, name: str) -> bool:
        return check_queue_name(name) in self.queues()

    def health(self) -> tuple[int, dict[str, Any]]:
        r = self.wire.sync.get("/health", timeout=self.wire.timeout(0.0))
        return r.status_code, _loads(r.content)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON call on any route (for tools: snapshots, metrics)."""
        r = self.wire.request(method, path, content=None if body is None else _dumps(body),
                              headers=_JSON)
        return _loads(r.content) if r.content else None

    def interrupt(self) -> None:
        """Make waits return at once (a poll in flight ends with its server's wait)."""
        self.interrupted = True

    def close(self) -> None:
        self.interrupt()
        self.wire.close()
