"""Operational routes (``/health``, ``/metrics``, ``/admin/snapshot``) and the request hook.

Handlers have the signature of ``core``'s: ``(ctx, call) -> Reply``;
``routes.ROUTES`` mounts them. A ``counter`` counts each request of both app
shells, by route name (``"enqueue"``, ... or ``"unmatched"``), method and
status; it counts into the namespace's shared counters, so whichever
worker answers a scrape reports every worker's requests.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import orjson

from zoldyq.api import Counters
from zoldyq.errors import RequestError, ZoldyQError
from zoldyq.http.core import Call, Ctx, Reply
from zoldyq.ops import health as health_mod
from zoldyq.ops import metrics as metrics_mod
from zoldyq.ops import snapshot as snapshot_mod


class _Ops:
    """Per-app state: the shared counters and the metrics registry, made once."""

    def __init__(self, ctx: Ctx) -> None:
        self.registry = metrics_mod.registry(ctx.broker)
        try:
            self.counters: Counters | None = ctx.broker.counters()
        except (ZoldyQError, OSError) as ex:  # no room in /dev/shm: serve without the figure
            log.warning("request metrics unavailable: %s", ex)
            self.counters = None


log = logging.getLogger("zoldyq.http")
_state: weakref.WeakKeyDictionary[Ctx, _Ops] = weakref.WeakKeyDictionary()
_state_lock = threading.Lock()


def _ops(ctx: Ctx) -> _Ops:
    ops = _state.get(ctx)
    if ops is None:
        with _state_lock:
            ops = _state.get(ctx)
            if ops is None:
                ops = _state[ctx] = _Ops(ctx)
    return ops


def counter(ctx: Ctx, route: str) -> Callable[[str, int], None]:
    """``count(method, status)``: one request to ``route`` into the shared
    ``zoldyq_http_requests_total``; each shell makes one per route, so a request
    costs a dict look-up and an atomic add (the counter key strings are made once)."""
    keys: dict[tuple[str, int], str] = {}
    made: _Ops | None = None  # the app's _Ops once a request made it: no look-up after

    def count(method: str, status: int) -> None:
        nonlocal made
        if made is None:
            made = _ops(ctx)
        counters = made.counters
        if counters is None:
            return
        key = keys.get((method, status))
        if key is None:
            key = metrics_mod.request_key(method, route, status)
            if len(keys) < 256:  # bounded: methods and statuses take few values
                keys[method, status] = key
        counters.add(key)

    return count


def info(ctx: Ctx, call: Call) -> Reply:
    """What a client needs to know of this server: version, where its WebSocket streams
    are (same host, ``websocket_port``; null without the sidecar) and its limits."""
    s = ctx.settings
    d = ctx.broker.defaults
    try:
        version = importlib.metadata.version("zoldyq")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return Reply(200, orjson.dumps({
        "version": version,
        "namespace": ctx.broker.namespace,
        "websocket_port": s.ws_port if s.ws else None,
        "websocket_tls": bool(s.tls_cert),
        "max_timeout": ctx.max_timeout,
        "max_batch": ctx.max_batch,
        "max_queues": ctx.broker.max_queues,
        "defaults": {"max_messages": d.max_messages, "max_bytes": d.max_bytes,
                     "max_message_bytes": d.max_message_bytes},
    }))


def health(ctx: Ctx, call: Call) -> Reply:
    """The roadmap's format; 503 with a reason when the namespace is unusable."""
    status, doc = health_mod.check(ctx.broker)
    return Reply(status, orjson.dumps(doc))


def metrics(ctx: Ctx, call: Call) -> Reply:
    """Prometheus text format, read from shared memory now."""
    reg = _ops(ctx).registry
    return Reply(200, metrics_mod.exposition(reg), metrics_mod.CONTENT_TYPE)


def snapshot(ctx: Ctx, call: Call) -> Reply:
    """``{"action": "save"|"load", "name": ..., "queue": ...}`` in the snapshot directory.

    ``name`` defaults to the namespace (the file ``--snapshot-on-exit`` writes);
    ``queue`` limits the action to one queue.
    """
    try:
        doc: Any = orjson.loads(call.body) if call.body.strip() else {}
    except orjson.JSONDecodeError as ex:
        raise RequestError(400, "bad_json", f"request body is not valid JSON: {ex}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "bad_snapshot_request", "request body must be a JSON object")
    action = doc.get("action", "save")
    name = doc.get("name", ctx.settings.namespace)
    queue = doc.get("queue")
    unknown = set(doc) - {"action", "name", "queue"}
    if action not in ("save", "load") or unknown or not isinstance(name, str) \
            or not (queue is None or isinstance(queue, str)):
        raise RequestError(
            400, "bad_snapshot_request",
            'body fields: "action" ("save" or "load"), "name" (string), "queue" (string, '
            "optional)",
        )  # fmt: skip
    directory = ctx.settings.snapshot_dir
    if action == "save":
        summary = snapshot_mod.save(ctx.broker, directory, name, queue)
        summary.pop("file")  # the server's path is not the client's business
    else:
        summary = snapshot_mod.load(ctx.broker, directory, name, queue)
    return Reply(200, orjson.dumps({"action": action, **summary}))
