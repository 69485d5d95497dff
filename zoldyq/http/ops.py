"""Operational routes (``/health``, ``/metrics``, ``/admin/snapshot``) and the request hook.

Handlers have the signature of ``core``'s: ``(ctx, content_type, body) -> Reply``;
``routes.ROUTES`` mounts them. ``observe`` is called once per request by both
app shells with the route's name (``"enqueue"``, ... or ``"unmatched"``), the
status and the duration, so request metrics need no middleware.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import orjson

from zoldyq.errors import QueueNotFound
from zoldyq.http.core import Ctx, Reply
from zoldyq.http.errors import RequestError

_requests: defaultdict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0, 0.0])
_requests_lock = threading.Lock()


def observe(ctx: Ctx, method: str, route: str, status: int, seconds: float) -> None:
    """Count one request of this process: [count, total seconds] per (method, route, status)."""
    with _requests_lock:
        cell = _requests[(method, route, status)]
        cell[0] += 1
        cell[1] += seconds


def health(ctx: Ctx, content_type: str | None, body: bytes) -> Reply:
    """The seed's format: status, uptime, per-queue size, capacity, utilization, totals."""
    queues = {}
    for name in ctx.broker.queues():
        try:
            s = ctx.queue(name).stats()
        except QueueNotFound:
            continue
        queues[name] = {
            "size": s["size"],
            "capacity": s["capacity"],
            "utilization": round(s["size"] / s["capacity"], 6) if s["capacity"] else 0.0,
            "enqueued_total": s["enqueued_total"],
            "dequeued_total": s["dequeued_total"],
            "queue_full_count": s["queue_full_total"],
        }
    return Reply(200, orjson.dumps({
        "status": "healthy",
        "uptime_seconds": int(time.time() - ctx.started),
        "total_queues": len(queues),
        "queues": queues,
    }))


_COUNTERS = ("size", "capacity", "enqueued_total", "dequeued_total", "queue_full_total",
             "dequeue_timeout_total")


def metrics(ctx: Ctx, content_type: str | None, body: bytes) -> Reply:
    """Placeholder exposition of the shared-memory counters (the metrics module replaces it)."""
    lines = []
    stats = []
    for name in ctx.broker.queues():
        try:
            stats.append(ctx.queue(name).stats())
        except QueueNotFound:
            continue
    for key in _COUNTERS:
        metric = "zoldyq_queue_" + key if key in ("size", "capacity") else "zoldyq_" + key
        kind = "gauge" if key in ("size", "capacity") else "counter"
        lines.append(f"# TYPE {metric} {kind}")
        lines += [f'{metric}{{queue="{s["name"]}"}} {s[key]}' for s in stats]
    return Reply(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")


def snapshot(ctx: Ctx, content_type: str | None, body: bytes) -> Reply:
    raise RequestError(501, "not_implemented", "snapshots are not available in this build")
