"""Requests to a ZoldyQ server: pooled httpx clients, the retry policy, errors mapped back.

What is retried, and why only that (a blind retry of a plain dequeue loses
the message the first attempt took, and a retried put may store it twice):

- a connection that could not be made (the request never left), or one the server closed
  without sending a byte of answer: always. The latter is what gunicorn's keep-alive
  timer does to a pooled connection when its loop lags (under load) with our request
  unread; otherwise the worker died mid-request, and then a retried put may be stored
  twice (at-least-once) while a plain dequeue's message died with the worker, retried
  or not (it never comes to a live socket later, unlike after a client timeout);
- 429/503 (queue full, queue busy, backend unavailable): on calls marked
  ``safe`` (puts, leased dequeues, reads and other idempotent calls), after
  the server's ``Retry-After`` or a full-jitter backoff;
- a connection lost after sending: only on ``idempotent`` calls (reads,
  leased dequeues, whose message comes back when its lease ends).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import httpx
import orjson

from zoldyq import errors
from zoldyq.errors import BackendUnavailable, RequestError, ZoldyQError

#: Seconds added to a long-poll's wait for the read timeout: a client that gives
#: up before the server answers leaves the server holding what it took.
READ_MARGIN = 10.0
CONNECT_TIMEOUT = 5.0
#: Idle pooled connections are dropped after this long, before the server's keep-alive
#: (1 s in zoldyq.serve.gunicorn_conf) closes them: reusing one the server is closing
#: fails a request after it was sent, which is not safe to retry.
KEEPALIVE_EXPIRY = 0.5
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RETRY_STATUS = (429, 503)
_NO_WAIT = httpx.Timeout(READ_MARGIN, connect=CONNECT_TIMEOUT)


def _unsent(ex: httpx.TransportError) -> bool:
    """Nothing of this request reached a live server, or nothing of an answer came back."""
    return isinstance(ex, _NOT_SENT) or (
        isinstance(ex, httpx.RemoteProtocolError) and "without sending a response" in str(ex))


class Wire:
    """One server: a thread-safe keep-alive pool, and one async pool per event loop."""

    def __init__(self, url: str, token: str | None, retries: int, verify: bool | str,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.url.startswith("http:"):
            verify = False  # no TLS to verify: skip loading the CA bundle (slow, per client)
        self._verify = verify
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64,
                              keepalive_expiry=KEEPALIVE_EXPIRY)
        self._limits = limits
        self.sync = httpx.Client(
            base_url=self.url, headers=self.headers, limits=limits, verify=verify,
            timeout=self.timeout(0.0), transport=transport,
        )
        self._async: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._lock = threading.Lock()

    @staticmethod
    def timeout(wait: float) -> httpx.Timeout:
        if not wait:
            return _NO_WAIT
        return httpx.Timeout(wait + READ_MARGIN, connect=CONNECT_TIMEOUT)

    def aclient(self) -> httpx.AsyncClient:
        """The async pool of the running loop (an httpx pool cannot cross loops)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            with self._lock:
                for old in [lp for lp in self._async if lp.is_closed()]:
                    del self._async[old]  # its connections died with the loop
                client = self._async[loop] = httpx.AsyncClient(
                    base_url=self.url, headers=self.headers, limits=self._limits,
                    verify=self._verify, timeout=self.timeout(0.0),
                )
        return client

    def request(
        self, method: str, path: str, *, queue: str = "", wait: float = 0.0,
        safe: bool = False, idempotent: bool = False, **kw: Any,
    ) -> httpx.Response:
        """Send with the retry policy above; an error answer raises its ZoldyQError."""
        attempt = 0
        while True:
            try:
                r = self.sync.request(method, path, timeout=self.timeout(wait), **kw)
            except httpx.TransportError as ex:
                if attempt < self.retries and (idempotent or _unsent(ex)):
                    time.sleep(backoff(attempt, None))
                    attempt += 1
                    continue
                raise unreachable(self.url, ex) from None
            if r.status_code < 400:
                return r
            if safe and attempt < self.retries and r.status_code in _RETRY_STATUS:
                time.sleep(backoff(attempt, retry_after(r)))
                attempt += 1
                continue
            raise error(r, queue)

    async def arequest(
        self, method: str, path: str, *, queue: str = "", wait: float = 0.0,
        safe: bool = False, idempotent: bool = False, **kw: Any,
    ) -> httpx.Response:
        """``request`` for asyncio."""
        client = self.aclient()
        attempt = 0
        while True:
            try:
                r = await client.request(method, path, timeout=self.timeout(wait), **kw)
            except httpx.TransportError as ex:
                if attempt < self.retries and (idempotent or _unsent(ex)):
                    await asyncio.sleep(backoff(attempt, None))
                    attempt += 1
                    continue
                raise unreachable(self.url, ex) from None
            if r.status_code < 400:
                return r
            if safe and attempt < self.retries and r.status_code in _RETRY_STATUS:
                await asyncio.sleep(backoff(attempt, retry_after(r)))
                attempt += 1
                continue
            raise error(r, queue)

    def close(self) -> None:
        self.sync.close()
        self._async.clear()  # their loops close their sockets


