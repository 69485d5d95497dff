"""Two ways for a tool to reach the queues, with one interface: local or HTTP.

``LocalClient`` attaches to the namespace's shared memory (same host, same
user); ``HttpClient`` talks to a server over one keep-alive connection.
Both return plain dicts, so the CLI formats one shape. Messages come back
as ``{"payload", "queue_name", "enqueued_at", "raw"}`` with ``payload`` the
JSON value, or ``bytes`` when ``raw``.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.parse
from typing import Any, NamedTuple, Protocol

import orjson

import zoldyq
from zoldyq.api import Broker, Message
from zoldyq.errors import ZoldyQError
from zoldyq.ops import health, snapshot


class ClientError(ZoldyQError):
    """An error answer from a server, or no answer at all (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class Response(NamedTuple):
    status: int
    reason: str
    content_type: str
    body: bytes
    enqueued_at: str | None


class Client(Protocol):
    where: str

    def put(self, queue: str, payload: Any, delay: float | None = None) -> dict[str, Any]: ...
    def put_raw(self, queue: str, data: bytes, delay: float | None = None) -> dict[str, Any]: ...
    def put_many(self, queue: str, payloads: list[Any],
                 delay: float | None = None) -> dict[str, Any]: ...
    def get(self, queue: str, timeout: float = 0.0, max: int = 1,
            lease: float | None = None) -> list[dict[str, Any]]: ...
    def ack(self, queue: str, lease_ids: list[str]) -> list[str]: ...  # the ids not held
    def nack(self, queue: str, lease_id: str, delay: float = 0.0) -> str | None: ...
    def redrive(self, queue: str) -> int: ...
    def peek(self, queue: str, max: int = 10) -> list[dict[str, Any]]: ...
    def queues(self) -> list[dict[str, Any]]: ...
    def clear(self, queue: str) -> int: ...
    def delete(self, queue: str) -> None: ...
    def snapshot(self, action: str, name: str, queue: str | None) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _message(m: Message) -> dict[str, Any]:
    out = {
        "payload": m.payload,
        "queue_name": m.queue_name,
        "enqueued_at": m.enqueued_at,
        "raw": m.is_raw,
    }
    if m.lease_id is not None:
        out.update(lease_id=m.lease_id, delivery_count=m.delivery_count,
                   lease_expires_at=m.lease_expires_at)
    return out


def _row(stats: dict[str, Any]) -> dict[str, Any]:
    """One queue as ``queues``/``stats`` show it, from the engine's or /health's figures."""
    cap = stats["capacity"]
    return {
        "name": stats["name"],
        "size": stats["size"],
        "capacity": cap,
        "utilization": round(stats["size"] / cap, 6) if cap else 0.0,
        "enqueued_total": stats["enqueued_total"],
        "dequeued_total": stats["dequeued_total"],
        "queue_full_total": stats.get("queue_full_total", stats.get("queue_full_count", 0)),
        "bytes": stats.get("bytes"),
    }


class LocalClient:
    """The namespace's shared memory on this host."""

    def __init__(self, namespace: str, snapshot_dir: str | None = None) -> None:
        self.broker: Broker = zoldyq.attach(namespace)
        self.snapshot_dir = snapshot_dir
        self.where = f"namespace '{namespace}' (local)"

    def put(self, queue: str, payload: Any, delay: float | None = None) -> dict[str, Any]:
        r = self.broker.queue(queue).put(payload, delay=delay)
        return _receipt(queue, r.queue_size, r.enqueued_at, r.deliver_at)

    def put_raw(self, queue: str, data: bytes, delay: float | None = None) -> dict[str, Any]:
        r = self.broker.queue(queue).put_bytes(data, delay=delay)
        return _receipt(queue, r.queue_size, r.enqueued_at, r.deliver_at)

    def put_many(self, queue: str, payloads: list[Any],
                 delay: float | None = None) -> dict[str, Any]:
        r = self.broker.queue(queue).put_many(payloads, delay=delay)
        return {**_receipt(queue, r.queue_size, r.enqueued_at, r.deliver_at),
                "count": len(payloads)}

    def get(self, queue: str, timeout: float = 0.0, max: int = 1,
            lease: float | None = None) -> list[dict[str, Any]]:
        return [_message(m) for m in self.broker.queue(queue).get_many(max, timeout, lease)]

    def ack(self, queue: str, lease_ids: list[str]) -> list[str]:
        return self.broker.queue(queue).ack_many(lease_ids)

    def nack(self, queue: str, lease_id: str, delay: float = 0.0) -> str | None:
        return self.broker.queue(queue).nack(lease_id, delay)

    def redrive(self, queue: str) -> int:
        return self.broker.queue(queue).redrive()

    def peek(self, queue: str, max: int = 10) -> list[dict[str, Any]]:
        return [_message(m) for m in self.broker.queue(queue).peek(max)]

    def queues(self) -> list[dict[str, Any]]:
        out = []
        for name in self.broker.queues():
            try:
                out.append(_row(self.broker.queue(name).stats()))
            except zoldyq.QueueNotFound:
                continue
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        return health.check(self.broker)

    def clear(self, queue: str) -> int:
        return self.broker.queue(queue).clear()

    def delete(self, queue: str) -> None:
        self.broker.delete(queue)

    def snapshot(self, action: str, name: str, queue: str | None) -> dict[str, Any]:
        do = snapshot.save if action == "save" else snapshot.load
        return do(self.broker, self.snapshot_dir, name, queue)

    def close(self) -> None:
        self.broker.close()


def _receipt(queue: str, size: int, enqueued_at: int,
             deliver_at: int | None = None) -> dict[str, Any]:
    out = {"queued": True, "queue_name": queue, "queue_size": size, "enqueued_at": enqueued_at}
    if deliver_at is not None:
        out["deliver_at"] = deliver_at
    return out


class HttpClient:
    """A ZoldyQ server at ``url``, over one keep-alive connection."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(0, "bad_url", f"not an http(s) URL: {url!r}")
        self.where = f"{parts.scheme}://{parts.netloc}"
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        wait: float = 0.0,
    ) -> Response:
        """Send one request (retried once on a stale keep-alive connection); 4xx/5xx raise."""
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            conn = self._connect(self._timeout + wait)
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                r = conn.getresponse()
                resp = Response(r.status, r.reason, r.getheader("Content-Type") or "", r.read(),
                                r.getheader("X-Zoldyq-Enqueued-At"))
                break
            except (ConnectionError, http.client.HTTPException, OSError) as ex:
                self.close()
                stale = isinstance(ex, (http.client.RemoteDisconnected, BrokenPipeError))
                if attempt or not stale:
                    why = f"cannot reach {self.where}: {ex}"
                    raise ClientError(0, "unreachable", why) from None
        if resp.status >= 400:
            raise _error(resp)
        return resp

    def _json(
        self, method: str, path: str, body: Any = None, wait: float = 0.0
    ) -> dict[str, Any]:
        """The JSON object the server answered (every route answers one), {} when empty."""
        data = None if body is None else orjson.dumps(body)
        raw = self.request(method, path, data, wait=wait).body
        doc: dict[str, Any] = orjson.loads(raw) if raw else {}
        return doc

    def put(self, queue: str, payload: Any, delay: float | None = None) -> dict[str, Any]:
        body = {"payload": payload} if delay is None else {"payload": payload, "delay": delay}
        return self._json("POST", f"/queues/{_q(queue)}/enqueue", body)

    def put_raw(self, queue: str, data: bytes, delay: float | None = None) -> dict[str, Any]:
        query = "" if delay is None else f"?delay={delay:g}"
        resp = self.request(
            "POST", f"/queues/{_q(queue)}/enqueue{query}", data, "application/octet-stream"
        )
        return orjson.loads(resp.body)  # type: ignore[no-any-return]

    def put_many(self, queue: str, payloads: list[Any],
                 delay: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"payloads": payloads}
        if delay is not None:
            body["delay"] = delay
        return self._json("POST", f"/queues/{_q(queue)}/batch", body)

    def ack(self, queue: str, lease_ids: list[str]) -> list[str]:
        doc = self._json("POST", f"/queues/{_q(queue)}/ack", {"lease_ids": lease_ids})
        return list(doc["not_held"])

    def nack(self, queue: str, lease_id: str, delay: float = 0.0) -> str | None:
        doc = self._json("POST", f"/queues/{_q(queue)}/nack",
                         {"lease_id": lease_id, "delay": delay})
        return doc.get("dead_letter_queue")

    def redrive(self, queue: str) -> int:
        return int(self._json("POST", f"/queues/{_q(queue)}/redrive")["redriven"])

    def get(self, queue: str, timeout: float = 0.0, max: int = 1,
            lease: float | None = None) -> list[dict[str, Any]]:
        query = f"timeout={timeout:g}" + (f"&max={max}" if max != 1 else "")
        if lease is not None:  # a batch answer: lease fields in JSON even for raw messages
            query += f"&lease={lease:g}" + ("&max=1" if max == 1 else "")
        resp = self.request("GET", f"/queues/{_q(queue)}/dequeue?{query}", wait=timeout)
        if resp.status == 204:
            return []
        if not resp.content_type.startswith("application/json"):
            return [{
                "payload": resp.body,
                "queue_name": queue,
                "enqueued_at": int(resp.enqueued_at or 0),
                "raw": True,
            }]  # fmt: skip
        doc = orjson.loads(resp.body)
        items = doc.get("messages", [doc]) if isinstance(doc, dict) else doc
        return [_from_http(queue, m) for m in items]

    def peek(self, queue: str, max: int = 10) -> list[dict[str, Any]]:
        doc = self._json("GET", f"/queues/{_q(queue)}/peek?max={max}")
        return [_from_http(queue, m) for m in doc["messages"]]

    def queues(self) -> list[dict[str, Any]]:
        return [_row(s) for s in self._json("GET", "/queues")["queues"]]

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            return 200, self._json("GET", "/health")
        except ClientError as ex:
            if ex.status == 503:
                return 503, {"status": "unhealthy", "reason": ex.message}
            raise

    def clear(self, queue: str) -> int:
        doc = self._json("POST", f"/queues/{_q(queue)}/clear")
        return int(doc.get("cleared", 0))

    def delete(self, queue: str) -> None:
        self.request("DELETE", f"/queues/{_q(queue)}")

    def snapshot(self, action: str, name: str, queue: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action, "name": name}
        if queue is not None:
            body["queue"] = queue
        return self._json("POST", "/admin/snapshot", body)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _from_http(queue: str, m: dict[str, Any]) -> dict[str, Any]:
    raw = m.get("encoding") == "base64"
    out = {
        "payload": base64.b64decode(m["payload"]) if raw else m.get("payload"),
        "queue_name": m.get("queue_name", queue),
        "enqueued_at": m.get("enqueued_at", 0),
        "raw": raw,
    }
    if "lease_id" in m:
        out.update({k: m[k] for k in ("lease_id", "delivery_count", "lease_expires_at")})
    return out


def _error(resp: Response) -> ClientError:
    try:
        doc = json.loads(resp.body)
        code, message = doc.get("error", "error"), doc.get("message") or doc.get("reason")
    except (ValueError, AttributeError):
        code, message = "error", None
    return ClientError(resp.status, code, message or f"HTTP {resp.status} {resp.reason}")


def connect(
    namespace: str,
    url: str | None = None,
    token: str | None = None,
    local: bool | None = None,
    snapshot_dir: str | None = None,
    default_url: str = "http://127.0.0.1:9000",
) -> Client:
    """Local when asked, or when ``url`` is not given and the namespace exists here; else HTTP."""
    if local or (local is None and url is None):
        try:
            return LocalClient(namespace, snapshot_dir)
        except zoldyq.NamespaceNotFound:
            if local:
                raise
    return HttpClient(url or default_url, token)
