"""Where a CLI command goes: one ``Broker`` from ``zoldyq.connect``, whatever the engine.

``open_target`` picks the URL (issue 10 item 20): ``--url`` when given; this
host's namespace when ``--local``, or when it exists here; the server at the
configured host and port only when no namespace was asked for (a mistyped
``--namespace`` must not write into a server's default namespace), and it
says so on stderr. ``Target`` turns the engine's values into the plain dicts
the commands print, so every engine prints the same shape.
"""

from __future__ import annotations

import sys
import urllib.parse
from typing import Any

import zoldyq
from zoldyq.api import DEFAULT_NAMESPACE
from zoldyq.errors import ConfigError, NamespaceNotFound


def _message(m: Any) -> dict[str, Any]:
    out = {"payload": m.payload, "queue_name": m.queue_name, "enqueued_at": m.enqueued_at,
           "raw": m.is_raw}
    if m.lease_id is not None:
        out.update(lease_id=m.lease_id, delivery_count=m.delivery_count,
                   lease_expires_at=m.lease_expires_at)
    return out


def _row(stats: dict[str, Any]) -> dict[str, Any]:
    cap = stats["capacity"]
    return {
        "name": stats["name"],
        "size": stats["size"],
        "capacity": cap,
        "utilization": round(stats["size"] / cap, 6) if cap else 0.0,
        "enqueued_total": stats["enqueued_total"],
        "dequeued_total": stats["dequeued_total"],
        "queue_full_total": stats.get("queue_full_total", 0),
        "bytes": stats.get("bytes"),
    }


def _receipt(queue: str, r: Any) -> dict[str, Any]:
    out = {"queued": True, "queue_name": queue, "queue_size": r.queue_size,
           "enqueued_at": r.enqueued_at}
    if r.deliver_at is not None:
        out["deliver_at"] = r.deliver_at
    return out


class Target:
    """The commands' view of one Broker."""

    def __init__(self, broker: Any, where: str, snapshot_dir: str | None = None) -> None:
        self.broker = broker
        self.where = where
        self.snapshot_dir = snapshot_dir
        self.remote = isinstance(broker, _http_broker())

    def put(self, queue: str, payload: Any, delay: float | None = None) -> dict[str, Any]:
        return _receipt(queue, self.broker.queue(queue).put(payload, delay=delay))

    def put_raw(self, queue: str, data: bytes, delay: float | None = None) -> dict[str, Any]:
        return _receipt(queue, self.broker.queue(queue).put_bytes(data, delay=delay))

    def put_many(self, queue: str, payloads: list[Any],
                 delay: float | None = None) -> dict[str, Any]:
        return {**_receipt(queue, self.broker.queue(queue).put_many(payloads, delay=delay)),
                "count": len(payloads)}

    def get(self, queue: str, timeout: float = 0.0, max: int = 1,
            lease: float | None = None) -> list[dict[str, Any]]:
        return [_message(m) for m in self.broker.queue(queue).get_many(max, timeout, lease)]

    def ack(self, queue: str, lease_ids: list[str]) -> list[str]:
        return list(self.broker.queue(queue).ack_many(lease_ids))

    def nack(self, queue: str, lease_id: str, delay: float = 0.0) -> str | None:
        dlq: str | None = self.broker.queue(queue).nack(lease_id, delay)
        return dlq

    def redrive(self, queue: str) -> int:
        return int(self.broker.queue(queue).redrive())

    def peek(self, queue: str, max: int = 10) -> list[dict[str, Any]]:
        return [_message(m) for m in self.broker.queue(queue).peek(max)]

    def queues(self) -> list[dict[str, Any]]:
        if self.remote:
            return [_row(s) for s in self.broker.entries()]
        out = []
        for name in self.broker.queues():
            try:
                out.append(_row(self.broker.queue(name).stats()))
            except zoldyq.QueueNotFound:
                continue  # deleted while we looked
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.remote:
            return self.broker.health()  # type: ignore[no-any-return]
        from zoldyq.ops import health

        return health.check(self.broker)

    def clear(self, queue: str) -> int:
        return int(self.broker.queue(queue).clear())

    def delete(self, queue: str) -> None:
        self.broker.delete(queue)

    def snapshot(self, action: str, name: str, queue: str | None) -> dict[str, Any]:
        if self.remote:
            body: dict[str, Any] = {"action": action, "name": name}
            if queue is not None:
                body["queue"] = queue
            return self.broker.request("POST", "/admin/snapshot", body)  # type: ignore[no-any-return]
        from zoldyq.ops import snapshot

        do = snapshot.save if action == "save" else snapshot.load
        return do(self.broker, self.snapshot_dir, name, queue)

    def close(self) -> None:
        self.broker.close()


def _http_broker() -> type:
    from zoldyq.client import Broker

    return Broker


def open_target(
    namespace: str,
    url: str | None,
    token: str | None,
    local: bool | None,
    snapshot_dir: str | None = None,
    default_url: str = "http://127.0.0.1:9000",
    namespace_asked: bool = False,
    redis_password_file: str | None = None,
) -> Target:
    """The Target for a command's flags (see the module docstring for the order).
    ``redis_password_file``: for a Redis URL without a password (never the password
    itself: it would show in the process list)."""
    if url and local:
        raise ConfigError("--url and --local exclude each other")
    if url:
        if url.startswith(("http:", "https:")):
            broker = zoldyq.connect(url, token=token)
        else:  # the URL names the namespace; --namespace only when asked for
            asked = namespace if namespace_asked else None
            shm = url.startswith("shm")
            options = {} if shm else {"password_file": redis_password_file}
            broker = zoldyq.connect(url, namespace=asked, create=not shm, **options)
        return Target(broker, _where(url, broker), snapshot_dir)
    try:
        broker = zoldyq.connect(f"shm://{namespace}", create=False)
        return Target(broker, f"namespace '{namespace}' (local)", snapshot_dir)
    except NamespaceNotFound:
        if local or namespace_asked or namespace != DEFAULT_NAMESPACE:
            raise
    print(f"zoldyq: no namespace '{namespace}' on this host: using the server at "
          f"{default_url}", file=sys.stderr)
    return Target(zoldyq.connect(default_url, token=token), default_url, snapshot_dir)


def _where(url: str, broker: Any) -> str:
    """What to show for ``url``: never its credentials."""
    if url.startswith("shm"):
        return f"namespace '{broker.namespace}' (local)"
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}{p.path}"