def backoff(attempt: int, after: float | None) -> float:
    """Full jitter (AWS's "exponential backoff and jitter"), or what the server asked."""
    if after is not None:
        return after + random.uniform(0, BACKOFF_BASE)
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def retry_after(r: httpx.Response) -> float | None:
    raw = r.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: not something ZoldyQ sends


def unreachable(url: str, ex: Exception) -> BackendUnavailable:
    return BackendUnavailable(url, f"{type(ex).__name__}: {ex}" if str(ex) else type(ex).__name__)


_REMOTE: dict[type[ZoldyQError], type[ZoldyQError]] = {}


def _as_sent(cls: type[ZoldyQError], message: str) -> ZoldyQError:
    """An instance of (a subclass of) ``cls`` whose text is the server's sentence.

    For classes whose fields the server does not send back in full (a bad
    name, a bad payload): ``except`` and ``isinstance`` work as locally.
    """
    sub = _REMOTE.get(cls)
    if sub is None:
        sub = _REMOTE[cls] = type(cls.__name__, (cls,), {
            "__init__": lambda self, m: Exception.__init__(self, m),
            "__str__": lambda self: str(self.args[0]),
            "__module__": cls.__module__,
        })
    return sub(message)


def _by_code() -> dict[str, type[ZoldyQError]]:
    """code -> the most general error class that declares it (QueueDeleted shares
    queue_not_found with QueueNotFound, which wins)."""
    out: dict[str, type[ZoldyQError]] = {}
    todo: list[type[ZoldyQError]] = [ZoldyQError]
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        code = cls.__dict__.get("code")
        if isinstance(code, str) and cls is not ZoldyQError and cls not in _REMOTE.values():
            out.setdefault(code, cls)
    for code in ("bad_request", "bad_path"):  # the sidecar's frame and path errors
        out.pop(code, None)
    return out


_BY_CODE = _by_code()


def error(r: httpx.Response, queue: str) -> ZoldyQError:
    """The exception the local engine would have raised for this error answer."""
    try:
        doc = orjson.loads(r.content)
        if not isinstance(doc, dict):
            raise ValueError
    except ValueError:
        doc = {}
    status = r.status_code
    code = str(doc.get("error") or "http_error")
    message = str(doc.get("message") or f"HTTP {status} {r.reason_phrase}")
    name = str(doc.get("queue_name") or queue)
    after = retry_after(r)
    ex: ZoldyQError
    if code == "queue_full":
        ex = errors.QueueFull(name, _int(doc, "queue_capacity"), _int(doc, "queue_size"),
                              _int(doc, "queue_max_bytes"))
        ex.retry_after = after
    elif code == "queue_not_found":
        ex = errors.QueueNotFound(name)
    elif code == "queue_exists":
        ex = _as_sent(errors.QueueExists, message)
        ex.queue_name = name  # type: ignore[attr-defined]
    elif code == "message_too_large":
        ex = errors.MessageTooLarge(_int(doc, "size"), _int(doc, "max_message_bytes"), name)
    elif code == "too_many_queues":
        ex = errors.TooManyQueues(_int(doc, "max_queues"))
    elif code == "lease_expired":
        ex = errors.LeaseExpired(name, str(doc.get("lease_id") or ""))
    elif code == "queue_busy":
        ex = errors.QueueBusy(name, after if after is not None else float(
            doc.get("retry_after") or 1.0))
    elif code in _BY_CODE:
        ex = _as_sent(_BY_CODE[code], message)
    else:
        extra = {k: v for k, v in doc.items() if k not in ("error", "message")}
        ex = RequestError(status, code, message, **extra)
    return ex


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    return value if isinstance(value, int) else 0
